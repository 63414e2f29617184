"""A standalone network for one architecture of a space (what gets trained, exported and deployed)."""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.arch import Arch
from tvmnas.model.blocks import ConvBNAct, Head, block_module
from tvmnas.space import SearchSpace


class Network(nn.Module):
    """Stem, first block, the searched layers (`zero` layers are left out), head."""

    def __init__(self, space: SearchSpace, arch: Arch):
        super().__init__()
        space.check_arch(arch)
        stem, first, head = space.stem(), space.first(), space.head()
        self.stem = ConvBNAct(stem.in_channels, stem.out_channels, space.stem_kernel, stem.stride)
        self.first = block_module(first.op, first.in_channels, first.out_channels, 1)
        self.layers = nn.ModuleDict({
            str(layer.index): block_module(op, layer.in_channels, layer.out_channels, layer.stride)
            for layer, op in zip(space.layers(), arch.ops) if op != "zero"})
        self.head = Head(head.in_channels, space.head_channels, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for layer in self.layers.values():
            x = layer(x)
        return self.head(x)
