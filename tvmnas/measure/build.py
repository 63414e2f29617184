"""The build driver: a Relax module -> fused kernels -> (tuned) -> compiled, exported library.

Above both `compile` (passes, codegen, export) and `tuning` (meta-schedule), which it joins. Candidates, exported
networks and `bench-model` all build through here, so a latency measured for a candidate comes from the same
compilation that deploys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tvmnas.measure.compile import compile_fused, export_library, fuse
from tvmnas.measure.layout import input_shape
from tvmnas.measure.tuning import TuneSettings, tune_fused
from tvmnas.measure.tuning_records import tuning_store
from tvmnas.targets import TargetSpec


@dataclass(frozen=True)
class BuiltModule:
    lib_path: Path
    compile_s: float  # import, fusion, compilation and export, without tuning
    tune_s: float
    tasks_tuned: int
    tasks: int  # distinct kernels of the module (0 when not tuned: not counted)
    input_shape: tuple[int, ...]  # what its `main` takes (a candidate's input in the target's layout)


def build_module(relax_mod, spec: TargetSpec, tune_trials: int, tune_dir: Path, runner, lib_path: Path,
                 seed: int = 0, started: float | None = None, progress=None, interior: bool = False) -> BuiltModule:
    """Fuse (convolutions in the target's layout), tune (kernels the target's database lacks, timed by
    `runner`'s device), compile and export a Relax module at level `level_name(tune_trials)`. `started`
    (perf_counter) counts earlier steps, such as the import, in compile_s; `progress(phase, done, total, detail)`
    hears of the tuning trials; `interior`: a candidate block (see `fuse`)."""
    start = time.perf_counter() if started is None else started
    target = spec.tvm()
    fused = fuse(relax_mod, target, spec.layout, interior)
    database, tune_s, tasks_tuned, tasks = None, 0.0, 0, 0
    if tune_trials > 0:
        with tuning_store(tune_dir).session() as store:
            report = tune_fused(fused, spec, target, store.database, tune_dir, TuneSettings(tune_trials, seed=seed),
                                lambda: runner.meta_schedule_runner(spec.device, spec.runtime_threads), progress,
                                in_memory=runner.tunes_in_process)
            database = store.budget(tune_trials)  # what tune_trials trials found, not a larger budget
        tune_s, tasks_tuned, tasks = report.seconds, report.tasks_tuned, report.tasks_total
    lib = export_library(compile_fused(fused, target, database), lib_path, spec)
    return BuiltModule(lib, time.perf_counter() - start - tune_s, tune_s, tasks_tuned, tasks, input_shape(fused))
