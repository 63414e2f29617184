"""Profile a search space: compile and measure every unique candidate, writing each result as it comes.

A rerun measures only what the latency database lacks (or what failed before); `force` measures everything again.
Each row records the compilation level that produced it and the seconds spent tuning and compiling it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from tvmnas.errors import error_line
from tvmnas.latency_db import LatencyDB, LatencyRow
from tvmnas.measure.compile import BuiltModule, build_module, import_torch, level_name
from tvmnas.measure.farm import Farm, FarmPolicy, Job, JobResult
from tvmnas.measure.runner.base import Runner, TimingSettings
from tvmnas.model.blocks import candidate_module
from tvmnas.space import Candidate
from tvmnas.targets import TargetSpec


@dataclass(frozen=True)
class ProfileSettings:
    tune_trials: int = 0  # meta-schedule trials per kernel; 0 = TVM's default schedules
    force: bool = False
    timing: TimingSettings = field(default_factory=TimingSettings)
    # timing passes over the whole candidate list; a candidate keeps its fastest pass. A candidate's passes lie
    # apart by the whole list's work, so a slow phase of a shared machine (seconds) rarely spoils all of them
    passes: int = 2
    seed: int = 0

    @property
    def level(self) -> str:
        return level_name(self.tune_trials)


@dataclass(frozen=True)
class Outcome:
    candidate: Candidate
    row: LatencyRow
    cached: bool


def tvm_version() -> str:
    import tvm

    return tvm.__version__


def tuning_dir(db_path: Path, spec: TargetSpec, device_label: str) -> Path:
    """The meta-schedule database of one target (and measuring device), kept beside the latency database."""
    return Path(db_path).resolve().parent / "tuning" / f"{spec.name}-{spec.fingerprint(device_label)}"


def library_path(cand: Candidate, out_dir: Path) -> Path:
    return Path(out_dir) / f"{cand.key}_{cand.shape_text}.so"


def build_candidate(cand: Candidate, spec: TargetSpec, settings: ProfileSettings, tune_dir: Path, runner: Runner,
                    out_dir: Path) -> BuiltModule:
    """Compile one candidate at the settings' level into a library under out_dir (see `build_module`)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        module = candidate_module(cand).eval()
    return build_module(import_torch(module, cand.input_shape), spec, settings.tune_trials, tune_dir, runner,
                        library_path(cand, out_dir), settings.seed, started=start)


def measure_candidate(cand: Candidate, spec: TargetSpec, runner: Runner, settings: ProfileSettings,
                      tune_dir: Path, keep_dir: Path | None = None) -> LatencyRow:
    """Build and time one candidate once; any failure is kept in the row's error. The library is kept in
    keep_dir when one is given (at `library_path(cand, keep_dir)`)."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-") as tmp:
        try:
            built = build_candidate(cand, spec, settings, tune_dir, runner, keep_dir or tmp)
        except Exception as err:  # one broken candidate must not stop the others
            return failed_row(cand, spec, runner, settings, err)
        result = runner.measure(built.lib_path, spec.device, cand.input_shape, settings.timing,
                                spec.runtime_threads)
    return _row(cand, spec, runner, settings, result.median_ms, result.stdev_ms, result.repeats,
                built.compile_s, built.tune_s, built.tasks_tuned, result.error)


def failed_row(cand, spec, runner, settings, err: Exception) -> LatencyRow:
    """The row of a candidate that did not compile."""
    return _row(cand, spec, runner, settings, None, None, 0, 0.0, 0.0, 0, error_line(err))


def _row(cand, spec, runner, settings, median_ms, stdev_ms, repeats, compile_s, tune_s, tasks_tuned, error):
    return LatencyRow(target_fp=spec.fingerprint(runner.device_label), tvm_version=tvm_version(),
                      block_key=cand.key, input_shape=cand.shape_text, level=settings.level,
                      target_name=spec.name, device=runner.device_label, median_ms=median_ms,
                      stdev_ms=stdev_ms, repeats=repeats, compile_s=round(compile_s, 3),
                      tune_s=round(tune_s, 3), tasks_tuned=tasks_tuned, error=error)


def faster_of(row: LatencyRow, again) -> LatencyRow:
    """The row with the faster of its latency and another measurement of the same library (samples counted)."""
    if again.error is not None:
        return row
    if again.median_ms >= row.median_ms:
        return replace(row, repeats=row.repeats + again.repeats, measured_at="")
    return replace(row, median_ms=again.median_ms, stdev_ms=again.stdev_ms, repeats=row.repeats + again.repeats,
                   measured_at="")


def cached_row(db: LatencyDB, cand: Candidate, spec: TargetSpec, runner: Runner,
               settings: ProfileSettings) -> LatencyRow | None:
    """The database's usable row for the candidate at the settings' level (None with `force`)."""
    if settings.force:
        return None
    row = db.get(spec.fingerprint(runner.device_label), tvm_version(), cand.key, cand.shape_text, settings.level)
    return row if row is not None and row.ok else None


def profile_candidates(candidates: list[Candidate], spec: TargetSpec, runner: Runner, db: LatencyDB,
                       settings: ProfileSettings, tune_dir: Path,
                       on_outcome: Callable[[Outcome], None] | None = None,
                       farm: FarmPolicy | None = None) -> list[Outcome]:
    """Measure what is missing (all, with `force`), writing each row before the next candidate starts; then time
    the new libraries again in further passes and keep each candidate's fastest. Through a tracker, `farm`
    spreads the timing over every server under the key (see `profile_on_farm`)."""
    if farm is not None:
        return profile_on_farm(candidates, spec, runner, db, settings, tune_dir, farm, on_outcome)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-libs-") as libs:
        for cand in candidates:
            cached = cached_row(db, cand, spec, runner, settings)
            if cached is not None:
                outcome = Outcome(cand, cached, True)
            else:
                row = measure_candidate(cand, spec, runner, settings, tune_dir, keep_dir=Path(libs))
                db.put(row)
                outcome = Outcome(cand, row, False)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        for _ in range(settings.passes - 1):
            for i, outcome in enumerate(outcomes):
                if outcome.cached or not outcome.row.ok:
                    continue
                cand = outcome.candidate
                again = runner.measure(library_path(cand, Path(libs)), spec.device, cand.input_shape, settings.timing,
                                       spec.runtime_threads)
                row = faster_of(outcome.row, again)
                if row is not outcome.row:
                    db.put(row)
                    outcomes[i] = Outcome(cand, row, False)
    return outcomes


def profile_on_farm(candidates: list[Candidate], spec: TargetSpec, runner: Runner, db: LatencyDB,
                    settings: ProfileSettings, tune_dir: Path, policy: FarmPolicy,
                    on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Compile here, one candidate after another, while the servers under the runner's tracker key time the
    libraries already built, each server a candidate at a time. Every row is written as soon as it is known; a
    server that fails hands its candidate to another (see `tvmnas.measure.farm`), and when none is left the
    error comes after the rows already measured are written. Each candidate is timed once (`passes` is for a
    local CPU shared with the compiler); a noisy timing is taken again, and flagged when it stays noisy."""
    outcomes: list[Outcome | None] = [None] * len(candidates)
    built_rows: dict[int, LatencyRow] = {}

    def record(i: int, row: LatencyRow, cached: bool = False) -> None:
        if not cached:
            db.put(row)
        outcomes[i] = Outcome(candidates[i], row, cached)
        if on_outcome:
            on_outcome(outcomes[i])

    def take(done: JobResult) -> None:
        res = done.result
        record(done.job.id, replace(built_rows.pop(done.job.id), median_ms=res.median_ms, stdev_ms=res.stdev_ms,
                                    repeats=res.repeats, error=res.error, flag=done.flag))

    with tempfile.TemporaryDirectory(prefix="tvmnas-libs-") as libs, Farm(runner.endpoint, policy) as farm:
        for i, cand in enumerate(candidates):
            cached = cached_row(db, cand, spec, runner, settings)
            if cached is not None:
                record(i, cached, cached=True)
                continue
            try:
                built = build_candidate(cand, spec, settings, tune_dir, runner, Path(libs))
            except Exception as err:  # one broken candidate must not stop the others
                record(i, failed_row(cand, spec, runner, settings, err))
                continue
            built_rows[i] = _row(cand, spec, runner, settings, None, None, 0, built.compile_s, built.tune_s,
                                 built.tasks_tuned, None)
            farm.submit(Job(i, built.lib_path, spec.device, cand.input_shape, settings.timing,
                            spec.runtime_threads))
            for done in farm.poll():
                take(done)
        for done in farm.results():
            take(done)
    return outcomes
