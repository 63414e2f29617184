"""Real TVM compilation and measurement of tiny candidates on the local CPU (LLVM)."""

import numpy as np
import pytest
import torch

from tvmnas.latency_db import LatencyDB
from tvmnas.measure.compile import compile_fused, fuse, import_torch
from tvmnas.measure.profile import ProfileSettings, measure_candidate, profile_candidates, tuning_dir
from tvmnas.measure.runner import MeasureResult, TimingSettings
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.model.blocks import candidate_module
from tvmnas.targets import load_target

FAST = TimingSettings(warmup_runs=1, warmup_ms=0, rounds=2, repeat=3, min_repeat_ms=1)


@pytest.fixture(scope="module")
def cpu():
    return load_target("x86-cpu")


def test_compiled_candidate_matches_pytorch(tiny_space, cpu):
    import tvm
    from tvm import relax

    cand = tiny_space.layers()[1].candidate("mb_k3_e2")  # stride 1, residual
    module = candidate_module(cand).eval()
    with torch.no_grad():
        for m in module.modules():  # non-trivial BatchNorm statistics, so folding is exercised
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(cand.input_shape)
    executable = compile_fused(fuse(import_torch(module, cand.input_shape), cpu.tvm()), cpu.tvm())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_profile_measures_then_resumes(tiny_space, cpu, tmp_path):
    db_path = tmp_path / "lat.db"
    runner, settings = LocalRunner(), ProfileSettings(tune_trials=0, timing=FAST)
    cands = tiny_space.candidates()
    with LatencyDB(db_path) as db:
        first = profile_candidates(cands, cpu, runner, db, settings, tuning_dir(db_path, cpu, "local"))
    assert [o.cached for o in first] == [False] * len(cands)
    assert all(o.row.ok and o.row.median_ms > 0 and o.row.level == "default" for o in first), \
        [o.row.error for o in first]
    assert all(o.row.compile_s > 0 for o in first)
    with LatencyDB(db_path) as db:  # a rerun (new process, same file) measures nothing
        again = profile_candidates(cands, cpu, runner, db, settings, tuning_dir(db_path, cpu, "local"))
        assert all(o.cached for o in again)
        forced = profile_candidates(cands[:1], cpu, runner, db, ProfileSettings(force=True, timing=FAST),
                                    tuning_dir(db_path, cpu, "local"))
        assert not forced[0].cached


class FlakyRunner(LocalRunner):
    """Fails the first candidate it is asked to time, then works."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def measure(self, lib_path, device_kind, input_shape, timing, threads=0):
        self.calls += 1
        if self.calls == 1:
            return MeasureResult.failed("RPCError: board went away")
        return super().measure(lib_path, device_kind, input_shape, timing, threads)


def test_failure_is_recorded_and_others_go_on_then_retried(tiny_space, cpu, tmp_path):
    db_path = tmp_path / "lat.db"
    cands = tiny_space.candidates()[:3]
    settings = ProfileSettings(timing=FAST)
    with LatencyDB(db_path) as db:
        out = profile_candidates(cands, cpu, FlakyRunner(), db, settings, tuning_dir(db_path, cpu, "local"))
        assert out[0].row.error == "RPCError: board went away" and out[0].row.median_ms is None
        assert out[1].row.ok and out[2].row.ok
        rerun = profile_candidates(cands, cpu, LocalRunner(), db, settings, tuning_dir(db_path, cpu, "local"))
    assert [o.cached for o in rerun] == [False, True, True]
    assert rerun[0].row.ok


def test_tuned_level_tunes_each_kernel_once(tiny_space, cpu, tmp_path):
    """Meta-schedule tuning through the per-target database: a second candidate sharing kernels reuses them."""
    tune_dir = tmp_path / "tuning"
    settings = ProfileSettings(tune_trials=2, timing=FAST)
    runner = LocalRunner()
    layer = tiny_space.layers()[0]
    first = measure_candidate(layer.candidate("mb_k3_e2"), cpu, runner, settings, tune_dir)
    assert first.ok, first.error
    assert first.level == "tuned-2" and first.tasks_tuned >= 2 and first.tune_s > 0
    assert (tune_dir / "database_tuning_record.json").stat().st_size > 0
    again = measure_candidate(layer.candidate("mb_k3_e2"), cpu, runner, settings, tune_dir)
    assert again.ok and again.tasks_tuned == 0


class ScriptedRunner(LocalRunner):
    """Times nothing: answers each library's n-th measurement from a script."""

    def __init__(self, script):
        super().__init__()
        self.script, self.calls = script, {}

    def measure(self, lib_path, device_kind, input_shape, timing, threads=0):
        n = self.calls.get(lib_path, 0)
        self.calls[lib_path] = n + 1
        return MeasureResult(self.script[n], 0.01, 10)


def test_profile_keeps_the_fastest_pass(tiny_space, cpu, tmp_path):
    db_path = tmp_path / "lat.db"
    cands = tiny_space.candidates()[:2]
    runner = ScriptedRunner([2.0, 1.5, 1.8])
    with LatencyDB(db_path) as db:
        out = profile_candidates(cands, cpu, runner, db, ProfileSettings(passes=3, timing=FAST),
                                 tuning_dir(db_path, cpu, "local"))
        assert [o.row.median_ms for o in out] == [1.5, 1.5] and out[0].row.repeats == 30
        stored = db.get(out[0].row.target_fp, out[0].row.tvm_version, cands[0].key, cands[0].shape_text, "default")
    assert stored.median_ms == 1.5
    assert all(n == 3 for n in runner.calls.values())
