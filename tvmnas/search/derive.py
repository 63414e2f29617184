"""Deriving one network from the search's path probabilities.

`derive_under_budget`: the most probable architecture (maximum sum of the layers' log-probabilities) whose
predicted latency is at most the budget, found exactly by dynamic programming over the layers (a multiple-choice
knapsack) on the additive latency table. Latencies are counted in units of 1 us / (layers + 1), rounded up, so
the rounding of all layers together stays under 1 us: the answer is exact to 1 us, and never over the budget.
`derive_argmax`: ProxylessNAS's plain choice, each layer's most probable path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tvmnas.errors import TvmnasError
from tvmnas.search.config import DERIVATIONS
from tvmnas.search.latency import LatencyTable


@dataclass(frozen=True)
class Derived:
    choices: tuple[int, ...]  # per layer, the index of its chosen path
    latency_ms: float  # predicted (the latency table's sum)
    log_probability: float  # sum over layers of log p(chosen path)


def derive_argmax(log_probs: list[list[float]], table: LatencyTable) -> Derived:
    choices = tuple(int(np.argmax(lp)) for lp in log_probs)
    return Derived(choices, table.arch_ms(list(choices)), float(sum(lp[c] for lp, c in zip(log_probs, choices))))


def derive_under_budget(log_probs: list[list[float]], table: LatencyTable, budget_ms: float) -> Derived:
    """The most probable architecture within the budget. A budget below the smallest reachable latency is a
    TvmnasError; one at or above the largest gives the unconstrained argmax."""
    if budget_ms + 1e-9 < table.min_ms:
        raise TvmnasError(f"latency goal {budget_ms:g} ms is below the smallest reachable latency "
                          f"{table.min_ms:.4f} ms")
    if budget_ms >= table.max_ms:
        return derive_argmax(log_probs, table)
    unit_ms = 1e-3 / (len(table.layer_ms) + 1)
    capacity = int(math.floor((budget_ms - table.fixed_ms) / unit_ms + 1e-9))
    # best[b]: the largest sum of log-probabilities of the layers so far within b units; -inf where none fits
    best = np.zeros(capacity + 1)
    picks = []
    for lp, lat in zip(log_probs, table.layer_ms):
        weights = [int(math.ceil(ms / unit_ms - 1e-9)) for ms in lat]
        new = np.full(capacity + 1, -np.inf)
        pick = np.full(capacity + 1, -1, dtype=np.int16)
        for choice, (w, p) in enumerate(zip(weights, lp)):
            if w > capacity:
                continue
            candidate = np.full(capacity + 1, -np.inf)
            candidate[w:] = best[:capacity + 1 - w] + p
            better = candidate > new
            new[better], pick[better] = candidate[better], choice
        best = new
        picks.append(pick)
    if not np.isfinite(best[capacity]):  # only by rounding: the cheapest fits within 1 us of the budget
        raise TvmnasError(f"latency goal {budget_ms:g} ms is below the smallest reachable latency "
                          f"{table.min_ms:.4f} ms")
    choices, b = [], capacity
    for lat, pick in zip(reversed(table.layer_ms), reversed(picks)):
        choice = int(pick[b])
        choices.append(choice)
        b -= int(math.ceil(lat[choice] / unit_ms - 1e-9))
    choices.reverse()
    return Derived(tuple(choices), table.arch_ms(choices), float(sum(lp[c] for lp, c in zip(log_probs, choices))))


def derive(log_probs: list[list[float]], table: LatencyTable, budget_ms: float, how: str = "budget") -> Derived:
    if how == "argmax":
        return derive_argmax(log_probs, table)
    if how == "budget":
        return derive_under_budget(log_probs, table, budget_ms)
    raise TvmnasError(f"unknown derivation {how!r}; known: {', '.join(DERIVATIONS)}")
