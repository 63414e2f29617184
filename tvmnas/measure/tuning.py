"""Meta-schedule tuning of the fused kernels of a module, against one database per target.

A kernel (a workload, keyed by the structural hash of its fused TIR function) is tuned once: a task whose
workload already holds `trials` records in the database is skipped, so candidates, spaces and runs that share a
kernel share its tuning. Builds run in this process (`InProcessBuilder`, a batch's trials in one thread per core):
meta-schedule's LocalBuilder starts fresh worker processes for every batch, and each re-imports every backend's
tensor intrinsics (about 28 s here).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmnas.failpoints import stop_point
from tvmnas.measure.conv_schedule import design_space, design_space_size, vector_registers
from tvmnas.measure.compile import export_library
from tvmnas.targets import TargetSpec
from tvmnas.measure.tuning_records import (build_timeouts, canonical_kernel, kernel_hash, record_budgets,
                                           record_build_timeout, tuned_budgets)
from tvmnas.tvm_compat import build_trial, load_cost_model, load_tensor_intrinsics, save_cost_model, trial_result

# Evolutionary search: the schedules sampled, evolved and ranked by the cost model before each batch of trials. The
# cost model is kept across sessions (see `tune_fused`), so ranking a population pays off even at a few trials per
# kernel; meta-schedule's defaults (512 schedules, 4 genetic iterations) cost seconds per kernel here. At the
# profile's 8 trials per kernel, 32 schedules and 2 iterations find kernels as fast as 64 and 4 for 2.6x less tuning
# time (bench/results/tuning_search.md); deeper tuning keeps meta-schedule's 4 iterations.
DEFAULT_POPULATION = 32
SHALLOW_TRIALS = 8  # up to this many trials per kernel, the evolutionary search runs SHALLOW_GENETIC_ITERS
SHALLOW_GENETIC_ITERS = 2
GENETIC_ITERS = 4

# One trial's build (TIR lowering and LLVM code generation) takes 0.1-10 s here. Nothing in TVM interrupts one, and a
# pathological schedule can build for hours (seen: an NHWC trial under the generic rules, >14 min in LLVM's code
# generation), which would hang a profile or an export for ever; past this the process ends instead.
BUILD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TuneSettings:
    trials_per_task: int
    population: int | None = None  # None = max(DEFAULT_POPULATION, 2 x trials), at most 512
    genetic_iters: int | None = None  # None = SHALLOW_GENETIC_ITERS up to SHALLOW_TRIALS trials, else GENETIC_ITERS
    seed: int = 0
    build_timeout_s: float = BUILD_TIMEOUT_S
    space_sized: bool = True  # a kernel gets no more trials than its design space holds (see trials_worth)

    @property
    def population_size(self) -> int:
        return self.population or min(512, max(DEFAULT_POPULATION, 2 * self.trials_per_task))

    @property
    def genetic_num_iters(self) -> int:
        if self.genetic_iters is not None:
            return self.genetic_iters
        return SHALLOW_GENETIC_ITERS if self.trials_per_task <= SHALLOW_TRIALS else GENETIC_ITERS


@dataclass(frozen=True)
class TuneReport:
    tasks_total: int
    tasks_tuned: int
    seconds: float


def intrinsic_modules(spec: TargetSpec) -> tuple[str, ...]:
    """The tensor-intrinsic modules of `tvm.s_tir.tensor_intrin` that the target's kernels can use (loaded with
    `tvm_compat.load_tensor_intrinsics`)."""
    if spec.device == "cuda":
        return ("cuda",)
    triple = str(spec.tvm_target.get("mtriple", ""))
    return ("arm_cpu",) if triple.startswith(("aarch64", "arm")) else ("x86",)


def quiet_meta_schedule() -> None:
    """Meta-schedule's per-task tables only when the user asked for info logs (`tvmnas -v`)."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


_IN_MEMORY: dict[str, object] = {}  # built trial modules handed from the in-process builder to the runner
_MEMORY_PREFIX = "tvmnas-memory:"
_TOKENS = itertools.count()


class BuildWatchdog:
    """Calls `on_timeout(seconds, module)` from its own thread when a build inside `watching()` runs past
    `timeout_s` (builds may run in several threads at once: each is watched). TVM's calls release the GIL, so the
    thread runs while a build is stuck in code generation."""

    def __init__(self, timeout_s: float, on_timeout) -> None:
        self._timeout_s, self._on_timeout = timeout_s, on_timeout
        self._cond = threading.Condition()
        self._running: dict[int, tuple[float, object]] = {}  # build -> (its start, its module)
        self._next = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, what):
        """Around one build; `what` (the trial's module) goes to `on_timeout` if the build hangs."""
        with self._cond:
            key, self._next = self._next, self._next + 1
            self._running[key] = (time.monotonic(), what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="tvmnas-build-watchdog")
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                del self._running[key]
                self._cond.notify()

    def close(self) -> None:
        """End the watching thread (the tuning session is over)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._closed:
                    return
                if not self._running:
                    self._cond.wait()
                    continue
                started, what = min(self._running.values(), key=lambda run: run[0])
                left = started + self._timeout_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            seconds = time.monotonic() - started
        self._on_timeout(seconds, what)


def end_on_build_timeout(work_dir: Path, seed: int):
    """The production `on_timeout`: log the timeout in the tuning folder (the next session there samples its
    trials with another seed), keep the hung trial's TIR for a bug report, say so in one line and end the process
    (exit 1). The records committed before stay: a rerun goes on from them."""
    def on_timeout(seconds: float, mod) -> None:
        script = Path(work_dir) / f"hung_trial_{build_timeouts(work_dir)}.py"
        try:
            script.write_text(mod.script())
        except Exception:  # noqa: BLE001 - the message matters more than the script
            script = None
        record_build_timeout(work_dir, seed, seconds)
        kept = f"; its schedule is in {script}" if script else ""
        sys.stderr.write(f"tvmnas: error: a tuning trial's build ran past {seconds:.0f} s (TVM cannot interrupt "
                         f"code generation){kept}; rerun to go on: the next session samples other trials\n")
        sys.stderr.flush()
        os._exit(1)

    return on_timeout


def build_workers() -> int:
    """Threads that build one batch of trials: one per core (a build's code generation is single-threaded)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def make_builder(spec: TargetSpec, in_memory: bool = False, watchdog: BuildWatchdog | None = None,
                 workers: int | None = None):
    """A meta-schedule builder that builds in this process, a batch's trials in `workers` threads at once (default
    `build_workers()`). It exports loadable shared libraries for a runner elsewhere (an RPC server), or,
    `in_memory`, keeps the built module for `make_in_process_runner` (no export, no linking, no loading: a trial
    costs its compile and its timing only; on a CPU its machine code is generated here too, in the build's thread,
    rather than at its first call in the runner). `watchdog` watches every build."""
    from concurrent.futures import ThreadPoolExecutor

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    threads = workers or build_workers()

    def build_one(item):
        """(the built module or the exported library's path, None) or (None, why it failed)."""
        try:
            with watchdog.watching(item.mod) if watchdog else nullcontext():
                rt_mod = build_trial(item.mod, item.target)
                if not in_memory:
                    path = Path(tempfile.mkdtemp(prefix="tvmnas-ms-")) / "kernel.so"
                    return str(export_library(rt_mod, path, spec)), None
                if spec.device != "cuda":
                    rt_mod.get_function(rt_mod.entry_name)  # the LLVM JIT's code generation
                return rt_mod, None
        except Exception as err:  # a failed candidate schedule is a result, not a crash
            return None, f"{type(err).__name__}: {err}"

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            items = list(build_inputs)
            if threads > 1 and len(items) > 1:
                with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="tvmnas-build") as pool:
                    built = list(pool.map(build_one, items))
            else:
                built = [build_one(item) for item in items]
            results = []
            for artifact, error in built:
                if in_memory and artifact is not None:
                    token = f"{_MEMORY_PREFIX}{next(_TOKENS)}"
                    _IN_MEMORY[token] = artifact
                    artifact = token
                results.append(BuilderResult(artifact, error))
            return results

    return InProcessBuilder()


TRIAL_CACHE_MODES = ("hot", "cold", "auto")


def l2_cache_bytes() -> int:
    """This machine's L2 cache of one core (Linux sysfs; 1 MiB where unknown)."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip().upper()
        return int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]] if text[-1] in "KM" else int(text)
    except (OSError, ValueError, KeyError):
        return 1 << 20


def times_cold(args_info, cache_bytes: int) -> bool:
    """`auto`: whether a kernel's trials are timed cold: when its weights (the arguments between the first, the
    activation the kernel before it just wrote, and the last, its output) exceed the L2 cache, so that a network's
    run loads them from farther away than back-to-back calls do (cold timing flushes the output too)."""
    size = sum(int(np.prod([int(d) for d in info.shape])) * np.dtype(info.dtype).itemsize for info in args_info[1:-1])
    return size > cache_bytes


def make_in_process_runner(device_kind: str, threads: int, cache: str = "hot"):
    """A meta-schedule runner that times the in-memory builder's modules in this process, on this machine's
    device with `threads` CPU threads (meta-schedule's LocalRunner runs each trial in a worker process: a process
    start, a sanity check and a library load per batch). `cache` (CPU): `hot` times back-to-back calls (the
    kernel's data in cache from the call before); `cold` times one call at a time after flushing the cache of
    every argument but the first, as a kernel runs inside a network after another kernel's data went through the
    caches; `auto` times cold the kernels whose weights exceed the L2 cache (see `times_cold`)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner

    from tvmnas.measure.runner.base import set_threads

    if cache not in TRIAL_CACHE_MODES:
        raise ValueError(f"cache must be one of {TRIAL_CACHE_MODES}, not {cache!r}")
    rng = np.random.default_rng(0)
    l2_bytes = l2_cache_bytes()

    @derived_object
    class InProcessRunner(PyRunner):
        def run(self, runner_inputs):
            set_threads(threads)
            device = tvm.cuda(0) if device_kind == "cuda" else tvm.cpu(0)
            futures = []
            for item in runner_inputs:
                rt_mod = _IN_MEMORY.pop(item.artifact_path, None)
                try:
                    if rt_mod is None:
                        raise RuntimeError(f"no built module for {item.artifact_path}")
                    args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in info.shape]).astype(info.dtype),
                                               device=device) for info in item.args_info]
                    cold = device_kind != "cuda" and (cache == "cold" or
                                                      (cache == "auto" and times_cold(item.args_info, l2_bytes)))
                    if cold:
                        evaluator = rt_mod.time_evaluator(rt_mod.entry_name, device, number=1, repeat=10,
                                                          f_preproc="cache_flush_cpu_non_first_arg")
                    else:
                        evaluator = rt_mod.time_evaluator(rt_mod.entry_name, device, number=3, repeat=1,
                                                          min_repeat_ms=10)
                    futures.append(trial_result([float(t) for t in evaluator(*args).results]))
                except Exception as err:  # noqa: BLE001 - a trial that fails is a result
                    futures.append(trial_result(error=f"{type(err).__name__}: {err}"))
            return futures

    return InProcessRunner()


def untuned_tasks(fused_mod, target, database, trials: int, work_dir: Path) -> tuple[list, int]:
    """The extracted tasks of a fused module that have neither `trials` valid records in the database nor been
    tuned with a budget of `trials` before."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(fused_mod, target)
    budgets = tuned_budgets(work_dir)
    missing = []
    for task in tasks:
        kernel = task.dispatched[0]
        if not database.has_workload(kernel):
            missing.append(task)
        elif len(database.get_top_k(database.commit_workload(kernel), trials)) < trials \
                and budgets.get(kernel_hash(database, kernel), 0) < trials:
            missing.append(task)
    return missing, len(tasks)


def threads_of(target) -> int:
    """The threads a TVM target's modules run on (its num-cores; 1 where it names none)."""
    return int(target.attrs.get("num-cores", 1))


def trials_worth(kernel, trials: int, threads: int = 1, registers: int = 16) -> int:
    """The trials worth giving a kernel: `trials`, or as many as its design space (for `threads` threads and
    `registers` vector registers) holds where that is fewer (see `design_space_size`). Records the database
    already holds are not subtracted: they may come from another space (the generic rules), and a task asked for
    more than is left only ends later."""
    size = design_space_size(kernel, threads, registers)
    return trials if size is None else min(trials, size)


def progress_callback(progress, total_trials: int, kernels: list[int]):
    """A meta-schedule measure callback, after the records are committed: reports the trials measured so far as
    progress ("tune" phase, when `progress` is given; the kernel by its number in `kernels`, which maps the tuning
    session's task ids and may change between sessions), and passes the `tune-trials-saved` stop point."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class TrialProgress(PyMeasureCallback):
        def __init__(self) -> None:
            self.done = 0

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            self.done += len(measure_candidates)
            stop_point("tune-trials-saved")
            if progress is not None:
                progress("tune", min(self.done, total_trials), total_trials, f"kernel {kernels[task_id] + 1}")

    return TrialProgress()


COST_MODEL = "cost_model.xgb"


def tune_fused(fused_mod, spec: TargetSpec, target, database, work_dir: Path, settings: TuneSettings,
               make_ms_runner, progress=None, in_memory: bool = False) -> TuneReport:
    """Tune the kernels of `fused_mod` that the database lacks, committing records to it. `make_ms_runner` gives
    the meta-schedule runner; it is called only when something is to be tuned. `in_memory`: the runner times
    the builder's modules in this process (see `make_in_process_runner`). `progress(phase, done, total, detail)`
    hears of each batch of trials.

    One XGBoost cost model per target learns from every trial: it is kept in the tuning directory and loaded
    before, saved after, each session, so the kernels tuned later (other candidates, other runs) start from what
    it learnt, and its larger population of sampled schedules is worth ranking."""
    from tvm.s_tir import meta_schedule as ms

    load_tensor_intrinsics(intrinsic_modules(spec))
    quiet_meta_schedule()
    start = time.perf_counter()
    missing, total = untuned_tasks(fused_mod, target, database, settings.trials_per_task, work_dir)
    if missing:
        seed = settings.seed + build_timeouts(work_dir)
        population = settings.population_size
        trials = settings.trials_per_task
        caps = [trials_worth(task.dispatched[0], trials, threads_of(task.target), vector_registers(task.target))
                if settings.space_sized else trials for task in missing]
        contexts = [
            ms.TuneContext(
                mod=canonical_kernel(database, task.dispatched[0]), target=task.target,
                space_generator=design_space(task.dispatched[0], threads_of(task.target),
                                             vector_registers(task.target)),
                search_strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=population, init_min_unmeasured=population // 4,
                    genetic_num_iters=settings.genetic_num_iters),
                task_name=task.task_name, rand_state=seed, num_threads="physical",
                logger=logging.getLogger("tvm.s_tir.meta_schedule"),
            ).clone()
            for task in missing
        ]
        callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()]
        if not in_memory:  # the exported libraries' folders
            callbacks.append(ms.measure_callback.RemoveBuildArtifact())
        session_kernels: list[int] = []  # the tasks of the running session, as indices into `missing`
        callbacks.append(progress_callback(progress, sum(caps), session_kernels))
        cost_model = ms.cost_model.XGBModel()
        model_path = Path(work_dir) / COST_MODEL
        if model_path.exists():
            try:
                load_cost_model(cost_model, str(model_path))
            except Exception:  # noqa: BLE001 - an unreadable model is only a lost head start
                cost_model = ms.cost_model.XGBModel()
        watchdog = BuildWatchdog(settings.build_timeout_s, end_on_build_timeout(work_dir, seed))
        try:
            builder, runner = make_builder(spec, in_memory, watchdog), make_ms_runner()
            # one session per budget: a task ends when it has its trials, which for a small design space is when
            # the space is measured whole (the search itself would go on drawing nothing new for several rounds)
            for cap in sorted(set(caps), reverse=True):
                group = [i for i, c in enumerate(caps) if c == cap]
                session_kernels[:] = group
                ms.tune_tasks(tasks=[contexts[i] for i in group],
                              task_weights=[float(missing[i].weight) for i in group], work_dir=str(work_dir),
                              max_trials_global=cap * len(group), max_trials_per_task=cap,
                              num_trials_per_iter=min(cap, 64), builder=builder, runner=runner, database=database,
                              cost_model=cost_model, task_scheduler="round-robin", measure_callbacks=callbacks)
        finally:
            watchdog.close()
        tmp = model_path.with_suffix(".tmp")
        save_cost_model(cost_model, str(tmp))
        os.replace(tmp, model_path)
        record_budgets(work_dir, [kernel_hash(database, t.dispatched[0]) for t in missing], trials)
    return TuneReport(total, len(missing), time.perf_counter() - start)
