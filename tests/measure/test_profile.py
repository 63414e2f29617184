"""Real TVM compilation and measurement of tiny candidates on the local CPU (LLVM)."""

import numpy as np
import pytest
import torch

from tests.helpers import FAST
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.compile import compile_fused, fuse, import_torch
from tvmnas.measure.method import METHOD, latency_scope
from tvmnas.measure.protocol import Estimate, Interleaved
from tvmnas.measure.reference import read_anchor
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.model.blocks import candidate_module, fold_batchnorm
from tvmnas.profile import ProfileSettings, measure_candidate, profile_candidates
from tvmnas.targets import load_target


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
    executable = compile_fused(fuse(import_torch(fold_batchnorm(module), cand.input_shape), cpu.tvm()), cpu.tvm())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_profile_measures_then_resumes(tiny_space, cpu, tmp_path):
    db_path = tmp_path / "lat.db"
    runner, settings = LocalRunner(), ProfileSettings(tune_trials=0, protocol=FAST)
    cands = tiny_space.candidates()
    with LatencyDB(db_path) as db:
        first = profile_candidates(cands, cpu, runner, db, settings, tuning_dir(db_path, cpu, "local")).outcomes
    assert [o.cached for o in first] == [False] * len(cands)
    assert all(o.row.ok and o.row.latency_ms > 0 and o.row.level == "default" and o.row.method == METHOD
               and o.row.windows >= FAST.windows // 2 for o in first), [o.row.error for o in first]
    assert all(o.row.compile_s > 0 for o in first)
    with LatencyDB(db_path) as db:  # a rerun (new process, same file) measures nothing
        assert read_anchor(db, latency_scope(cpu, "local", "default")) > 0
        again = profile_candidates(cands, cpu, runner, db, settings, tuning_dir(db_path, cpu, "local")).outcomes
        assert all(o.cached for o in again)
        forced = profile_candidates(cands[:1], cpu, runner, db, ProfileSettings(force=True, protocol=FAST),
                                    tuning_dir(db_path, cpu, "local")).outcomes
        assert not forced[0].cached


class ScriptedRunner(LocalRunner):
    """Times nothing: answers every batch with scripted estimates, and keeps the batches it was given."""

    def __init__(self, speed=1.0, fail_first=False, flag_second=False):
        super().__init__()
        self.speed, self.fail_first, self.flag_second, self.batches = speed, fail_first, flag_second, []

    def measure(self, batch, protocol, on_round=None):
        self.batches.append(batch)
        estimates = [Estimate(i + 1.0, (i + 1.0) * self.speed, 0.02, 40, 3,
                              "noisy" if self.flag_second and i == 1 else None) for i in range(len(batch.libs))]
        if self.fail_first and len(self.batches) == 1:
            estimates[0] = Estimate.failed("RPCError: board went away")
        return Interleaved(estimates, Estimate(0.05, 0.05 * self.speed, 0.0, 200, 0), self.speed, 1.0, 40)


def test_rows_carry_the_estimate_and_later_runs_use_the_anchor(tiny_space, cpu, tmp_path):
    db_path = tmp_path / "lat.db"
    cands = tiny_space.candidates()[:3]
    first = ScriptedRunner(fail_first=True)
    with LatencyDB(db_path) as db:
        out = profile_candidates(cands, cpu, first, db, ProfileSettings(), tuning_dir(db_path, cpu, "local")).outcomes
        assert out[0].row.error == "RPCError: board went away" and out[0].row.latency_ms is None  # fails alone
        assert [(o.row.latency_ms, o.row.dispersion, o.row.windows, o.row.dropped_windows) for o in out[1:]] == \
            [(2.0, 0.02, 40, 3), (3.0, 0.02, 40, 3)]
        assert first.batches[0].anchor_ms is None  # the first profile of the target sets the anchor
        assert read_anchor(db, latency_scope(cpu, "local", "default")) == 0.05
        second = ScriptedRunner(speed=1.5)
        rerun = profile_candidates(cands, cpu, second, db, ProfileSettings(), tuning_dir(db_path, cpu, "local"))
    assert [o.cached for o in rerun.outcomes] == [False, True, True]  # only the failed one again
    assert second.batches[0].anchor_ms == 0.05 and len(second.batches[0].libs) == 1
    assert rerun.outcomes[0].row.speed == 1.5 and rerun.outcomes[0].row.raw_ms == 1.5


def test_flagged_rows_are_measured_again_when_asked(tiny_space, cpu, tmp_path):
    from tvmnas.search.latency import table_from_db

    db_path = tmp_path / "lat.db"
    cands = tiny_space.candidates()
    with LatencyDB(db_path) as db:
        profile_candidates(cands, cpu, ScriptedRunner(flag_second=True), db, ProfileSettings(),
                           tuning_dir(db_path, cpu, "local"))
        table = table_from_db(tiny_space, db, latency_scope(cpu, "local", "default"))
        assert table.flagged == (f"{cands[1].key} {cands[1].shape_text}",)  # the search can say so
        kept = profile_candidates(cands, cpu, ScriptedRunner(), db, ProfileSettings(),
                                  tuning_dir(db_path, cpu, "local"))
        assert all(o.cached for o in kept.outcomes)  # a flagged row is used as it is, unless asked
        again = ScriptedRunner()
        redo = profile_candidates(cands, cpu, again, db, ProfileSettings(remeasure_flagged=True),
                                  tuning_dir(db_path, cpu, "local"))
        assert [o.cached for o in redo.outcomes] == [i != 1 for i in range(len(cands))]
        assert redo.outcomes[1].row.flag is None and len(again.batches[0].libs) == 1
        assert table_from_db(tiny_space, db, latency_scope(cpu, "local", "default")).flagged == ()


def test_the_first_profile_of_a_space_anchors_its_reference_network(tiny_space, cpu, tmp_path):
    from tvmnas.reference_network import network_anchor_row, read_network_anchor

    db_path, scope = tmp_path / "lat.db", latency_scope(cpu, "local", "default")
    cands = tiny_space.candidates()
    with LatencyDB(db_path) as db:
        first = ScriptedRunner()
        profile_candidates(cands, cpu, first, db, ProfileSettings(), tuning_dir(db_path, cpu, "local"),
                           space=tiny_space)
        # timed last in the candidates' run: the scripted runner answers module i with i + 1 ms
        assert len(first.batches[0].libs) == len(cands) + 1
        assert read_network_anchor(db, scope, tiny_space) == len(cands) + 1.0
        rerun = ScriptedRunner()
        profile_candidates(cands, cpu, rerun, db, ProfileSettings(), tuning_dir(db_path, cpu, "local"),
                           space=tiny_space)
        assert rerun.batches == []  # nothing to measure: the anchor stays
        # rows measured again: the anchor is timed again beside them (it is the ratio to their rows)
        again = ScriptedRunner(speed=2.0)
        profile_candidates(cands, cpu, again, db, ProfileSettings(force=True), tuning_dir(db_path, cpu, "local"),
                           space=tiny_space)
        assert len(again.batches[0].libs) == len(cands) + 1
        assert network_anchor_row(db, scope, tiny_space).raw_ms == 2.0 * (len(cands) + 1)
        assert read_network_anchor(db, scope.at_level("tuned-8"), tiny_space) is None


def test_a_later_profile_anchors_the_reference_network_at_its_blocks_rows(tiny_space, cpu, tmp_path):
    """A database profiled without the reference network: its blocks are timed again beside it (their rows kept),
    and its anchor is scaled by how their rows compare with this run."""
    from tvmnas.reference_network import read_network_anchor

    db_path, scope = tmp_path / "lat.db", latency_scope(cpu, "local", "default")
    cands = tiny_space.candidates()
    with LatencyDB(db_path) as db:
        profile_candidates(cands, cpu, ScriptedRunner(), db, ProfileSettings(), tuning_dir(db_path, cpu, "local"))
        rows = {c.ident: db.get(scope, c.key, c.shape_text).latency_ms for c in cands}
        later = ScriptedRunner(speed=3.0)
        report = profile_candidates(cands, cpu, later, db, ProfileSettings(), tuning_dir(db_path, cpu, "local"),
                                    space=tiny_space)
        assert all(o.cached for o in report.outcomes)
        assert {c.ident: db.get(scope, c.key, c.shape_text).latency_ms for c in cands} == rows
        libs = [p.name for p in later.batches[0].libs]
        now = {c.ident: libs.index(f"{c.ident}.so") + 1.0 for c in cands
               if f"{c.ident}.so" in libs}
        blocks = [c.ident for c in tiny_space.blocks(tiny_space.mobilenetv2_ops)]
        assert set(now) == set(blocks) and libs[-1] == "reference_network.so"
        want = len(libs) * sum(rows[b] for b in blocks) / sum(now[b] for b in blocks)
        assert read_network_anchor(db, scope, tiny_space) == pytest.approx(want)


def test_tuned_level_tunes_each_kernel_once(tiny_space, cpu, tmp_path):
    """Meta-schedule tuning through the per-target database: a second candidate sharing kernels reuses them."""
    tune_dir = tmp_path / "tuning"
    settings = ProfileSettings(tune_trials=2, protocol=FAST)
    runner = LocalRunner()
    layer = tiny_space.layers()[0]
    first = measure_candidate(layer.candidate("mb_k3_e2"), cpu, runner, settings, tune_dir)
    assert first.ok, first.error
    assert first.level == "tuned-2" and first.tasks_tuned >= 2 and first.tune_s > 0
    assert (tune_dir / "database_tuning_record.json").stat().st_size > 0
    again = measure_candidate(layer.candidate("mb_k3_e2"), cpu, runner, settings, tune_dir)
    assert again.ok and again.tasks_tuned == 0
