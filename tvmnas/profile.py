"""Profile a search space: compile every unique candidate the database lacks, then time them all interleaved.

Compiling comes first, one candidate after another (a candidate that does not compile gets its failed row at
once); then the measurement protocol times every built candidate together with the reference module, so each
candidate's windows spread over the whole measuring run, and the rows are written. Through a tracker the timing
is spread over every server under the key instead (see `profile_on_farm`). A rerun measures only what the
database lacks (or what failed before); `force` measures everything again. Each row records the compilation level
and method that produced it and the seconds spent tuning and compiling it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from tvmnas.errors import TvmnasError, error_line
from tvmnas.latency_db import LatencyDB, LatencyRow, LatencyScope
from tvmnas.measure.build import BuiltModule, build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.farm import Farm, FarmPolicy, Job, JobResult
from tvmnas.measure.level import level_name
from tvmnas.measure.method import latency_scope
from tvmnas.measure.protocol import PROFILE, Estimate, Protocol
from tvmnas.measure.reference import (
    REFERENCE_FILE,
    build_reference,
    read_anchor,
    write_anchor,
)
from tvmnas.measure.runner.base import Batch, Runner
from tvmnas.model.blocks import candidate_module, fold_batchnorm
from tvmnas.reference_network import (
    REFERENCE_NETWORK_FILE,
    build_reference_network,
    network_anchor_row,
    write_network_anchor,
)
from tvmnas.space import Candidate, SearchSpace
from tvmnas.targets import TargetSpec

LOG = logging.getLogger(__name__)

# A farm job times one candidate against the reference on one server, for a few seconds (half a minute at most
# when the board stays slow).
FARM_PROTOCOL = Protocol(windows=40, reference_every=1, min_span_s=3.0, max_span_s=30.0)


@dataclass(frozen=True)
class ProfileSettings:
    tune_trials: int = 0  # meta-schedule trials per kernel; 0 = TVM's default schedules
    force: bool = False  # measure everything again
    remeasure_flagged: bool = False  # measure again the rows the protocol flagged as noisy
    protocol: Protocol = field(default_factory=lambda: PROFILE)
    farm_protocol: Protocol = field(default_factory=lambda: FARM_PROTOCOL)
    seed: int = 0

    @property
    def level(self) -> str:
        return level_name(self.tune_trials)


@dataclass(frozen=True)
class Outcome:
    """One candidate's row, and whether it came from the database rather than this run."""

    candidate: Candidate
    row: LatencyRow
    cached: bool


@dataclass(frozen=True)
class ProfileReport:
    outcomes: list[Outcome]
    measure_s: float  # seconds spent timing (compiling and tuning excluded)
    speed: float  # the device's speed in this run against the database's anchor (see the protocol)
    dropped_sessions: tuple[str, ...] = ()  # through a tracker: why servers' sessions were dropped (then retried)


#: progress callback: (phase "compile" or "measure", done, total, what)
Progress = Callable[[str, int, int, str], None]


def library_path(cand: Candidate, out_dir: Path) -> Path:
    return Path(out_dir) / f"{cand.ident}.so"


def build_candidate(cand: Candidate, spec: TargetSpec, settings: ProfileSettings, tune_dir: Path, runner: Runner,
                    out_dir: Path) -> BuiltModule:
    """Compile one candidate at the settings' level into a library under out_dir (see `build_module`), as a block
    inside a network: its input and output in the layout its neighbours hand over (`BuiltModule.input_shape`)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        module = fold_batchnorm(candidate_module(cand))
    return build_module(import_torch(module, cand.input_shape), spec, settings.tune_trials, tune_dir, runner,
                        library_path(cand, out_dir), settings.seed, started=start, interior=True)


def measure_candidate(cand: Candidate, spec: TargetSpec, runner: Runner, settings: ProfileSettings,
                      tune_dir: Path, keep_dir: Path | None = None) -> LatencyRow:
    """Build and time one candidate alone (against the reference, no anchor); any failure is kept in the row's
    error. The library is kept in keep_dir when one is given (at `library_path(cand, keep_dir)`)."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-") as tmp:
        out = Path(keep_dir or tmp)
        try:
            built = build_candidate(cand, spec, settings, tune_dir, runner, out)
        except Exception as err:  # noqa: BLE001 - the row carries it
            return candidate_row(cand, spec, runner, settings, Estimate.failed(error_line(err)), None, None)
        batch = Batch((built.lib_path,), (built.input_shape,), spec.device, spec.runtime_threads,
                      build_reference(spec, Path(tmp) / REFERENCE_FILE))
        timed = runner.measure(batch, settings.protocol)
    return candidate_row(cand, spec, runner, settings, timed.estimates[0], built, timed.speed)


def candidate_row(cand: Candidate, spec: TargetSpec, runner: Runner, settings: ProfileSettings,
                  estimate: Estimate, built: BuiltModule | None, speed: float | None) -> LatencyRow:
    """The row of one candidate: its estimate (or error) and what building it cost."""
    return LatencyRow.measured(latency_scope(spec, runner.device_label, settings.level), cand.key, cand.shape_text,
                               target_name=spec.name, device=runner.device_label, latency_ms=estimate.latency_ms,
                               raw_ms=estimate.raw_ms, dispersion=estimate.dispersion, windows=estimate.windows,
                               dropped_windows=estimate.dropped, speed=speed if estimate.ok else None,
                               compile_s=round(built.compile_s, 3) if built else 0.0,
                               tune_s=round(built.tune_s, 3) if built else 0.0,
                               tasks_tuned=built.tasks_tuned if built else 0, error=estimate.error,
                               flag=estimate.flag)


def cached_row(db: LatencyDB, cand: Candidate, spec: TargetSpec, runner: Runner,
               settings: ProfileSettings) -> LatencyRow | None:
    """The database's usable row for the candidate at the settings' level and method (None with `force`, and for a
    flagged row with `remeasure_flagged`: it is measured again)."""
    if settings.force:
        return None
    row = db.get(latency_scope(spec, runner.device_label, settings.level), cand.key, cand.shape_text)
    if row is None or not row.ok or (settings.remeasure_flagged and row.flag):
        return None
    return row


def _build_missing(candidates, spec, runner, db, settings, tune_dir, libs: Path, progress: Progress | None,
                   on_built: Callable[[int, BuiltModule], None] | None = None):
    """Compile what the database lacks; failed compilations get their rows at once. Returns (outcomes so far,
    {index: built module})."""
    outcomes: list[Outcome | None] = [None] * len(candidates)
    built: dict[int, BuiltModule] = {}
    for i, cand in enumerate(candidates):
        cached = cached_row(db, cand, spec, runner, settings)
        if cached is not None:
            outcomes[i] = Outcome(cand, cached, True)
        else:
            try:
                built[i] = build_candidate(cand, spec, settings, tune_dir, runner, libs)
            except Exception as err:  # one broken candidate must not stop the others
                row = candidate_row(cand, spec, runner, settings, Estimate.failed(error_line(err)), None, None)
                db.put(row)
                outcomes[i] = Outcome(cand, row, False)
            else:
                if on_built:
                    on_built(i, built[i])
        if progress:
            progress("compile", i + 1, len(candidates), cand.key)
    return outcomes, built


def profile_candidates(candidates: list[Candidate], spec: TargetSpec, runner: Runner, db: LatencyDB,
                       settings: ProfileSettings, tune_dir: Path, progress: Progress | None = None,
                       farm: FarmPolicy | None = None, space: SearchSpace | None = None) -> ProfileReport:
    """Measure what is missing (all, with `force`): compile, then time every built candidate interleaved with the
    reference, writing the rows. With the candidates' `space`, its reference network is timed in the same run
    when its network anchor is due (`network_anchor_due`; see `tvmnas.reference_network`). Through a tracker,
    `farm` spreads the timing over every server under the key (no anchors there)."""
    if farm is not None:
        return profile_on_farm(candidates, spec, runner, db, settings, tune_dir, farm, progress)
    scope = latency_scope(spec, runner.device_label, settings.level)
    with tempfile.TemporaryDirectory(prefix="tvmnas-libs-") as libs:
        outcomes, built = _build_missing(candidates, spec, runner, db, settings, tune_dir, Path(libs), progress)
        network, companions = None, {}
        if space is not None and network_anchor_due(space, db, scope, settings,
                                                    {candidates[i].ident for i in built}):
            try:
                network = build_reference_network(space, spec, settings.tune_trials, tune_dir, runner,
                                                  Path(libs) / REFERENCE_NETWORK_FILE)
                # its blocks that this run does not measure anyway are timed beside it (their rows kept)
                now = {candidates[i].ident for i in built}
                for cand in space.blocks(space.mobilenetv2_ops):
                    if cand.ident not in now | set(companions):
                        companions[cand.ident] = build_candidate(cand, spec, settings, tune_dir, runner, Path(libs))
            except Exception as err:  # noqa: BLE001 - exports then scale by the reference module alone
                LOG.warning("the reference network of %s did not build (%s); exports will scale by the reference "
                            "module alone", space.name, error_line(err))
                network, companions = None, {}
        if not built and network is None:
            return ProfileReport(outcomes, 0.0, 1.0)
        order = sorted(built)
        modules = [built[i] for i in order] + list(companions.values()) + ([network] if network else [])
        anchor = read_anchor(db, scope)  # kept for good, `force` or not
        batch = Batch(tuple(m.lib_path for m in modules), tuple(m.input_shape for m in modules), spec.device,
                      spec.runtime_threads, build_reference(spec, Path(libs) / REFERENCE_FILE), anchor)
        timed = runner.measure(batch, settings.protocol,
                               on_round=(lambda done, total: progress("measure", done, total, ""))
                               if progress else None)
        for i, estimate in zip(order, timed.estimates):
            row = candidate_row(candidates[i], spec, runner, settings, estimate, built[i], timed.speed)
            db.put(row)
            outcomes[i] = Outcome(candidates[i], row, False)
        if timed.reference is not None and anchor is None:
            write_anchor(db, scope, spec.name, runner.device_label, timed.reference)
        if network is not None:
            this_run = dict(zip([candidates[i].ident for i in order] + list(companions), timed.estimates))
            estimate = network_at_table_speed(space, timed.estimates[-1], this_run, db, scope)
            if estimate is not None:  # replaces the earlier one: it keeps pace with its blocks' rows
                write_network_anchor(db, scope, space, spec.name, runner.device_label, estimate,
                                     estimate.raw_ms / estimate.latency_ms, network)
    return ProfileReport(outcomes, timed.seconds, timed.speed)


def network_anchor_due(space: SearchSpace, db: LatencyDB, scope: LatencyScope, settings: ProfileSettings,
                       measured_now: set[str]) -> bool:
    """Whether a profile's run times the space's reference network: the database lacks its anchor at this level,
    the run measures one of its blocks again (`force`, `remeasure_flagged`: the anchor is the ratio to those rows,
    see `tvmnas.search.latency.reference_composition`), or it is flagged and flagged rows are measured again."""
    row = network_anchor_row(db, scope, space)
    if row is None or (settings.remeasure_flagged and row.flag):
        return True
    return any(c.ident in measured_now for c in space.blocks(space.mobilenetv2_ops))


def network_at_table_speed(space: SearchSpace, network: Estimate, this_run: dict[str, Estimate], db: LatencyDB,
                           scope: LatencyScope) -> Estimate | None:
    """The reference network's estimate at the speed of the table its predictions sum: scaled by how its blocks'
    rows compare with their estimates in the same run (1 when the run measured every row it sums; else the rows
    came from earlier runs, whose speed the reference module's scaling alone does not carry over to a network).
    None when the network or one of its blocks could not be timed."""
    blocks = space.blocks(space.mobilenetv2_ops)
    rows = [db.get(scope, c.key, c.shape_text) for c in blocks]
    now = [this_run.get(c.ident) for c in blocks]
    if not network.ok or any(r is None or not r.ok for r in rows) or any(e is None or not e.ok for e in now):
        return None
    factor = sum(r.latency_ms for r in rows) / sum(e.latency_ms for e in now)
    return replace(network, latency_ms=network.latency_ms * factor)


def profile_on_farm(candidates: list[Candidate], spec: TargetSpec, runner: Runner, db: LatencyDB,
                    settings: ProfileSettings, tune_dir: Path, policy: FarmPolicy,
                    progress: Progress | None = None) -> ProfileReport:
    """Compile here, one candidate after another, while the servers under the runner's tracker key time the
    libraries already built, each server one candidate at a time against the reference module. Every row is
    written as soon as it is known; a server that fails hands its candidate to another (see
    `tvmnas.measure.farm`), and when none is left the error comes after the rows already measured are written.
    The farm's runs are not normalized by an anchor (each server is a device of its own)."""
    outcomes: list[Outcome | None] = [None] * len(candidates)
    built_modules: dict[int, BuiltModule] = {}
    measured = [0]
    start = time.perf_counter()

    def take(done: JobResult) -> None:
        i = done.job.id
        row = candidate_row(candidates[i], spec, runner, settings, done.result, built_modules.pop(i), 1.0)
        db.put(row)
        outcomes[i] = Outcome(candidates[i], row, False)
        measured[0] += 1
        if progress:
            progress("measure", measured[0], len(candidates), candidates[i].key)

    with tempfile.TemporaryDirectory(prefix="tvmnas-libs-") as libs, Farm(runner.endpoint, policy) as farm:
        reference = build_reference(spec, Path(libs) / REFERENCE_FILE)

        def submit(i: int, module: BuiltModule) -> None:
            built_modules[i] = module
            farm.submit(Job(i, Batch((module.lib_path,), (module.input_shape,), spec.device,
                                     spec.runtime_threads, reference), settings.farm_protocol))
            for done in farm.poll():
                take(done)

        found, _ = _build_missing(candidates, spec, runner, db, settings, tune_dir, Path(libs), progress, submit)
        for i, outcome in enumerate(found):
            if outcome is not None:
                outcomes[i] = outcome
        try:
            for done in farm.results():
                take(done)
        except TvmnasError as err:
            raise FarmExhausted(str(err), tuple(farm.failures)) from None
    return ProfileReport(outcomes, time.perf_counter() - start, 1.0, tuple(farm.failures))


class FarmExhausted(TvmnasError):
    """No server was left for the measurements that remain (every row already measured is written)."""

    def __init__(self, message: str, dropped_sessions: tuple[str, ...]) -> None:
        super().__init__(message)
        self.dropped_sessions = dropped_sessions
