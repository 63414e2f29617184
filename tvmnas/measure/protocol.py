"""The measurement protocol: how every latency tvmnas reports is taken on a device that changes speed in phases.

Samples come in short windows, spread over the whole run and interleaved across everything measured in it:
round r visits every module once (the order rotated by r), with a window of a fixed reference module first and
after every `reference_every` module windows. A window's value is the median of its samples (each sample:
back-to-back calls lasting about `sample_ms`, the call count calibrated once per module).

Slow phases: the reference does the same work every time, so a reference window slower than the reference's
typical latency by more than `slow_factor` marks a slow phase; module windows beside it are dropped and, where a
module keeps too few, measured again in extra rounds (up to `max_span_s`, to wait out a long phase). Typical is the
run's median, or the anchor where it is lower: a run that lies entirely in a slow phase is recognised as one (a
network of many parallel kernels slows far more in such a phase than the reference does, so scaling by the speed
alone does not undo it). A module that still keeps too few, or whose estimate depends too much on when it was
taken (its dispersion), carries a flag.

Estimate: the `quantile` of the kept windows' values (the device's fast state; see the README for the data behind
the choice), divided by the run's `speed`: the reference's latency in this run (the same quantile of its windows)
over its `anchor` latency (what it measured when the latency database was started). Latencies measured at
different times are then all at the anchor's speed of the device; the raw estimate is kept beside it.

Pure logic over `WindowTimer`s; the runners give timers for real devices (`tvmnas.measure.runner.base.VmTimer`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from typing import Callable, Protocol as TypingProtocol, Sequence

from tvmnas.errors import error_line

PROTOCOL_VERSION = 2  # 1: five rounds within a second, median of the fastest round, fastest of two passes


@dataclass(frozen=True)
class Protocol:
    """How windows are taken and turned into a latency."""

    sample_ms: float = 2.0  # one sample: back-to-back calls lasting about this long
    samples_per_window: int = 5  # a window's value is the median of its samples
    windows: int = 120  # rounds: windows per module (more where slow phases drop some)
    min_span_s: float = 0.0  # keep taking rounds until the run lasts at least this long (single networks)
    # while a module keeps too few windows, keep measuring it again until the run lasts this long, so that a slow
    # phase longer than the planned run is waited out (0: only the extra rounds below)
    max_span_s: float = 0.0
    reference_every: int = 6  # a reference window after every this many module windows
    slow_factor: float = 1.15  # a window beside a reference window this much over its typical latency is dropped
    min_kept: float = 0.25  # a module needs this share of `windows` kept; extra rounds measure the rest again
    max_extra_rounds: float = 0.25  # extra rounds, at most this share of `windows`
    quantile: float = 0.05  # the estimate: this quantile of the kept windows (and of the reference's windows)
    max_dispersion: float = 0.1  # flag a result whose estimate moves by more than this between quarters of the run
    warmup_ms: float = 100.0  # untimed calls per module before its calls per sample are calibrated

    def __post_init__(self) -> None:
        if self.sample_ms <= 0 or self.samples_per_window < 1 or self.windows < 1 or self.reference_every < 1:
            raise ValueError("sample_ms, samples_per_window, windows and reference_every must be positive")
        if not (0 <= self.quantile <= 1 and 0 <= self.min_kept <= 1 and self.slow_factor >= 1
                and self.max_extra_rounds >= 0 and self.min_span_s >= 0 and self.max_span_s >= 0
                and self.max_dispersion > 0):
            raise ValueError("quantile and min_kept lie in [0, 1], slow_factor >= 1, max_dispersion > 0, "
                             "max_extra_rounds, min_span_s and max_span_s >= 0")

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def kept_needed(self) -> int:
        return max(1, math.ceil(self.min_kept * self.windows))


# Profiles interleave every candidate over the whole run. A single network (export, bench-model, the native
# runner) alternates with the reference alone, over at least 10 s, so that its windows meet several speed phases;
# a device that stays slow (against the anchor) is waited for, up to a minute.
PROFILE = Protocol(max_span_s=120.0)
SINGLE = Protocol(windows=100, min_span_s=10.0, reference_every=1, max_span_s=60.0)


def single_protocol(measure_s: float = SINGLE.min_span_s) -> Protocol:
    """The single-network protocol spread over at least `measure_s` seconds (a slow device waited for up to six
    times as long, at least SINGLE's minute): longer runs meet more of the device's speed phases."""
    if measure_s <= 0:
        raise ValueError("measure_s must be positive")
    return replace(SINGLE, min_span_s=measure_s, max_span_s=max(SINGLE.max_span_s, 6 * measure_s))


@dataclass(frozen=True)
class Estimate:
    latency_ms: float | None  # at the anchor's speed of the device (raw_ms / speed)
    raw_ms: float | None  # the quantile of the kept windows, as timed in this run
    dispersion: float | None  # half the range of the estimate over the run's quarters, relative to it
    windows: int  # kept windows behind the estimate
    dropped: int  # windows taken in slow phases (measured again, not used)
    flag: str | None = None  # why the estimate is doubtful, when it is
    error: str | None = None  # the module could not be timed
    too_few: bool = False  # the flag says too few windows fell outside slow phases
    # the estimate (unscaled) on the kept windows of each quarter of the run's time alone (by position in the run's
    # sequence of windows, the same spans for every module of the run; None: under two windows there)
    quarters_raw_ms: tuple[float | None, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency_ms is not None

    @classmethod
    def failed(cls, error: str) -> Estimate:
        return cls(None, None, None, 0, 0, None, error)


@dataclass(frozen=True)
class Interleaved:
    """One interleaved run: an estimate per module, the reference's own (raw), the speed and the cost."""

    estimates: list[Estimate]
    reference: Estimate | None
    speed: float  # the reference's latency in this run over its anchor latency (1.0 without either)
    seconds: float
    rounds: int

    @classmethod
    def failed(cls, modules: int, error: str) -> Interleaved:
        """Every module failed with the same error (the device could not be reached, say)."""
        return cls([Estimate.failed(error)] * modules, None, 1.0, 0.0, 0)


class WindowTimer(TypingProtocol):
    """One loaded module on a device."""

    def warm_up(self, warmup_ms: float) -> float:
        """Run the module untimed for about warmup_ms; returns its milliseconds per call."""

    def window(self, calls: int, samples: int) -> list[float]:
        """`samples` samples of `calls` back-to-back calls each; milliseconds per call of each sample."""


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of a non-empty sequence."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def round_order(n_modules: int, round_index: int) -> list[int]:
    """The modules' order in one round: rotated by the round, so every module takes every position in turn."""
    shift = round_index % n_modules if n_modules else 0
    return list(range(shift, n_modules)) + list(range(shift))


def round_plan(order: Sequence[int], reference_every: int, lead: bool = True) -> list[int | None]:
    """A round's windows: the modules in order with a reference window (None) after every `reference_every`
    module windows and at the end, and first when `lead` (the first round: later ones follow a reference window),
    so every module window has a reference window on each side."""
    plan: list[int | None] = [None] if lead else []
    for i, module in enumerate(order):
        plan.append(module)
        if (i + 1) % reference_every == 0 or i == len(order) - 1:
            plan.append(None)
    return plan


def slow_marks(log: Sequence[tuple[int | None, float]], limit_ms: float | None) -> list[bool]:
    """For each module window of the log (None entries are reference windows), whether a reference window next to
    it ran slower than limit_ms (never, without a limit)."""
    marks: list[bool] = []
    pending: list[int] = []  # module windows since the last reference window
    before_slow = False
    for item, value in log:
        if item is None:
            slow = limit_ms is not None and value > limit_ms
            for i in pending:
                marks[i] = marks[i] or slow
            pending, before_slow = [], slow
        else:
            pending.append(len(marks))
            marks.append(before_slow)
    return marks


def measure_interleaved(timers: Sequence[WindowTimer], reference: WindowTimer | None, protocol: Protocol,
                        anchor_ms: float | None = None, clock: Callable[[], float] = time.monotonic,
                        on_round: Callable[[int, int], None] | None = None) -> Interleaved:
    """Time every module with the protocol. A timer that raises fails alone (its estimate carries the error).

    `anchor_ms` is the reference's latency when the latency database was started (None: this run's own, so the
    speed is 1); a run that lies entirely in a slow phase is then scaled back to the anchor's speed.
    `on_round(done, planned)` follows each round.
    """
    start = clock()
    n = len(timers)
    errors: list[str | None] = [None] * n
    calls = [1] * n

    def calibrate(timer: WindowTimer) -> int:
        return max(1, round(protocol.sample_ms / max(timer.warm_up(protocol.warmup_ms), 1e-6)))

    for i, timer in enumerate(timers):
        try:
            calls[i] = calibrate(timer)
        except Exception as err:  # noqa: BLE001 - recorded with this module; the others go on
            errors[i] = error_line(err)
    ref_calls = calibrate(reference) if reference is not None else 1

    def take(timer: WindowTimer, count: int) -> float:
        return quantile(timer.window(count, protocol.samples_per_window), 0.5)

    log: list[tuple[int | None, float]] = []  # (module or None for the reference, window value), in time order

    def run_round(modules: Sequence[int], index: int) -> None:
        every = protocol.reference_every if reference is not None else len(modules) + 1
        for item in round_plan([modules[i] for i in round_order(len(modules), index)], every, lead=not log):
            if item is None:
                if reference is not None:
                    log.append((None, take(reference, ref_calls)))
            elif errors[item] is None:
                try:
                    log.append((item, take(timers[item], calls[item])))
                except Exception as err:  # noqa: BLE001
                    errors[item] = error_line(err)

    def state():
        """Each module's windows as (log position, value, slow); the reference's windows as (position, value);
        and the reference's latency in this run so far (over its windows outside slow phases, the time the kept
        module windows come from)."""
        refs = [(k, v) for k, (item, v) in enumerate(log) if item is None]
        ref_values = [v for _, v in refs]
        limit = None
        if refs:
            typical = quantile(ref_values, 0.5)
            limit = min(typical, anchor_ms or typical) * protocol.slow_factor
        quick = [v for v in ref_values if v <= limit] if refs else []
        ref_ms = quantile(quick or ref_values, protocol.quantile) if refs else None
        marks = slow_marks(log, limit)
        per_module: dict[int, list[tuple[int, float, bool]]] = {}
        modules = [(k, item, v) for k, (item, v) in enumerate(log) if item is not None]
        for (k, item, value), slow in zip(modules, marks):
            per_module.setdefault(item, []).append((k, value, slow))
        return per_module, refs, ref_ms

    rounds = 0
    live = [i for i in range(n) if errors[i] is None]
    while live and (rounds < protocol.windows or clock() - start < protocol.min_span_s):
        run_round(live, rounds)
        rounds += 1
        live = [i for i in live if errors[i] is None]
        if on_round:
            on_round(rounds, protocol.windows)
    per_module, refs, ref_ms = state()
    extra_cap = math.ceil(protocol.max_extra_rounds * protocol.windows) if reference is not None else 0
    extra = 0
    while reference is not None and (extra < extra_cap or clock() - start < protocol.max_span_s):
        short = [i for i in range(n) if errors[i] is None
                 and sum(not slow for _, _, slow in per_module.get(i, [])) < protocol.kept_needed]
        if not short:
            break
        run_round(short, rounds)
        rounds, extra = rounds + 1, extra + 1
        per_module, refs, ref_ms = state()

    speed = ref_ms / anchor_ms if ref_ms is not None and anchor_ms else 1.0
    estimates = []
    for i in range(n):
        if errors[i] is not None or not per_module.get(i):
            estimates.append(Estimate.failed(errors[i] or "no window was timed"))
        else:
            estimates.append(_estimate(per_module[i], refs, ref_ms, protocol, speed, len(log)))
    ref_estimate = None
    if ref_ms is not None:
        ref_estimate = _estimate([(k, v, False) for k, v in refs], refs, ref_ms, protocol, 1.0, len(log))
    return Interleaved(estimates, ref_estimate, speed, clock() - start, rounds)


QUARTERS = 4


def _estimate(windows: list[tuple[int, float, bool]], refs: list[tuple[int, float]], ref_ms: float | None,
              protocol: Protocol, speed: float, run_windows: int) -> Estimate:
    """The estimate from one module's windows (log position, value, slow), and its dispersion: how far the same
    estimate taken on each quarter of the run alone (each scaled by the reference's latency in that quarter)
    lies from it, half the range relative to it. That is how much the estimate depends on when it was taken."""
    kept = [(k, v) for k, v, slow in windows if not slow]
    dropped = len(windows) - len(kept)
    flag = None
    if len(kept) < protocol.kept_needed:
        flag = (f"noisy: only {len(kept)} of {len(windows)} windows fell outside slow phases of the reference "
                f"(needed {protocol.kept_needed}); the estimate uses every window")
        kept = [(k, v) for k, v, _ in windows]
    raw = quantile([v for _, v in kept], protocol.quantile)
    quarters = []
    if len(kept) >= 2 * QUARTERS:
        size = len(kept) / QUARTERS
        for q in range(QUARTERS):
            chunk = kept[round(q * size):round((q + 1) * size)]
            first, last = chunk[0][0], chunk[-1][0]
            near = [v for k, v in refs if first - 1 <= k <= last + 1]
            scale = ref_ms / quantile(near, protocol.quantile) if near and ref_ms else 1.0
            quarters.append(quantile([v for _, v in chunk], protocol.quantile) * scale)
    spread = (max(quarters) - min(quarters)) / 2 / raw if quarters else 0.0
    too_few = flag is not None
    if flag is None and spread > protocol.max_dispersion:
        flag = dispersion_flag(spread, protocol)
    by_time = []
    for q in range(QUARTERS):
        values = [v for k, v in kept if q * run_windows <= QUARTERS * k < (q + 1) * run_windows]
        by_time.append(quantile(values, protocol.quantile) if len(values) >= 2 else None)
    return Estimate(raw / speed, raw, spread, len(kept), dropped, flag, None, too_few, tuple(by_time))


def dispersion_flag(spread: float, protocol: Protocol) -> str:
    return (f"noisy: the estimate moves by +/-{spread:.0%} between quarters of the run, over "
            f"+/-{protocol.max_dispersion:.0%}")


def ratio_estimate(module: Estimate, reference: Estimate, protocol: Protocol) -> tuple[float, float, str | None]:
    """A module timed in turn with a reference module of like size (both in one run): the ratio of their raw
    estimates, how far that ratio moves between the quarters of the run's time (half its range, relative; both
    estimates taken on the same spans), and the flag it earns. A slow phase that slows both
    alike moves each estimate between quarters but not their ratio, so the ratio is judged by its own dispersion;
    either module's other flags (too few windows outside slow phases) still count."""
    ratio = module.raw_ms / reference.raw_ms
    ratios = [m / r for m, r in zip(module.quarters_raw_ms, reference.quarters_raw_ms) if m and r]
    spread = ((max(ratios) - min(ratios)) / 2 / ratio if len(ratios) >= 2
              else max(module.dispersion or 0.0, reference.dispersion or 0.0))
    flag = (module.flag if module.too_few else
            f"the reference's estimate is doubtful: {reference.flag}" if reference.too_few else None)
    if flag is None and spread > protocol.max_dispersion:
        flag = dispersion_flag(spread, protocol)
    return ratio, spread, flag
