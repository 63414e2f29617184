"""The blocks of the ProxylessNAS family in PyTorch, and the candidate modules that get measured."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tvmnas.arch import parse_op
from tvmnas.space import Candidate


class ConvBNAct(nn.Module):
    """KxK conv (optionally depthwise) + BatchNorm + optional ReLU6, 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def folded(self) -> nn.Module:
        """The deploy form: BatchNorm folded into the conv's weights and bias (eval statistics)."""
        return nn.Sequential(fuse_conv_bn_eval(self.conv.eval(), self.bn.eval()), copy.deepcopy(self.act))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (absent when expand is 1), KxK depthwise, 1x1 project; residual when
    the stride is 1 and channels match (unless `residual=False`: a supernet adds it outside the mixed op)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, expand: int, stride: int, residual: bool = True):
        super().__init__()
        hidden = in_ch * expand
        self.expand = ConvBNAct(in_ch, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_ch, 1, act=False)
        self.residual = residual and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class Head(nn.Module):
    """1x1 conv to `mid_ch`, global average pooling, linear classifier."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNAct(in_ch, mid_ch, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(mid_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.conv(x)), 1))


def block_module(op: str, in_ch: int, out_ch: int, stride: int, residual: bool = True) -> nn.Module:
    """The module of a block op string (`zero` is not a module: the layer is skipped)."""
    block = parse_op(op)
    if block.is_zero:
        raise ValueError("'zero' has no module")
    return MBConv(in_ch, out_ch, block.kernel, block.expand, stride, residual)


def candidate_module(cand: Candidate) -> nn.Module:
    """A standalone module computing exactly the candidate (what its latency measurement compiles)."""
    if cand.part == "stem":
        kernel = int(cand.op.removeprefix("stem_k"))
        return ConvBNAct(cand.in_channels, cand.out_channels, kernel, cand.stride)
    if cand.part == "head":
        return Head(cand.in_channels, int(cand.op.removeprefix("head_c")), cand.out_channels)
    return block_module(cand.op, cand.in_channels, cand.out_channels, cand.stride)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy with every ConvBNAct replaced by its folded form (what gets compiled)."""
    module = copy.deepcopy(module).eval()

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, ConvBNAct):
                setattr(parent, name, child.folded())
            else:
                replace(child)

    if isinstance(module, ConvBNAct):
        return module.folded()
    replace(module)
    return module
