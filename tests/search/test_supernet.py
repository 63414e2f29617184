import collections

import pytest
import torch
import torch.nn.functional as F

from tvmnas.arch import Arch
from tvmnas.search.latency import LatencyTable, search_loss
from tvmnas.search.supernet import (SAMPLINGS, LayerPaths, Supernet, extract_subnet, rescale_paths,
                                    sample_single_paths, sample_two_paths, skippable_runs, two_path_alpha_grad)
from tvmnas.space import load_space


WEIGHTS = ("shared", "separate")


@pytest.fixture
def kernels_space(write_json):
    """Two kernels and two expansions per layer (what shared weights slice)."""
    from tvmnas.space import load_space

    return load_space(str(write_json("kernels.json", {
        "schema_version": 1, "name": "kernels", "description": "test", "input": {"channels": 1, "size": 8},
        "num_classes": 3, "stem": {"channels": 4, "kernel": 3, "stride": 1},
        "first_block": {"op": "mb_k3_e1", "channels": 4},
        "candidates": {"kernels": [3, 5], "expands": [1, 3], "zero": True},
        "stages": [{"channels": 8, "layers": 2, "stride": 2}], "head": {"channels": 8}})))


def count_calls(net: Supernet) -> dict:
    """(layer, choice) -> forward calls, via hooks on every candidate's own module (a separate block, or the
    depthwise BatchNorm a shared layer keeps per candidate)."""
    calls = {}
    for li, layer in enumerate(net.layers):
        for ci, op in enumerate(layer.choices):
            if op == "zero":
                continue
            module = layer.ops[ci] if net.weights_kind == "separate" else layer.norms[ci].depthwise

            def hook(_m, _i, _o, key=(li, ci)):
                calls[key] = calls.get(key, 0) + 1
            module.register_forward_hook(hook)
    return calls


def table_for(space) -> LatencyTable:
    # layer 0: mb_k3_e1, mb_k3_e2; layer 1: mb_k3_e1, mb_k3_e2, zero
    return LatencyTable(fixed_ms=0.5, layer_ms=((1.0, 2.0), (0.3, 0.6, 0.0)))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_only_sampled_paths_execute(tiny_space, weights):
    net = Supernet(tiny_space, weights)
    calls = count_calls(net)
    x = torch.randn(4, 1, 8, 8)
    net(x, [LayerPaths(1), LayerPaths(0)])
    assert calls == {(0, 1): 1, (1, 0): 1}
    calls.clear()
    paths, gates = sample_two_paths(net, torch.Generator().manual_seed(0))
    net(x, paths, gates)
    expected = {(i, c): 1 for i, p in enumerate(paths) for c in (p.active, p.other)
                if net.layers[i].choices[c] != "zero"}
    assert calls == expected


def test_weight_step_grads_reach_only_the_sampled_path(tiny_space):
    net = Supernet(tiny_space, "separate")
    y = torch.tensor([0, 1, 2, 0])
    F.cross_entropy(net(torch.randn(4, 1, 8, 8), [LayerPaths(1), LayerPaths(0)]), y).backward()
    layer0 = net.layers[0]
    assert all(p.grad is not None for p in layer0.ops[1].parameters())
    assert all(p.grad is None for p in layer0.ops[0].parameters())


def test_gradients_reach_alpha_through_ce_and_latency(tiny_space):
    net = Supernet(tiny_space)
    table = table_for(tiny_space)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    paths, gates = sample_two_paths(net, torch.Generator().manual_seed(1))
    gates = [g.requires_grad_() for g in gates]
    ce = F.cross_entropy(net(x, paths, gates), y)
    # CE alone: gates get gradients, which the two-path estimate turns into alpha gradients
    ce.backward(retain_graph=True)
    for alpha, p, g in zip(net.alphas(), paths, gates):
        assert g.grad is not None and g.grad.abs().sum() > 0
        grad = two_path_alpha_grad(alpha, p, g.grad)
        assert grad[p.active] != 0 and grad[p.active] == pytest.approx(-float(grad[p.other]))
        untouched = [i for i in range(len(alpha)) if i not in (p.active, p.other)]
        assert all(grad[i] == 0 for i in untouched)
    # latency term alone: autograd reaches every alpha
    for alpha in net.alphas():
        alpha.grad = None
    search_loss(ce.detach(), table.expected_ms(net.probabilities()), 2.0, "add#linear").backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas())


def test_two_path_grad_matches_softmax_derivative():
    """For L = c . softmax(alpha_pair) (a linear function of the gate probabilities), the estimate equals the
    exact derivative when dL/dg = c."""
    alpha = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    c = torch.tensor([2.0, -1.0])
    pair = [2, 0]
    (c * torch.softmax(alpha[pair], 0)).sum().backward()
    grad = two_path_alpha_grad(alpha, LayerPaths(2, 0), c)
    assert torch.allclose(grad, alpha.grad)


@pytest.mark.parametrize("drawn", [[1, 3], [1, 3, 0]])  # one draw's pair, or the union of several draws
def test_rescale_keeps_other_paths_probabilities(drawn):
    alpha = torch.tensor([0.1, 0.4, -0.3, 0.2])
    before = torch.softmax(alpha, 0).clone()
    old = alpha.clone()
    alpha[drawn] += torch.tensor([0.5, -0.2, 0.1][:len(drawn)])  # an update moves the drawn paths' alphas only
    rescale_paths(alpha, drawn, old)
    after = torch.softmax(alpha, 0)
    rest = [i for i in range(4) if i not in drawn]
    assert torch.allclose(after[rest], before[rest], atol=1e-6)
    assert float(after[1]) > float(before[1]) and float(after[3]) < float(before[3])


def test_expected_latency_matches_hand_computation(tiny_space):
    net = Supernet(tiny_space)
    table = table_for(tiny_space)
    with torch.no_grad():
        net.layers[0].alpha.copy_(torch.tensor([0.0, 1.0]))
        net.layers[1].alpha.copy_(torch.tensor([2.0, 0.0, -1.0]))
    import math

    p0 = [1 / (1 + math.e), math.e / (1 + math.e)]
    z = math.e ** 2 + 1 + math.e ** -1
    p1 = [math.e ** 2 / z, 1 / z, math.e ** -1 / z]
    hand = 0.5 + (p0[0] * 1.0 + p0[1] * 2.0) + (p1[0] * 0.3 + p1[1] * 0.6 + p1[2] * 0.0)
    with torch.no_grad():
        assert float(table.expected_ms(net.probabilities())) == pytest.approx(hand, rel=1e-6)
    assert table.min_ms == pytest.approx(0.5 + 1.0 + 0.0) and table.arch_ms([1, 1]) == pytest.approx(3.1)


def test_losses():
    ce, e = torch.tensor(2.0), torch.tensor(1.5)
    assert float(search_loss(ce, e, 1.0, "add#linear", lam=0.1)) == pytest.approx(2.0 + 0.1 * 0.5)
    import math

    want = 2.0 * 0.2 * (math.log(1500) / math.log(1000)) ** 0.3
    assert float(search_loss(ce, e, 1.0, "mul#log")) == pytest.approx(want)
    assert float(search_loss(ce, e, 1.0, "none")) == 2.0


def test_sampling_is_seeded(tiny_space):
    net = Supernet(tiny_space)
    for how in SAMPLINGS:
        a = sample_single_paths(net, torch.Generator().manual_seed(3), how)
        b = sample_single_paths(net, torch.Generator().manual_seed(3), how)
        assert a == b


def test_depth_sampling_skips_a_skippable_layer_in_half_the_draws(tiny_space):
    """tiny: layer 0 cannot be skipped (stride 2), layer 1 can; its 'zero' takes half the draws under "depth",
    one of its paths' share under "uniform", and the blocks share the rest alike."""
    net = Supernet(tiny_space)
    assert "zero" not in net.layers[0].choices and "zero" in net.layers[1].choices
    zero = net.layers[1].choices.index("zero")
    n = 4000
    for how, want in (("depth", 0.5), ("uniform", 1 / len(net.layers[1].choices))):
        gen = torch.Generator().manual_seed(0)
        draws = [sample_single_paths(net, gen, how) for _ in range(n)]
        assert sum(d[1].active == zero for d in draws) / n == pytest.approx(want, abs=0.03)
    with pytest.raises(ValueError, match="unknown path sampling"):
        sample_single_paths(net, torch.Generator(), "greedy")


def test_stage_depth_keeps_a_prefix_of_each_stage_with_every_depth_alike():
    """Once-for-All's elastic depth: a stage of 4 layers (the first not skippable) keeps its first d layers, d
    alike in 1..4; kept layers take a block, never 'zero'."""
    space = load_space("cluttered-fashion-64")
    net = Supernet(space)
    runs = skippable_runs(net)
    assert [len(run) for run in runs] == [stage.layers - 1 for stage in space.stages]
    gen = torch.Generator().manual_seed(0)
    n = 3000
    depths = collections.Counter()
    for _ in range(n):
        paths = sample_single_paths(net, gen, "stage-depth")
        for run in runs:
            kept = [net.layers[i].choices[paths[i].active] != "zero" for i in run]
            assert kept == sorted(kept, reverse=True)  # a prefix
            depths[(tuple(run), sum(kept))] += 1
    assert sorted(depths) == sorted((tuple(run), kept) for run in runs for kept in range(len(run) + 1))
    for (run, kept), count in depths.items():
        assert count / n == pytest.approx(1 / (len(run) + 1), abs=0.03)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_extract_subnet_matches_supernet_path(tiny_space, weights):
    net = Supernet(tiny_space, weights).eval()
    arch = Arch("tiny", ("mb_k3_e2", "mb_k3_e1"))
    sub = extract_subnet(net, arch).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(sub(x), net(x, net.arch_paths(arch)), atol=1e-6)
    skip = extract_subnet(net, Arch("tiny", ("mb_k3_e1", "zero"))).eval()
    with torch.no_grad():
        assert torch.allclose(skip(x), net(x, net.arch_paths(Arch("tiny", ("mb_k3_e1", "zero")))), atol=1e-6)


def test_shared_weight_step_trains_the_slice_of_the_sampled_path(kernels_space):
    net = Supernet(kernels_space, "shared")
    layer = net.layers[1]  # 8 -> 8 channels: hidden 8 (e1) or 24 (e3)
    k3_e3 = layer.choices.index("mb_k3_e3")
    y = torch.tensor([0, 1, 2, 0])
    F.cross_entropy(net(torch.randn(4, 1, 8, 8), [LayerPaths(0), LayerPaths(k3_e3)]), y).backward()
    depthwise = layer.depthwise_weight.grad  # (24, 1, 5, 5): the 3x3 path trains the centre only
    assert depthwise[:, :, 1:4, 1:4].abs().sum() > 0
    ring = depthwise.clone()
    ring[:, :, 1:4, 1:4] = 0
    assert ring.abs().sum() == 0
    assert layer.expand_weight.grad.abs().sum() > 0
    # each candidate keeps its own BatchNorms: the other candidates' get no gradient
    for index, norms in enumerate(layer.norms):
        if layer.choices[index] == "zero":
            continue
        assert all((p.grad is not None) == (index == k3_e3) for p in norms.parameters())


def test_shared_candidates_share_their_weights(kernels_space):
    """The 3x3 candidate's depthwise kernel is the centre of the 5x5 one; expansion 1 has no expand conv and uses
    the first in_channels hidden channels."""
    net = Supernet(kernels_space, "shared")
    layer = net.layers[1]
    k5 = layer.path_state_dict(layer.choices.index("mb_k5_e3"))
    k3 = layer.path_state_dict(layer.choices.index("mb_k3_e3"))
    assert torch.equal(k5["depthwise.conv.weight"][:, :, 1:4, 1:4], k3["depthwise.conv.weight"])
    assert torch.equal(k5["expand.conv.weight"], k3["expand.conv.weight"])
    e1 = layer.path_state_dict(layer.choices.index("mb_k5_e1"))
    assert "expand.conv.weight" not in e1
    assert torch.equal(e1["depthwise.conv.weight"], k5["depthwise.conv.weight"][:8])
    assert torch.equal(e1["project.conv.weight"], k5["project.conv.weight"][:, :8])


@pytest.mark.parametrize("op", ["mb_k3_e1", "mb_k5_e1", "mb_k3_e3", "mb_k5_e3", "zero"])
def test_shared_extract_subnet_matches_every_candidate(kernels_space, op):
    net = Supernet(kernels_space, "shared")
    net.train()
    x = torch.randn(6, 1, 8, 8)
    arch = Arch("kernels", ("mb_k5_e3", op))
    for _ in range(3):  # BatchNorm running statistics that are not the initial ones
        net(x, net.arch_paths(arch))
    net.eval()
    sub = extract_subnet(net, arch).eval()
    with torch.no_grad():
        assert torch.allclose(sub(x), net(x, net.arch_paths(arch)), atol=1e-5)


def test_unknown_supernet_weights_refused(tiny_space):
    with pytest.raises(ValueError, match="unknown supernet weights"):
        Supernet(tiny_space, "tied")
