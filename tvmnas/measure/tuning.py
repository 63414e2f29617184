"""Meta-schedule tuning of the fused kernels of a module, against one database per target.

A kernel (a workload, keyed by the structural hash of its fused TIR function) is tuned once: a task whose
workload already holds `trials` records in the database is skipped, so candidates, spaces and runs that share a
kernel share its tuning. Builds run in this process (`InProcessBuilder`): meta-schedule's LocalBuilder starts
fresh worker processes for every batch, and each re-imports every backend's tensor intrinsics (about 28 s here).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tvmnas.failpoints import stop_point
from tvmnas.measure.conv_schedule import design_space
from tvmnas.measure.compile import export_library
from tvmnas.targets import TargetSpec
from tvmnas.measure.tuning_records import canonical_kernel, kernel_hash, record_budgets, tuned_budgets
from tvmnas.tvm_compat import build_trial, load_cost_model, load_tensor_intrinsics, save_cost_model, trial_result

# Evolutionary search population: the schedules sampled and ranked by the cost model before each batch of trials.
# The cost model is kept across sessions (see `tune_fused`), so ranking a larger population pays off even at a
# few trials per kernel; meta-schedule's default of 512 costs seconds per kernel here.
DEFAULT_POPULATION = 64


@dataclass(frozen=True)
class TuneSettings:
    trials_per_task: int
    population: int | None = None  # None = max(DEFAULT_POPULATION, 2 x trials), at most 512
    seed: int = 0


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


def make_builder(spec: TargetSpec, in_memory: bool = False):
    """A meta-schedule builder that builds in this process. It exports loadable shared libraries for a runner
    elsewhere (an RPC server), or, `in_memory`, keeps the built module for `make_in_process_runner` (no export,
    no linking, no loading: a trial costs its compile and its timing only)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    rt_mod = build_trial(item.mod, item.target)
                    if in_memory:
                        token = f"{_MEMORY_PREFIX}{len(_IN_MEMORY)}-{id(rt_mod)}"
                        _IN_MEMORY[token] = rt_mod
                        results.append(BuilderResult(token, None))
                    else:
                        path = Path(tempfile.mkdtemp(prefix="tvmnas-ms-")) / "kernel.so"
                        results.append(BuilderResult(str(export_library(rt_mod, path, spec)), None))
                except Exception as err:  # a failed candidate schedule is a result, not a crash
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


def make_in_process_runner(device_kind: str, threads: int, cold_cache: bool = False):
    """A meta-schedule runner that times the in-memory builder's modules in this process, on this machine's
    device with `threads` CPU threads (meta-schedule's LocalRunner runs each trial in a worker process: a process
    start, a sanity check and a library load per batch). Trials run hot (the kernel's data in cache from the call
    before), or, `cold_cache` (CPU), one call at a time after flushing the cache of every argument but the first,
    as a kernel runs inside a network after another kernel's data went through the caches."""
    import numpy as np
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner

    from tvmnas.measure.runner.base import set_threads

    rng = np.random.default_rng(0)

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
                    if cold_cache and device_kind != "cuda":
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


def progress_callback(progress, total_trials: int):
    """A meta-schedule measure callback, after the records are committed: reports the trials measured so far as
    progress ("tune" phase, when `progress` is given), and passes the `tune-trials-saved` stop point."""
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
                progress("tune", min(self.done, total_trials), total_trials, f"kernel {task_id + 1}")

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
        population = settings.population or min(512, max(DEFAULT_POPULATION, 2 * settings.trials_per_task))
        contexts = [
            ms.TuneContext(
                mod=canonical_kernel(database, task.dispatched[0]), target=task.target,
                space_generator=design_space(task.dispatched[0]),
                search_strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=population, init_min_unmeasured=population // 4),
                task_name=task.task_name, rand_state=settings.seed, num_threads="physical",
                logger=logging.getLogger("tvm.s_tir.meta_schedule"),
            ).clone()
            for task in missing
        ]
        trials = settings.trials_per_task
        callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()]
        if not in_memory:  # the exported libraries' folders
            callbacks.append(ms.measure_callback.RemoveBuildArtifact())
        callbacks.append(progress_callback(progress, trials * len(contexts)))
        cost_model = ms.cost_model.XGBModel()
        model_path = Path(work_dir) / COST_MODEL
        if model_path.exists():
            try:
                load_cost_model(cost_model, str(model_path))
            except Exception:  # noqa: BLE001 - an unreadable model is only a lost head start
                cost_model = ms.cost_model.XGBModel()
        ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in missing], work_dir=str(work_dir),
                      max_trials_global=trials * len(contexts), max_trials_per_task=trials,
                      num_trials_per_iter=min(trials, 64), builder=make_builder(spec, in_memory),
                      runner=make_ms_runner(), database=database, cost_model=cost_model,
                      task_scheduler="round-robin", measure_callbacks=callbacks)
        tmp = model_path.with_suffix(".tmp")
        save_cost_model(cost_model, str(tmp))
        os.replace(tmp, model_path)
        record_budgets(work_dir, [kernel_hash(database, t.dispatched[0]) for t in missing], trials)
    return TuneReport(total, len(missing), time.perf_counter() - start)
