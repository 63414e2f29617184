"""The derivation under a latency budget equals brute force; the budget's edges; large spaces stay fast."""

import itertools
import math

import numpy as np
import pytest

from tvmnas.errors import TvmnasError
from tvmnas.search.derive import (derive_argmax, derive_under_budget, prefix_bounds, unit_for, units_within,
                                  within_margin)
from tvmnas.search.latency import LatencyTable


def random_problem(rng, layers: int, choices: int, with_zero: bool):
    lat = [list(rng.uniform(0.01, 0.2, choices)) for _ in range(layers)]
    if with_zero:
        for row in lat[1::2]:
            row[-1] = 0.0  # a skippable layer's `zero` costs nothing
    logits = rng.normal(0, 2, (layers, choices))
    log_probs = [list(row - np.log(np.exp(row).sum())) for row in logits]
    return LatencyTable(0.05, tuple(tuple(r) for r in lat)), log_probs


def brute_force(table, log_probs, budget):
    best = None
    for combo in itertools.product(*[range(len(r)) for r in table.layer_ms]):
        if table.arch_ms(list(combo)) <= budget:
            score = sum(lp[c] for lp, c in zip(log_probs, combo))
            if best is None or score > best[0] + 1e-12:
                best = (score, combo)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    table, log_probs = random_problem(rng, layers=4, choices=4, with_zero=seed % 2 == 0)
    for budget in np.linspace(table.min_ms, table.max_ms, 9)[1:-1]:
        got = derive_under_budget(log_probs, table, float(budget))
        want = brute_force(table, log_probs, float(budget))
        assert got.latency_ms <= budget + 1e-12
        assert got.log_probability == pytest.approx(want[0], abs=1e-9)


def test_budget_exactly_at_an_architectures_latency_admits_it():
    table = LatencyTable(0.1, ((0.1, 0.2), (0.0, 0.3)))
    log_probs = [[math.log(0.1), math.log(0.9)], [math.log(0.2), math.log(0.8)]]
    # the most probable (0.2 + 0.3) costs 0.6 in all: at exactly 0.6 it is taken, 1 us less and it is not
    assert derive_under_budget(log_probs, table, 0.6).choices == (1, 1)
    assert derive_under_budget(log_probs, table, 0.6 - 0.001).choices == (1, 0)  # 0.9 x 0.2 beats 0.1 x 0.8
    # the minimum exactly: the cheapest architecture, zero included
    assert derive_under_budget(log_probs, table, table.min_ms).choices == (0, 0)


def test_below_the_minimum_is_refused_and_above_the_maximum_is_the_argmax():
    rng = np.random.default_rng(3)
    table, log_probs = random_problem(rng, layers=3, choices=3, with_zero=True)
    with pytest.raises(TvmnasError, match="below the smallest reachable latency"):
        derive_under_budget(log_probs, table, table.min_ms - 0.002)
    assert derive_under_budget(log_probs, table, table.max_ms + 1.0) == derive_argmax(log_probs, table)


def test_large_budgets_stay_fast_and_exact():
    rng = np.random.default_rng(7)
    lat = [list(rng.uniform(0.5, 8.0, 7)) for _ in range(21)]  # a 224x224 space: tens of ms
    table = LatencyTable(5.0, tuple(tuple(r) for r in lat))
    log_probs = [list(np.log(rng.dirichlet(np.ones(7)))) for _ in range(21)]
    budget = (table.min_ms + table.max_ms) / 2
    got = derive_under_budget(log_probs, table, budget)
    assert got.latency_ms <= budget
    # no single swap of one layer's path gives a more probable architecture within the budget
    for layer, row in enumerate(table.layer_ms):
        for choice in range(len(row)):
            swapped = list(got.choices)
            swapped[layer] = choice
            if table.arch_ms(swapped) <= budget:
                assert sum(lp[c] for lp, c in zip(log_probs, swapped)) <= got.log_probability + 1e-9


def test_probability_rising_with_latency_stays_fast_and_never_loses_to_a_tighter_goal():
    """Log-probabilities proportional to latency make the best network the one closest under the goal (a subset
    sum): the search stops at its branch limit with one at least as good as the best (layers + 2) units tighter."""
    rng = np.random.default_rng(11)
    lat = [list(rng.uniform(0.5, 8.0, 7)) for _ in range(21)]
    table = LatencyTable(5.0, tuple(tuple(r) for r in lat))
    log_probs = [list(np.array(r) - np.logaddexp.reduce(r)) for r in lat]
    previous = -np.inf
    for budget in np.linspace(table.min_ms, table.max_ms, 5)[1:-1]:
        got = derive_under_budget(log_probs, table, float(budget))
        room_ms = budget - table.fixed_ms
        unit_ms = unit_for(table, room_ms)
        margin = within_margin(log_probs, table, prefix_bounds(log_probs, table.layer_ms, unit_ms,
                                                               units_within(room_ms, unit_ms)), unit_ms)
        assert got.latency_ms <= budget and budget - got.latency_ms < 2e-3
        assert got.log_probability >= sum(lp[c] for lp, c in zip(log_probs, margin)) - 1e-12
        assert got.log_probability > previous
        previous = got.log_probability
