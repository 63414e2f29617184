"""Training-free search: the network within the latency goal that NASWOT scores best (`--method naswot`).

A weight-sharing supernet trained for minutes ranks the networks of one latency poorly against their accuracy
trained from scratch (on cluttered-fashion-64 a Kendall tau of +0.09 to +0.30 at the goal's latency:
bench/results/search_levers_cluttered-fashion-64.md). NASWOT (Mellor et al., "Neural Architecture Search without
Training", ICML 2021) scores an untrained network by how differently its ReLUs split one batch of images: with c_u
the 0/1 pattern of unit u over the batch, K[i, j] counts the units on which images i and j fall on the same side and
the score is log |det K| (networks that tell images apart at initialization train to higher accuracy). There it
ranked the study's 24 random networks of one latency at tau +0.49 and the 73 networks near the goal at +0.34
(bench/results/zero_cost_proxies_cluttered-fashion-64.md).

The search is regularized evolution (Real et al., AAAI 2019) within the goal: a population of networks drawn
uniformly per layer (the too slow ones made faster layer by layer until they fit), then, for each new network, a
sample of the population, its best member's copy with one layer changed (within the goal), the oldest member
dropped. Each network is scored as the mean over `inits` seeded initializations of one batch of training images
(all seeded by the search's seed, the same for every network), so a search is a function of its settings. No weight
is trained: a search costs `evaluations` forward passes of one batch per initialization.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

POPULATION = 50  # regularized evolution: population, and the sample whose best member is mutated
TOURNAMENT = 10
INITS = 2  # initializations each network is scored over (a network's score varies with its initialization)


@dataclass(frozen=True)
class Scored:
    choices: tuple[int, ...]  # per searchable layer, the index of its choice
    latency_ms: float
    score: float


def naswot_score(net, images) -> float:
    """log |det K| of the ReLU patterns of `net` (a torch module in training mode: BatchNorm uses the batch) on
    `images`; -inf where K is singular (two images alike on every unit)."""
    import torch

    n = len(images)
    k = torch.zeros(n, n, dtype=torch.float64)
    units = 0

    def add(_module, _inputs, output):
        # Per ReLU layer, with c its 0/1 patterns (images x units) and g = c c^T (whose diagonal counts each
        # image's active units), the units on which two images agree are c c^T + (1 - c)(1 - c)^T
        # = 2 g - g_ii - g_jj + units: one product, exact in float32 while a layer has fewer than 2^24 units
        # (every partial sum an integer below that)
        nonlocal units
        c = (output.detach() > 0).flatten(1)
        c = c.to(torch.float32 if c.shape[1] < 2 ** 24 else torch.float64)
        g = (c @ c.T).to(torch.float64)
        active = g.diagonal()
        k.add_(2 * g - active[:, None] - active[None, :] + c.shape[1])
        units += c.shape[1]

    hooks = [m.register_forward_hook(add) for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))]
    try:
        net.train()
        with torch.no_grad():
            net(images)
    finally:
        for hook in hooks:
            hook.remove()
    if not units:
        return -math.inf
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else -math.inf


def latency_of(fixed_ms: float, layer_ms: Sequence[Sequence[float]], choices: Sequence[int]) -> float:
    return fixed_ms + sum(lat[i] for lat, i in zip(layer_ms, choices))


def fit_within(choices: list[int], fixed_ms: float, layer_ms: Sequence[Sequence[float]], budget_ms: float,
               rng: np.random.Generator) -> list[int]:
    """`choices` made to fit the budget: while too slow, a random layer that has a faster choice takes one of
    them (at random), so the network stays as close to the draw as the budget lets it."""
    choices = list(choices)
    while latency_of(fixed_ms, layer_ms, choices) > budget_ms:
        slower = [i for i, lat in enumerate(layer_ms) if min(lat) < lat[choices[i]]]
        i = slower[rng.integers(len(slower))]
        faster = [j for j, ms in enumerate(layer_ms[i]) if ms < layer_ms[i][choices[i]]]
        choices[i] = faster[rng.integers(len(faster))]
    return choices


def evolve(score_of: Callable[[tuple[int, ...]], float], fixed_ms: float, layer_ms: Sequence[Sequence[float]],
           budget_ms: float, evaluations: int, rng: np.random.Generator,
           on_evaluation: Callable[[int, int, Scored], None] | None = None) -> list[Scored]:
    """Regularized evolution of `evaluations` distinct networks within `budget_ms` (the fastest network of the
    table must fit it), maximizing `score_of(choices)`; every network scored, best first (ties: the faster)."""
    if latency_of(fixed_ms, layer_ms, [int(np.argmin(lat)) for lat in layer_ms]) > budget_ms:
        raise ValueError(f"no network fits {budget_ms} ms")
    scored: dict[tuple[int, ...], Scored] = {}
    population: collections.deque[Scored] = collections.deque()

    def visit(choices: list[int]) -> Scored | None:
        key = tuple(int(c) for c in choices)
        if key in scored:
            return None
        found = Scored(key, latency_of(fixed_ms, layer_ms, key), float(score_of(key)))
        scored[key] = found
        if on_evaluation is not None:
            on_evaluation(len(scored), evaluations, found)
        return found

    attempts = 0
    while len(scored) < evaluations and attempts < 50 * evaluations:  # a small space runs out of new networks
        attempts += 1
        if len(population) < min(POPULATION, evaluations):
            draw = [int(rng.integers(len(lat))) for lat in layer_ms]
        else:
            sample = [population[i] for i in rng.choice(len(population), min(TOURNAMENT, len(population)),
                                                        replace=False)]
            draw = list(max(sample, key=lambda s: s.score).choices)
            layer = int(rng.integers(len(layer_ms)))
            others = [j for j in range(len(layer_ms[layer])) if j != draw[layer]]
            if others:
                draw[layer] = others[rng.integers(len(others))]
        child = visit(fit_within(draw, fixed_ms, layer_ms, budget_ms, rng))
        if child is None:
            continue
        population.append(child)
        if len(population) > POPULATION:
            population.popleft()
    return sorted(scored.values(), key=lambda s: (-s.score, s.latency_ms))
