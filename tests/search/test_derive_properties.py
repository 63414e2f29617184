"""`derive_under_budget` and `most_probable_within` against brute force on random small spaces with arbitrary float latencies (zeros and
repeats included), at goals on, just above and just below the smallest and largest reachable latencies and the
sums of other networks; and the refusal's numbers."""

import re

import numpy as np
import pytest

from tvmnas.errors import TvmnasError
from tvmnas.search.derive import derive_argmax, derive_under_budget, most_probable_within
from tvmnas.search.latency import LatencyTable

SEEDS = range(400)


def random_table(rng) -> LatencyTable:
    """1-4 layers of 1-4 choices; latencies of any magnitude from 1 ns to 10 ms, some zero, some repeated."""
    layers = []
    for _ in range(rng.integers(1, 5)):
        row = rng.uniform(0, 1, rng.integers(1, 5)) * 10.0 ** rng.uniform(-6, 1)
        if rng.random() < 0.3:
            row[rng.integers(len(row))] = 0.0  # a skippable layer's `zero`
        if rng.random() < 0.2 and len(row) > 1:
            row[1] = row[0]  # two paths that cost the same
        layers.append(tuple(float(ms) for ms in row))
    fixed_ms = float(rng.choice([0.0, rng.uniform(0, 1) * 10.0 ** rng.uniform(-3, 1)]))
    return LatencyTable(fixed_ms, tuple(layers))


def random_log_probs(rng, table: LatencyTable) -> list[list[float]]:
    """Log-softmax of logits: random, all equal, or rising with latency (the budget then binds hardest)."""
    kind = rng.integers(3)
    logits = [np.zeros(len(lat)) if kind == 1 else
              np.array(lat) / max(max(lat), 1e-12) + rng.normal(0, 1e-3, len(lat)) if kind == 2 else
              rng.normal(0, 2, len(lat)) for lat in table.layer_ms]
    return [list(row - np.logaddexp.reduce(row)) for row in logits]


def every_network(table: LatencyTable, log_probs) -> tuple[np.ndarray, np.ndarray]:
    """Latency (added in `arch_ms`'s order, so bit for bit the same) and log-probability of every network."""
    latency_ms, score = np.zeros(1), np.zeros(1)
    for lat, lp in zip(table.layer_ms, log_probs):
        latency_ms = (latency_ms[:, None] + np.array(lat)[None, :]).ravel()
        score = (score[:, None] + np.array(lp)[None, :]).ravel()
    return table.fixed_ms + latency_ms, score


def goals_to_try(rng, table: LatencyTable, latency_ms: np.ndarray) -> list[float]:
    ends = [table.min_ms, table.max_ms]
    sums = list(rng.choice(latency_ms, min(3, len(latency_ms)), replace=False))
    near = [g for s in ends + sums for g in (s, np.nextafter(s, np.inf), np.nextafter(s, -np.inf))]
    return sorted(float(g) for g in near + [table.min_ms * (1 + 1e-9), table.max_ms * (1 - 1e-9)])


@pytest.mark.parametrize("seed", SEEDS)
def test_equals_brute_force_at_the_edges(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng)
    log_probs = random_log_probs(rng, table)
    latency_ms, score = every_network(table, log_probs)
    assert latency_ms.min() == table.min_ms and latency_ms.max() == table.max_ms
    previous = -np.inf
    for goal in goals_to_try(rng, table, latency_ms):
        if goal < table.min_ms:
            with pytest.raises(TvmnasError, match="below the smallest reachable latency"):
                derive_under_budget(log_probs, table, goal)
            continue
        got = derive_under_budget(log_probs, table, goal)
        assert got.latency_ms == table.arch_ms(list(got.choices)) <= goal, (goal, got)
        assert got.log_probability == pytest.approx(score[latency_ms <= goal].max(), abs=1e-9), (goal, got)
        assert got.log_probability >= previous - 1e-9  # a larger goal never gives a less probable network
        previous = got.log_probability
    assert derive_under_budget(log_probs, table, table.max_ms) == derive_argmax(log_probs, table)


@pytest.mark.parametrize("seed", range(200))
def test_the_k_most_probable_within_the_goal_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng)
    log_probs = random_log_probs(rng, table)
    latency_ms, score = every_network(table, log_probs)
    k = int(rng.integers(1, 6))
    for goal in goals_to_try(rng, table, latency_ms):
        if goal < table.min_ms:
            continue
        got = most_probable_within(log_probs, table, goal, k)
        fits = np.sort(score[latency_ms <= goal])[::-1]
        assert len(got) == min(k, len(fits)), (goal, k, got)
        assert len({d.choices for d in got}) == len(got)  # distinct networks
        for d in got:
            assert d.latency_ms == table.arch_ms(list(d.choices)) <= goal
        # the i-th found as probable as the i-th best that fits (within the tie tolerance), most probable first
        assert [d.log_probability for d in got] == pytest.approx(list(fits[:len(got)]), abs=1e-9), (goal, k)
        assert got[0].log_probability == pytest.approx(derive_under_budget(log_probs, table, goal).log_probability,
                                                       abs=1e-9)


@pytest.mark.parametrize("seed", range(100))
def test_a_refusal_shows_the_goal_below_the_minimum(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng)
    goal = float(np.nextafter(table.min_ms, -np.inf)) if seed % 2 else table.min_ms * (1 - 1e-7)
    if not 0 <= goal < table.min_ms:
        return
    with pytest.raises(TvmnasError) as err:
        derive_under_budget(random_log_probs(rng, table), table, goal)
    printed = [float(n) for n in re.findall(r"(\d+\.\d+) ms", str(err.value))]
    assert len(printed) == 2 and printed[0] < printed[1], str(err.value)


def test_a_table_like_the_demos_at_every_budget_of_a_sweep():
    """Issue 22: non-round latencies, `zero` in every other layer; the sweep's first budget is the minimum."""
    rng = np.random.default_rng(22)
    rows = [rng.uniform(0.001, 0.02, 6) if layer % 2 == 0 else np.append(rng.uniform(0.001, 0.02, 5), 0.0)
            for layer in range(7)]
    table = LatencyTable(0.0311579, tuple(tuple(float(ms) for ms in row) for row in rows))
    log_probs = [list(np.log(rng.dirichlet(np.ones(6)))) for _ in range(7)]
    for points in (2, 3, 5, 6, 8, 10, 12):
        for goal in np.linspace(table.min_ms, table.max_ms, points):
            assert derive_under_budget(log_probs, table, float(goal)).latency_ms <= goal
    cheapest = derive_under_budget(log_probs, table, table.min_ms)
    assert cheapest.latency_ms == table.min_ms
    assert cheapest.choices == tuple(int(np.argmin(row)) for row in rows)
