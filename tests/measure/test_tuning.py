"""Trials: a batch builds in threads; a build that hangs ends the tuning process with one line instead of hanging
it for ever; `auto` times cold the kernels whose weights the L2 cache cannot hold."""

import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import tvmnas.measure.tuning as tuning
from tvmnas.measure.tuning import BuildWatchdog, times_cold
from tvmnas.measure.tuning_records import build_timeouts
from tvmnas.targets import load_target


def test_watchdog_fires_on_a_build_past_its_time_and_only_then():
    fired = []
    watchdog = BuildWatchdog(0.3, lambda seconds, what: fired.append((seconds, what)))
    with watchdog.watching("quick"):
        time.sleep(0.05)
    time.sleep(0.5)  # the quick build ended in time: nothing fires after it
    assert fired == []
    with watchdog.watching("slow"):
        time.sleep(0.8)
    assert len(fired) == 1 and fired[0][1] == "slow" and fired[0][0] >= 0.3


def test_watchdog_watches_builds_running_at_once():
    fired = []
    watchdog = BuildWatchdog(0.3, lambda seconds, what: fired.append(what))

    def build(name, seconds):
        with watchdog.watching(name):
            time.sleep(seconds)

    quick = threading.Thread(target=build, args=("quick", 0.05))
    slow = threading.Thread(target=build, args=("slow", 0.8))
    slow.start(), quick.start()
    quick.join(), slow.join()
    assert fired == ["slow"]


def test_a_closed_watchdog_ends_its_thread():
    watchdog = BuildWatchdog(60, lambda seconds, what: None)
    with watchdog.watching("build"):
        pass
    thread = watchdog._thread
    assert thread.is_alive()
    watchdog.close()
    thread.join(timeout=5)
    assert not thread.is_alive()  # one session's watchdog does not outlive it


def test_a_batch_builds_in_threads_and_keeps_its_order(monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()

    class Built:
        entry_name = "main"

        def __init__(self, name):
            self.name, self.code_generated = name, False

        def get_function(self, name):
            self.code_generated = True

    def build(mod, target):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        if mod == "bad":
            raise RuntimeError("no schedule")
        return Built(mod)

    monkeypatch.setattr(tuning, "build_trial", build)
    builder = tuning.make_builder(load_target("x86-cpu"), in_memory=True, workers=2)
    results = builder._inst.build([SimpleNamespace(mod=name, target=None) for name in ("a", "bad", "c", "d")])
    assert peak[0] == 2
    assert results[1].artifact_path is None and "no schedule" in results[1].error_msg
    built = [tuning._IN_MEMORY.pop(results[i].artifact_path) for i in (0, 2, 3)]
    assert [b.name for b in built] == ["a", "c", "d"] and all(b.code_generated for b in built)


HANGING_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    import tvmnas.measure.tuning as tuning
    from tvmnas.targets import load_target

    tuning.build_trial = lambda mod, target: time.sleep(60)  # a build stuck in code generation
    work_dir = Path(sys.argv[1])
    builder = tuning.make_builder(load_target("x86-cpu"), in_memory=True,
                                  watchdog=tuning.BuildWatchdog(0.5, tuning.end_on_build_timeout(work_dir, 7)))
    builder.build([BuilderInput(tvm.IRModule({}), tvm.target.Target("llvm"))])
    print("the build returned")
""")


def test_a_hanging_trial_build_ends_the_process_with_one_line_and_is_logged(tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", HANGING_BUILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert time.perf_counter() - start < 50  # not the 60 s the build would take
    lines = [line for line in done.stderr.splitlines() if line.startswith("tvmnas:")]
    assert len(lines) == 1 and "a tuning trial's build ran past" in lines[0], done.stderr
    assert "the build returned" not in done.stdout
    assert build_timeouts(tmp_path) == 1  # the next session there samples with another seed
    assert (tmp_path / "hung_trial_0.py").exists()


def test_auto_times_cold_the_kernels_whose_weights_exceed_the_cache():
    def arg(*shape, dtype="float32"):
        return SimpleNamespace(shape=shape, dtype=dtype)

    l2 = 2 << 20
    big_weights = [arg(1, 512, 4, 4), arg(512, 512, 3, 3), arg(512), arg(1, 512, 4, 4)]  # 9.4 MB of weights
    big_output = [arg(1, 16, 112, 112), arg(96, 16, 1, 1), arg(1, 96, 112, 112)]  # 4.8 MB output, 6 KB weights
    assert times_cold(big_weights, l2)
    assert not times_cold(big_output, l2)  # the output is not what a network's run loads from afar
    assert not times_cold(big_weights, 64 << 20)
    assert times_cold([arg(1, 8), arg(2048, 1024, dtype="float16"), arg(1, 8)], (4 << 20) - 1)


def test_the_evolutionary_search_is_shallow_at_the_profiles_few_trials_and_as_meta_schedules_above():
    shallow, deep = tuning.TuneSettings(8), tuning.TuneSettings(64)
    assert (shallow.population_size, shallow.genetic_num_iters) == (tuning.DEFAULT_POPULATION, 2)
    assert (deep.population_size, deep.genetic_num_iters) == (128, 4)
    assert tuning.TuneSettings(1000).population_size == 512
    chosen = tuning.TuneSettings(8, population=100, genetic_iters=5)
    assert (chosen.population_size, chosen.genetic_num_iters) == (100, 5)


def test_a_kernel_whose_space_is_smaller_than_its_trials_is_tuned_once_over_it_and_no_longer(tmp_path):
    """A 1x1 convolution on a 3x3 map with 2 output channel blocks of 8 (AVX2) or 1 of 16 (AVX-512): the row's full
    width (3 pixels) of 1 or 2 blocks, 2 or 1 schedules. Asked for 8 trials, its search gets that many and one round;
    meta-schedule alone would have gone on for rounds that find nothing new."""
    import torch

    from tvmnas.measure.build import build_module
    from tvmnas.measure.compile import import_torch
    from tvmnas.measure.conv_schedule import tile_choices, vector_registers
    from tvmnas.measure.layout import resolve_layout
    from tvmnas.measure.runner.local import LocalRunner

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU()).eval()
    events = []
    built = build_module(import_torch(net, (1, 16, 3, 3)), load_target("x86-cpu"), 8, tmp_path / "tuning",
                         LocalRunner(), tmp_path / "net.so", interior=True,
                         progress=lambda phase, done, total, detail: events.append((phase, done, total)))
    tune = [(done, total) for phase, done, total in events if phase == "tune"]
    assert built.tasks_tuned == 1
    spec = load_target("x86-cpu")
    blocks = 16 // (16 if resolve_layout(spec.layout, spec.tvm()) == "nchw16c" else 8)
    space = sum(len(widths) for widths in tile_choices(3, blocks, vector_registers(spec.tvm())).values())
    assert space < 8
    assert tune == [(space, space)]  # one round: the space measured whole
