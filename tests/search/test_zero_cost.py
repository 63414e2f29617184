"""The training-free search: NASWOT's score and the regularized evolution within a latency budget."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from tvmnas.search.zero_cost import evolve, fit_within, latency_of, naswot_score

FIXED_MS = 1.0
LAYER_MS = [[0.0, 0.2, 0.4, 0.9]] * 6  # six layers of four choices, 0 = skipped
VALUE = [[0.0, 1.0, 1.5, 4.0], [0.0, 2.0, 1.0, 0.5], [0.0, 0.3, 3.0, 3.1],
         [0.0, 1.0, 1.0, 1.0], [0.0, 0.1, 0.2, 5.0], [0.0, 2.5, 0.1, 0.2]]


def additive_score(choices):
    return sum(v[i] for v, i in zip(VALUE, choices))


def test_evolution_finds_the_best_network_within_the_budget():
    """On a score whose optimum is known (additive over the layers), 300 of the 4096 networks find it."""
    budget = 3.0
    fits = [c for c in itertools.product(range(4), repeat=6) if latency_of(FIXED_MS, LAYER_MS, c) <= budget]
    best = max(fits, key=additive_score)
    scored = evolve(additive_score, FIXED_MS, LAYER_MS, budget, 300, np.random.default_rng(0))
    assert len(scored) == 300 and len({s.choices for s in scored}) == 300
    assert all(s.latency_ms <= budget + 1e-12 for s in scored)
    assert scored[0].choices == best
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)


def test_evolution_is_a_function_of_its_seed():
    def run(seed):
        return [s.choices for s in evolve(additive_score, FIXED_MS, LAYER_MS, 2.5, 60, np.random.default_rng(seed))]

    assert run(1) == run(1) and run(1) != run(2)


def test_a_budget_that_few_networks_fit_scores_each_once_and_stops():
    fits = [c for c in itertools.product(range(4), repeat=6) if latency_of(FIXED_MS, LAYER_MS, c) <= 1.2]
    scored = evolve(additive_score, FIXED_MS, LAYER_MS, 1.2, 500, np.random.default_rng(0))
    assert sorted(s.choices for s in scored) == sorted(fits)


def test_no_network_fits():
    with pytest.raises(ValueError, match="no network fits"):
        evolve(additive_score, FIXED_MS, LAYER_MS, 0.5, 10, np.random.default_rng(0))


def test_fit_within_keeps_a_network_that_fits_and_makes_one_that_does_not_fit():
    rng = np.random.default_rng(0)
    assert fit_within([1, 1, 0, 0, 0, 0], FIXED_MS, LAYER_MS, 2.0, rng) == [1, 1, 0, 0, 0, 0]
    for _ in range(20):
        fitted = fit_within([3] * 6, FIXED_MS, LAYER_MS, 2.0, rng)
        assert latency_of(FIXED_MS, LAYER_MS, fitted) <= 2.0


def test_naswot_score_tells_apart_images_only_where_the_relus_do():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4), torch.nn.ReLU6())
    images = torch.randn(16, 1, 8, 8)
    score = naswot_score(net, images)
    assert math.isfinite(score) and score > 0
    assert naswot_score(net, images) == score  # no state kept, hooks removed
    assert not any(m._forward_hooks for m in net.modules())
    same = images[:1].repeat(16, 1, 1, 1)  # every image alike: K has rank 1
    assert naswot_score(net, same) == -math.inf
    assert naswot_score(torch.nn.Conv2d(1, 1, 3), images) == -math.inf  # no ReLU to read


def test_naswot_score_is_the_log_determinant_of_the_agreement_counts():
    """K[i, j] counts the units (over every ReLU) on which images i and j fall on the same side, exactly."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU6())
    images = torch.randn(12, 1, 9, 9)
    codes = [(net[0:2](images) > 0).flatten(1), (net(images) > 0).flatten(1)]
    c = torch.cat(codes, 1)
    agreements = (c[:, None, :] == c[None, :, :]).sum(2).to(torch.float64)
    sign, logdet = torch.linalg.slogdet(agreements)
    assert sign > 0 and naswot_score(net, images) == float(logdet)


def test_wider_relu_layers_separate_more(tmp_path):
    """K sums agreements over units: more units that split the batch differently give a larger log-determinant."""
    torch.manual_seed(0)
    images = torch.randn(32, 64)
    narrow = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU())
    wide = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU())
    assert naswot_score(wide, images) > naswot_score(narrow, images)
