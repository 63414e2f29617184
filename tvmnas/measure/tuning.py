"""Meta-schedule tuning of the fused kernels of a module, against one database per target.

A kernel (a workload, keyed by the structural hash of its fused TIR function) is tuned once: a task whose
workload already holds `trials` records in the database is skipped, so candidates, spaces and runs that share a
kernel share its tuning. Builds run in this process (`InProcessBuilder`): meta-schedule's LocalBuilder starts
fresh worker processes for every batch, and each re-imports every backend's tensor intrinsics (about 28 s here).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import importlib.util
import logging
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

from tvmnas.measure.compile import export_library
from tvmnas.targets import TargetSpec

_INTRIN_PACKAGE = "tvm.s_tir.tensor_intrin"


@dataclass(frozen=True)
class TuneSettings:
    trials_per_task: int
    # Evolutionary search population. With a few trials per kernel, all of them are picked in the first round,
    # before the cost model has learnt anything, so a large population only costs time (meta-schedule's 512
    # costs seconds per kernel here); None = max(16, 2 x trials), at most 512.
    population: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class TuneReport:
    tasks_total: int
    tasks_tuned: int
    seconds: float


def intrinsic_modules(spec: TargetSpec) -> tuple[str, ...]:
    """The tensor-intrinsic modules of `tvm.s_tir.tensor_intrin` that the target's kernels can use."""
    if spec.device == "cuda":
        return ("cuda",)
    triple = str(spec.tvm_target.get("mtriple", ""))
    return ("arm_cpu",) if triple.startswith(("aarch64", "arm")) else ("x86",)


def load_tensor_intrinsics(modules: tuple[str, ...]) -> None:
    """Register only the tensor intrinsics the target can use before meta-schedule asks for all of them.

    `TuneContext` imports `tvm.s_tir.tensor_intrin`, whose package init registers every backend's intrinsics
    (18 s for CUDA's alone on these machines). The package is put in place empty and the needed modules loaded.
    """
    if _INTRIN_PACKAGE not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(_INTRIN_PACKAGE)
        package = types.ModuleType(_INTRIN_PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__package__ = _INTRIN_PACKAGE
        sys.modules[_INTRIN_PACKAGE] = package
        tvm.s_tir.tensor_intrin = package
    for name in modules:
        importlib.import_module(f"{_INTRIN_PACKAGE}.{name}")


def quiet_meta_schedule() -> None:
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"


def tuning_dir(db_path: Path, spec: TargetSpec, device_label: str) -> Path:
    """The meta-schedule database of one target (and measuring device), kept beside the latency database."""
    return Path(db_path).resolve().parent / "tuning" / f"{spec.name}-{spec.fingerprint(device_label)}"


def open_database(work_dir: Path):
    """The per-target meta-schedule JSON database (created when missing; records are appended). A database that
    meta-schedule cannot load is repaired first (see `repair_database`)."""
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    load = lambda: ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOADS),
                                            path_tuning_record=str(work_dir / RECORDS))
    try:
        return load()
    except Exception:  # noqa: BLE001 - a record that does not replay on its workload stops the whole load
        repair_database(work_dir)
        return load()


def repair_database(work_dir: Path) -> int:
    """Drop the tuning records that do not load (a trace that does not replay on its workload's kernel, as
    tuning a structurally equal kernel with other block names used to write). The original records file is kept
    as `database_tuning_record.json.bak-<unix time>`. Returns the number of records dropped."""
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

    work_dir = Path(work_dir)
    workloads = [Workload.from_json(json.loads(line))
                 for line in (work_dir / WORKLOADS).read_text().splitlines() if line.strip()]
    lines = [line for line in (work_dir / RECORDS).read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            data = json.loads(line)
            TuningRecord.from_json(data[1], workloads[data[0]])
        except Exception:  # noqa: BLE001 - any record that does not load is dropped
            continue
        kept.append(line)
    shutil.copyfile(work_dir / RECORDS, work_dir / f"{RECORDS}.bak-{int(time.time())}")
    tmp = work_dir / (RECORDS + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, work_dir / RECORDS)
    return len(lines) - len(kept)


def budget_database(work_dir: Path, trials: int):
    """An in-memory database with, for each kernel, only the records of its first `trials` tuning trials (in the
    order they were committed to the JSON database in work_dir). Compiling at level tuned-N with it gives every
    kernel what N trials found, even after a larger budget added records, so a tuned-N latency stays what a
    tuned-N module measures."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

    work_dir = Path(work_dir)
    memory = ms.database.MemoryDatabase()
    if not (work_dir / RECORDS).exists():
        return memory
    lines = [line for line in (work_dir / WORKLOADS).read_text().splitlines() if line.strip()]
    committed: dict[int, object] = {}
    taken: dict[int, int] = {}
    for line in (work_dir / RECORDS).read_text().splitlines():
        if not line.strip():
            continue
        index, record = json.loads(line)
        if taken.get(index, 0) >= trials:
            continue
        if index not in committed:
            committed[index] = memory.commit_workload(Workload.from_json(json.loads(lines[index])).mod)
        memory.commit_tuning_record(TuningRecord.from_json(record, committed[index]))
        taken[index] = taken.get(index, 0) + 1
    return memory


def canonical_kernel(database, kernel):
    """The database's own copy of a kernel (same structure, maybe other block names), so that a trace tuned or
    applied on it names the blocks the database knows. A new kernel is added as it is."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return database.commit_workload(_normalize_mod(kernel)).mod


def make_builder(spec: TargetSpec):
    """A meta-schedule builder that builds in this process and exports loadable shared libraries."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    rt_mod = default_build(item.mod, item.target, None)
                    path = Path(tempfile.mkdtemp(prefix="tvmnas-ms-")) / "kernel.so"
                    results.append(BuilderResult(str(export_library(rt_mod, path, spec)), None))
                except Exception as err:  # a failed candidate schedule is a result, not a crash
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


def untuned_tasks(fused_mod, target, database, trials: int) -> tuple[list, int]:
    """The extracted tasks of a fused module that the database does not yet hold `trials` records for."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(fused_mod, target)
    missing = []
    for task in tasks:
        kernel = task.dispatched[0]
        if not database.has_workload(kernel):
            missing.append(task)
        elif len(database.get_top_k(database.commit_workload(kernel), trials)) < trials:
            missing.append(task)
    return missing, len(tasks)


def progress_callback(progress, total_trials: int):
    """A meta-schedule measure callback that reports the trials measured so far as progress ("tune" phase)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class TrialProgress(PyMeasureCallback):
        def __init__(self) -> None:
            self.done = 0

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            self.done += len(measure_candidates)
            progress("tune", min(self.done, total_trials), total_trials, f"kernel {task_id + 1}")

    return TrialProgress()


def tune_fused(fused_mod, spec: TargetSpec, target, database, work_dir: Path, settings: TuneSettings,
               make_ms_runner, progress=None) -> TuneReport:
    """Tune the kernels of `fused_mod` that the database lacks, committing records to it. `make_ms_runner` gives
    the meta-schedule runner; it is called only when something is to be tuned (it starts worker processes).
    `progress(phase, done, total, detail)` hears of each batch of trials."""
    from tvm.s_tir import meta_schedule as ms

    load_tensor_intrinsics(intrinsic_modules(spec))
    quiet_meta_schedule()
    start = time.perf_counter()
    missing, total = untuned_tasks(fused_mod, target, database, settings.trials_per_task)
    if missing:
        population = settings.population or min(512, max(16, 2 * settings.trials_per_task))
        contexts = [
            ms.TuneContext(
                mod=canonical_kernel(database, task.dispatched[0]), target=task.target,
                space_generator="post-order-apply",
                search_strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=population, init_min_unmeasured=population // 4),
                task_name=task.task_name, rand_state=settings.seed, num_threads="physical",
                logger=logging.getLogger("tvm.s_tir.meta_schedule"),
            ).clone()
            for task in missing
        ]
        trials = settings.trials_per_task
        callbacks = ms.MeasureCallback.create("default")
        if progress is not None:
            callbacks = list(callbacks) + [progress_callback(progress, trials * len(contexts))]
        ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in missing], work_dir=str(work_dir),
                      max_trials_global=trials * len(contexts), max_trials_per_task=trials,
                      num_trials_per_iter=min(trials, 64), builder=make_builder(spec), runner=make_ms_runner(),
                      database=database, cost_model="xgb", task_scheduler="round-robin",
                      measure_callbacks=callbacks)
    return TuneReport(total, len(missing), time.perf_counter() - start)
