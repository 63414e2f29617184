"""A single-path supernet with binarized paths (ProxylessNAS).

Each searchable layer is a `MixedLayer`: its candidates' weights (by default one set they all slice, see
`SharedMixedLayer`) plus architecture parameters `alpha`. Which
paths run is passed in with each call (`LayerPaths`), never kept as hidden state. A weight step runs one path per
layer. An architecture step samples two paths per layer; the active one runs with autograd, the other runs without
a graph, and a binary gate vector g = (1, 0) on the two outputs gives dL/dg, from which `two_path_alpha_grad`
estimates dL/dalpha for the two (the paper's "two" mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.arch import Arch, parse_op
from tvmnas.model.blocks import ConvBNAct, Head, block_module
from tvmnas.search.config import SUPERNET_WEIGHTS
from tvmnas.space import Layer, SearchSpace


@dataclass(frozen=True)
class LayerPaths:
    active: int  # the path whose output flows on (and whose weights get gradients)
    other: int | None = None  # architecture steps: the second sampled path, run without a graph


class MixedLayer(nn.Module):
    """All candidates of one layer; `zero` contributes nothing. The residual (where the layer may be skipped) is
    added outside the candidates, as in ProxylessNAS. Subclasses say how a candidate computes (`branch`) and give
    its weights as a standalone block's state dict (`path_state_dict`)."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.choices = layer.choices
        self.skip = layer.stride == 1 and layer.in_channels == layer.out_channels
        self.alpha = nn.Parameter(torch.zeros(len(layer.choices)))

    def branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def path_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, paths: LayerPaths, gates: torch.Tensor | None = None) -> torch.Tensor:
        out = self.branch(paths.active, x)
        if paths.other is not None:
            with torch.no_grad():
                other = self.branch(paths.other, x)
            out = gates[0] * out + gates[1] * other
        return x + out if self.skip else out

    def forward_all_paths(self, x: torch.Tensor) -> torch.Tensor:
        """DARTS-style: every candidate runs, weighted by softmax(alpha) (for comparison only)."""
        weights = torch.softmax(self.alpha, 0)
        out = sum(w * self.branch(i, x) for i, w in enumerate(weights))
        return x + out if self.skip else out

    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)


class SeparateMixedLayer(MixedLayer):
    """Each candidate a block of its own (ProxylessNAS): a weight step trains only the sampled ones."""

    def __init__(self, layer: Layer):
        super().__init__(layer)
        self.ops = nn.ModuleList([
            nn.Identity() if op == "zero" else
            block_module(op, layer.in_channels, layer.out_channels, layer.stride, residual=False)
            for op in layer.choices])

    def branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.choices[index] == "zero":
            return torch.zeros_like(x)
        return self.ops[index](x)

    def path_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        return self.ops[index].state_dict()


class PathNorms(nn.Module):
    """One candidate's own BatchNorms over a shared layer's weights (switchable BatchNorm, as in slimmable
    networks: the statistics of a 3x3 and a 7x7 depthwise output differ, so they are not shared)."""

    def __init__(self, hidden: int, out_channels: int, expands: bool):
        super().__init__()
        self.expand = nn.BatchNorm2d(hidden) if expands else None
        self.depthwise = nn.BatchNorm2d(hidden)
        self.project = nn.BatchNorm2d(out_channels)


class SharedMixedLayer(MixedLayer):
    """The candidates slice one set of convolution weights (as in Single-Path NAS and Once-for-All): a kxk depthwise
    kernel is the centre of the largest one, expansion e uses the first e x in_channels hidden channels; each keeps
    its own BatchNorms (`PathNorms`). Every weight step trains the weights all candidates share, so the supernet
    learns about as fast as one network, where separate candidates each see a fraction of the steps."""

    def __init__(self, layer: Layer):
        super().__init__(layer)
        self.blocks = [parse_op(op) for op in layer.choices]
        real = [b for b in self.blocks if not b.is_zero]
        self.kernel = max(b.kernel for b in real)
        self.stride = layer.stride
        cin, cout = layer.in_channels, layer.out_channels
        hidden = cin * max(b.expand for b in real)
        self.expand_weight = nn.Parameter(torch.empty(hidden, cin, 1, 1))
        self.depthwise_weight = nn.Parameter(torch.empty(hidden, 1, self.kernel, self.kernel))
        self.project_weight = nn.Parameter(torch.empty(cout, hidden, 1, 1))
        for weight in (self.expand_weight, self.depthwise_weight, self.project_weight):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # as nn.Conv2d initializes its weight
        self.norms = nn.ModuleList([
            nn.Identity() if b.is_zero else PathNorms(cin * b.expand, cout, b.expand != 1) for b in self.blocks])

    def path_weights(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The candidate's expand (None at expansion 1: the block has none), depthwise and project weights."""
        block = self.blocks[index]
        cin = self.expand_weight.shape[1]
        hidden = cin * block.expand
        start = (self.kernel - block.kernel) // 2
        end = start + block.kernel
        expand = None if block.expand == 1 else self.expand_weight[:hidden]
        return (expand, self.depthwise_weight[:hidden, :, start:end, start:end], self.project_weight[:, :hidden])

    def branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.blocks[index].is_zero:
            return torch.zeros_like(x)
        norms = self.norms[index]
        expand, depthwise, project = self.path_weights(index)
        if expand is not None:
            x = F.relu6(norms.expand(F.conv2d(x, expand)))
        x = F.relu6(norms.depthwise(F.conv2d(x, depthwise, None, self.stride, depthwise.shape[-1] // 2,
                                             groups=depthwise.shape[0])))
        return norms.project(F.conv2d(x, project))

    def path_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """The weights of `MBConv` (`tvmnas.model.blocks`) for this candidate, by that module's keys."""
        norms = self.norms[index]
        expand, depthwise, project = self.path_weights(index)
        parts = [("expand", expand, norms.expand), ("depthwise", depthwise, norms.depthwise),
                 ("project", project, norms.project)]
        state = {}
        for name, weight, norm in parts:
            if weight is None:
                continue
            state[f"{name}.conv.weight"] = weight.detach().clone()
            state.update({f"{name}.bn.{k}": v.detach().clone() for k, v in norm.state_dict().items()})
        return state


class Supernet(nn.Module):
    """`weights`: "shared" (`SharedMixedLayer`, the default) or "separate" (`SeparateMixedLayer`, ProxylessNAS)."""

    def __init__(self, space: SearchSpace, weights: str = "shared"):
        super().__init__()
        if weights not in SUPERNET_WEIGHTS:
            raise ValueError(f"unknown supernet weights {weights!r}; known: {', '.join(SUPERNET_WEIGHTS)}")
        self.space = space
        self.weights_kind = weights
        layer_class = SharedMixedLayer if weights == "shared" else SeparateMixedLayer
        stem, first, head = space.stem(), space.first(), space.head()
        self.stem = ConvBNAct(stem.in_channels, stem.out_channels, space.stem_kernel, stem.stride)
        self.first = block_module(first.op, first.in_channels, first.out_channels, 1)
        self.layers = nn.ModuleList([layer_class(layer) for layer in space.layers()])
        self.head = Head(head.in_channels, space.head_channels, space.num_classes)

    def forward(self, x: torch.Tensor, paths: list[LayerPaths], gates: list[torch.Tensor] | None = None):
        x = self.first(self.stem(x))
        for i, layer in enumerate(self.layers):
            x = layer(x, paths[i], None if gates is None else gates[i])
        return self.head(x)

    def forward_all_paths(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for layer in self.layers:
            x = layer.forward_all_paths(x)
        return self.head(x)

    def alphas(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.layers]

    def weights(self) -> list[nn.Parameter]:
        alpha_ids = {id(a) for a in self.alphas()}
        return [p for p in self.parameters() if id(p) not in alpha_ids]

    def probabilities(self) -> list[torch.Tensor]:
        return [layer.probabilities() for layer in self.layers]

    def arch_of(self, choices: tuple[int, ...]) -> Arch:
        """The architecture that keeps, in each layer, the path of that index."""
        return Arch(self.space.name, tuple(layer.choices[c] for layer, c in zip(self.layers, choices)))

    def arch_paths(self, arch: Arch) -> list[LayerPaths]:
        return [LayerPaths(layer.choices.index(op)) for layer, op in zip(self.layers, arch.ops)]


SAMPLINGS = ("alpha", "uniform", "depth", "stage-depth")


def skippable_runs(net: Supernet) -> list[list[int]]:
    """Per stage that has any, the indices of its layers that may be skipped (all but the first where that one
    changes the shape)."""
    runs, start = [], 0
    for stage in net.space.stages:
        run = [i for i in range(start, start + stage.layers) if "zero" in net.layers[i].choices]
        start += stage.layers
        if run and len(net.layers[run[0]].choices) > 1:
            runs.append(run)
    return runs


def sample_single_paths(net: Supernet, generator: torch.Generator, how: str) -> list[LayerPaths]:
    """One path per layer: from softmax(alpha) ("alpha"), all paths alike ("uniform"), "depth": a layer that may
    be skipped is skipped in half the draws, else one of its blocks alike (elastic depth: the shallow networks
    train as often as the deep ones; uniform skips a layer in 1 draw of its number of paths), or "stage-depth":
    Once-for-All's elastic depth, a stage keeps its first d layers (d alike from 1 to all) and skips the rest, so
    a layer's weights always see the output of the layer before it."""
    if how not in SAMPLINGS:
        raise ValueError(f"unknown path sampling {how!r}")
    skipped: set[int] = set()
    if how == "stage-depth":
        for run in skippable_runs(net):
            keep = int(torch.randint(len(run) + 1, (1,), generator=generator))
            skipped.update(run[keep:])
    paths = []
    for i, (layer, probs) in enumerate(zip(net.layers, net.probabilities())):
        probs = probs.detach().cpu()  # the generator lives on the CPU, whatever the device
        if how == "alpha":
            weights = probs
        elif i in skipped:
            paths.append(LayerPaths(layer.choices.index("zero")))
            continue
        else:
            weights = torch.ones_like(probs)
            if how == "depth" and "zero" in layer.choices and len(layer.choices) > 1:
                weights[layer.choices.index("zero")] = len(layer.choices) - 1
            elif how == "stage-depth" and "zero" in layer.choices:
                weights[layer.choices.index("zero")] = 0.0
        paths.append(LayerPaths(int(torch.multinomial(weights, 1, generator=generator))))
    return paths


def sample_two_paths(net: Supernet, generator: torch.Generator) -> tuple[list[LayerPaths], list[torch.Tensor]]:
    """Two distinct paths per layer from softmax(alpha), one of them active by their renormalized probabilities;
    the gates are tensors (1, 0) on the CPU: moved to the device and made to require grad, their gradients become
    the alpha gradient (see `two_path_alpha_grad`)."""
    paths, gates = [], []
    for probs in net.probabilities():
        probs = probs.detach().cpu()  # the generator lives on the CPU, whatever the device
        pair = torch.multinomial(probs, 2, replacement=False, generator=generator)
        pair_probs = probs[pair] / probs[pair].sum()
        first_active = int(torch.multinomial(pair_probs, 1, generator=generator)) == 0
        active, other = (pair[0], pair[1]) if first_active else (pair[1], pair[0])
        paths.append(LayerPaths(int(active), int(other)))
        gates.append(torch.tensor([1.0, 0.0]))
    return paths, gates


def two_path_alpha_grad(alpha: torch.Tensor, paths: LayerPaths, gate_grad: torch.Tensor) -> torch.Tensor:
    """dL/dalpha for the two sampled paths, from dL/dg: sum_j dL/dg_j * p_j * (delta_ij - p_i), with p the
    softmax over the two alphas; zero for the other paths."""
    pair = [paths.active, paths.other]
    p = torch.softmax(alpha.detach()[pair], 0)
    grad = torch.zeros_like(alpha)
    for i in range(2):
        grad[pair[i]] = sum(gate_grad[j] * p[j] * ((1.0 if i == j else 0.0) - p[i]) for j in range(2))
    return grad


def rescale_paths(alpha: torch.Tensor, drawn: list[int], old: torch.Tensor) -> None:
    """After an update, shift the alphas of the `drawn` paths so their total probability mass is what it was
    with the alphas `old` (the other paths keep theirs)."""
    with torch.no_grad():
        offset = torch.logsumexp(alpha[drawn], 0) - torch.logsumexp(old[drawn], 0)
        alpha[drawn] -= offset


def extract_subnet(net: Supernet, arch: Arch):
    """A plain `Network` for the architecture, with the supernet's weights of the chosen paths."""
    from tvmnas.model.network import Network

    subnet = Network(net.space, arch)
    subnet.stem.load_state_dict(net.stem.state_dict())
    subnet.first.load_state_dict(net.first.state_dict())
    subnet.head.load_state_dict(net.head.state_dict())
    for i, (layer, op) in enumerate(zip(net.layers, arch.ops)):
        if op != "zero":
            subnet.layers[str(i)].load_state_dict(layer.path_state_dict(layer.choices.index(op)))
    return subnet
