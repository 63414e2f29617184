"""Deriving one network from the search's path probabilities.

`derive_under_budget`: the most probable architecture (maximum sum of the layers' log-probabilities) whose
predicted latency, the table's sum as `LatencyTable.arch_ms` adds it, is at most the budget. A dynamic program
over the layers (a multiple-choice knapsack) on latencies rounded down to units of 1 us / (layers + 1) bounds the
log-probability of the first k layers in any room; a depth-first search with the unrounded latencies, led and
pruned by those bounds, keeps the best network whose real sum fits. Rounding only loosens the bounds, it never
decides what fits: the answer is exact, unless over VISITS branches lie within the bounds' slack (a subset sum:
large spaces whose probabilities rise with latency); then it is the best found, never worse than the exact answer
for a goal (layers + 2) units tighter. `most_probable_within`: the same search keeping the k best (a search's
shortlist for `tvmnas.search.rerank`).
`derive_argmax`: ProxylessNAS's plain choice, each layer's most probable path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tvmnas.errors import TvmnasError
from tvmnas.search.config import DERIVATIONS
from tvmnas.search.latency import LatencyTable

MAX_UNITS = 1 << 18  # the bounds' table at most: large budgets get coarser units (looser bounds, same answer)
SLACK_UNITS = 1e-6  # rounding in the bounds' favour, far above float error: the bounds stay upper bounds
TIE = 1e-12  # log-probabilities closer than this tie; the first network found keeps it
VISITS = 20_000  # branches the search may take (about 0.2 s): all it needs in small spaces, most often in large


@dataclass(frozen=True)
class Derived:
    choices: tuple[int, ...]  # per layer, the index of its chosen path
    latency_ms: float  # predicted (the latency table's sum)
    log_probability: float  # sum over layers of log p(chosen path)


def check_reachable(table: LatencyTable, goal_ms: float, of: str = "") -> None:
    """A TvmnasError when no network fits the goal, i.e. it is below the table's smallest reachable latency;
    both printed to as many decimals as it takes to tell them apart. `of`: what the table is (" of tiny on x")."""
    if goal_ms < table.min_ms:
        goal, least = apart(goal_ms, table.min_ms)
        raise TvmnasError(f"latency goal {goal} ms is below the smallest reachable latency{of}: {least} ms")


def apart(a: float, b: float) -> tuple[str, str]:
    """Two different numbers to the fewest decimals, at least 4, that tell them apart."""
    for decimals in range(4, 30):
        if f"{a:.{decimals}f}" != f"{b:.{decimals}f}":
            return f"{a:.{decimals}f}", f"{b:.{decimals}f}"
    return repr(a), repr(b)


def log_probability(log_probs: list[list[float]], choices) -> float:
    return float(sum(lp[c] for lp, c in zip(log_probs, choices)))


def as_derived(log_probs: list[list[float]], table: LatencyTable, choices) -> Derived:
    choices = tuple(int(c) for c in choices)
    return Derived(choices, table.arch_ms(list(choices)), log_probability(log_probs, choices))


def derive_argmax(log_probs: list[list[float]], table: LatencyTable) -> Derived:
    return as_derived(log_probs, table, [np.argmax(lp) for lp in log_probs])


def derive_under_budget(log_probs: list[list[float]], table: LatencyTable, budget_ms: float) -> Derived:
    """The most probable architecture within the budget. A budget below the smallest reachable latency is a
    TvmnasError; one at or above the largest gives the unconstrained argmax."""
    check_reachable(table, budget_ms)
    if budget_ms >= table.max_ms:
        return derive_argmax(log_probs, table)
    return most_probable_within(log_probs, table, budget_ms, 1)[0]


def most_probable_within(log_probs: list[list[float]], table: LatencyTable, budget_ms: float, k: int
                         ) -> list[Derived]:
    """The k most probable architectures within the budget, most probable first (fewer where fewer fit)."""
    check_reachable(table, budget_ms)
    room_ms = budget_ms - table.fixed_ms
    unit_ms = unit_for(table, room_ms)
    bounds = prefix_bounds(log_probs, table.layer_ms, unit_ms, units_within(room_ms, unit_ms))
    return best_within(log_probs, table, budget_ms, bounds, unit_ms, k)


def unit_for(table: LatencyTable, room_ms: float) -> float:
    """1 us / (layers + 1), or coarser where the room would take more than MAX_UNITS of them."""
    return max(1e-3 / (len(table.layer_ms) + 1), room_ms / MAX_UNITS)


def units_within(room_ms: float, unit_ms: float) -> int:
    """Whole units in `room_ms`, rounded up by SLACK_UNITS; -1 when nothing fits."""
    return max(-1, math.floor(room_ms / unit_ms + SLACK_UNITS))


def unit_weights(lat, unit_ms: float) -> list[int]:
    """Latencies in whole units, rounded down (by SLACK_UNITS more): a sum of them never exceeds the real sum's."""
    return [max(0, math.floor(ms / unit_ms - SLACK_UNITS)) for ms in lat]


def prefix_bounds(log_probs: list[list[float]], layer_ms, unit_ms: float, capacity: int) -> list[np.ndarray]:
    """bounds[k][b]: the largest log-probability of the first k layers whose latencies, in units rounded down,
    add up to at most b (-inf where none do): at least that of any prefix whose real latency fits in b units."""
    bounds = [np.zeros(capacity + 1)]
    for lp, lat in zip(log_probs, layer_ms):
        prev, new = bounds[-1], np.full(capacity + 1, -np.inf)
        for w, p in zip(unit_weights(lat, unit_ms), lp):
            if w <= capacity:
                np.maximum(new[w:], prev[:capacity + 1 - w] + p, out=new[w:])
        bounds.append(new)
    return bounds


def within_margin(log_probs: list[list[float]], table: LatencyTable, bounds: list[np.ndarray], unit_ms: float
                  ) -> list[int] | None:
    """The bounds' best network within layers + 1 units less than their capacity: rounding down loses under
    one unit a layer, so it fits the budget (still checked), and no network layers + 2 units (1-2 us where the
    room is under 12 ms) under the goal beats it."""
    b = len(bounds[0]) - 1 - len(table.layer_ms) - 1
    if b < 0 or not np.isfinite(bounds[-1][b]):
        return None
    choices = []
    for k in range(len(table.layer_ms), 0, -1):
        weights = unit_weights(table.layer_ms[k - 1], unit_ms)
        scores = [bounds[k - 1][b - w] + p if w <= b else -np.inf for w, p in zip(weights, log_probs[k - 1])]
        choice = int(np.argmax(scores))
        choices.append(choice)
        b -= weights[choice]
    return choices[::-1]


def best_within(log_probs: list[list[float]], table: LatencyTable, budget_ms: float, bounds: list[np.ndarray],
                unit_ms: float, k: int = 1) -> list[Derived]:
    """Depth-first from the last layer to the first, the most promising path first, a branch cut when its bound
    cannot beat the k-th best network found so far (at first the cheapest, which fits as budget >= min_ms, and
    `within_margin`'s); after VISITS branches it stops with the best found. Most probable first; of networks
    within TIE of each other, the first found."""
    layers = len(table.layer_ms)
    kept: list[Derived] = []  # the k best found, most probable first

    def keep(found: Derived) -> None:
        if found.latency_ms > budget_ms or any(d.choices == found.choices for d in kept):
            return
        if len(kept) == k:
            if not found.log_probability > kept[-1].log_probability + TIE:
                return
            kept.pop()
        at = next((i for i, d in enumerate(kept) if found.log_probability > d.log_probability + TIE), len(kept))
        kept.insert(at, found)

    for start in ([np.argmin(lat) for lat in table.layer_ms], within_margin(log_probs, table, bounds, unit_ms)):
        if start is not None:
            keep(as_derived(log_probs, table, start))
    chosen, visits = [0] * layers, 0

    def bound(prefix: int, room_ms: float) -> float:
        b = units_within(room_ms, unit_ms)
        return bounds[prefix][min(b, len(bounds[prefix]) - 1)] if b >= 0 else -math.inf

    def to_beat() -> float:
        return kept[-1].log_probability if len(kept) == k else -math.inf

    def visit(at: int, room_ms: float, score: float) -> None:  # layers >= at are chosen; room_ms is left for < at
        nonlocal visits
        visits += 1
        if at == 0:
            keep(as_derived(log_probs, table, chosen))
            return
        options = sorted(((score + p + bound(at - 1, room_ms - ms), c, ms, p)
                          for c, (ms, p) in enumerate(zip(table.layer_ms[at - 1], log_probs[at - 1]))),
                         key=lambda o: -o[0])
        for promise, c, ms, p in options:
            if not promise > to_beat() + TIE or visits >= VISITS:
                return
            chosen[at - 1] = c
            visit(at - 1, room_ms - ms, score + p)

    visit(layers, budget_ms - table.fixed_ms, 0.0)
    return kept


def derive(log_probs: list[list[float]], table: LatencyTable, budget_ms: float, how: str = "budget") -> Derived:
    if how == "argmax":
        return derive_argmax(log_probs, table)
    if how == "budget":
        return derive_under_budget(log_probs, table, budget_ms)
    raise TvmnasError(f"unknown derivation {how!r}; known: {', '.join(DERIVATIONS)}")
