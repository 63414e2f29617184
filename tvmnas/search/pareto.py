"""The trade-off curve of a finished search: networks derived for a sweep of latency budgets across the reachable
range, each scored on the validation split with the supernet's weights (BatchNorm recalibrated, as the search
does), the dominated ones dropped."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tvmnas.data.datasets import SearchData
from tvmnas.search.derive import derive_under_budget
from tvmnas.search.latency import LatencyTable
from tvmnas.search.run import log_probabilities, path_accuracy
from tvmnas.search.supernet import Supernet


@dataclass(frozen=True)
class Point:
    arch: tuple[str, ...]
    budget_ms: float  # the smallest budget of the sweep that gave it
    latency_ms: float  # predicted
    valid_acc: float
    dominated: bool = False


def budgets(table: LatencyTable, points: int) -> list[float]:
    """`points` budgets evenly across the reachable range, both ends exactly (linspace keeps them)."""
    return [float(b) for b in np.linspace(table.min_ms, table.max_ms, points)]


def non_dominated(points: list[Point]) -> list[Point]:
    """Each point marked dominated when another is at least as fast and at least as accurate, and better in one
    (of equal ones, all but the first): the rest, sorted by latency, rise strictly in both. Sorted by latency."""
    marked = []
    for i, p in enumerate(points):
        dominated = any(q.latency_ms <= p.latency_ms and q.valid_acc >= p.valid_acc
                        and (q.latency_ms < p.latency_ms or q.valid_acc > p.valid_acc or j < i)
                        for j, q in enumerate(points) if j != i)
        marked.append(Point(p.arch, p.budget_ms, p.latency_ms, p.valid_acc, dominated))
    return sorted(marked, key=lambda p: (p.latency_ms, p.valid_acc))


def sweep(net: Supernet, table: LatencyTable, data: SearchData, n_budgets: int, on_point=None) -> list[Point]:
    """Derive for each budget, score each distinct network once; `on_point(done, total)` after each score."""
    log_probs = log_probabilities(net)
    found: dict[tuple[int, ...], tuple[float, float]] = {}
    for budget in budgets(table, n_budgets):
        derived = derive_under_budget(log_probs, table, budget)
        found.setdefault(derived.choices, (budget, derived.latency_ms))
    points = []
    for i, (choices, (budget, latency)) in enumerate(found.items()):
        arch = net.arch_of(choices)
        points.append(Point(arch.ops, budget, latency, path_accuracy(net, arch, data)[1]))
        if on_point:
            on_point(i + 1, len(found))
    return non_dominated(points)


def to_json(points: list[Point], table: LatencyTable) -> dict:
    front = [p for p in points if not p.dominated]
    return {"reachable_ms": [table.min_ms, table.max_ms], "points": [asdict(p) for p in points],
            "front": [asdict(p) for p in front]}
