"""A network nobody tuned tvmnas for: MobileNetV2 written in plain PyTorch (random weights, 10 or 1000 classes),
exported to ONNX, compiled the way `tvmnas bench-model` compiles it (the target's tuning records, `--tune-trials`
trials for the kernels they lack), and timed against onnxruntime and PyTorch eager in one interleaved run of the
measurement protocol, with the per-kernel breakdown of both unless `--no-breakdown` (issue 13).

    .venv/bin/python bench/mobilenetv2.py --sizes 28 224 --tune-trials 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from common import command_line, write_results
from compare import add_target_args, compare_network, losses_lines, runtime_target

from tvmnas.measure.tuning_records import tuning_dir

# (expansion, output channels, blocks, stride of the first block): the paper's table 2
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers = conv_bn(cin, mid, 1, 1) if expand != 1 else []
        layers += conv_bn(mid, mid, 3, stride, groups=mid) + conv_bn(mid, cout, 1, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(in_channels: int, classes: int, stem_stride: int) -> nn.Module:
    layers, cin = conv_bn(in_channels, 32, 3, stem_stride), 32
    for expand, cout, blocks, stride in STAGES:
        for i in range(blocks):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += conv_bn(cin, 1280, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


# input size -> (input shape, classes, stem stride): the small one keeps its 28x28 resolution in the stem
MODELS = {28: ((1, 1, 28, 28), 10, 1), 224: ((1, 3, 224, 224), 1000, 2)}


def bench_size(size: int, trials: int, spec, tune_dir: Path, tmp: Path, breakdown: bool = True) -> dict:
    shape, classes, stem_stride = MODELS[size]
    torch.manual_seed(0)
    net = mobilenet_v2(shape[1], classes, stem_stride).eval()
    return {"size": size, **compare_network(net, shape, f"mobilenetv2_{size}", trials, spec, tune_dir, tmp,
                                            breakdown=breakdown)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--tune-trials", type=int, nargs="+", default=[8])
    add_target_args(parser)
    args = parser.parse_args()

    spec = runtime_target(args.target)
    entries = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-mnv2-") as tmp:
        for size in args.sizes:
            for trials in args.tune_trials:
                entries.append(bench_size(size, trials, spec, tuning_dir(args.db, spec, "local"), Path(tmp),
                                          args.breakdown))
                e = entries[-1]
                print(f"{size} at {trials} trials: {e['latency_ms']}, {e['tvm_over_onnxruntime']:.2f}x ORT",
                      flush=True)
    summary = {f"tvm_over_onnxruntime_{e['size']}" + ("" if e["tune_trials"] == 8 else f"_tuned{e['tune_trials']}"):
               e["tvm_over_onnxruntime"] for e in entries}
    summary["tune_s"] = {f"{e['size']}_tuned{e['tune_trials']}": e["tune_s"] for e in entries}
    summary.update({f"tune_s_{e['size']}": e["tune_s"] for e in entries if e["tune_trials"] == 8})  # the goals' keys
    lines = [f"## MobileNetV2 (plain PyTorch, random weights) on {spec.name}, {spec.runtime_threads} threads", "",
             "| input | trials | tune s | TVM ms | onnxruntime ms | PyTorch ms | TVM / ORT | TVM / PyTorch | "
             "TVM sum of kernels ms | TVM kernels in network ms | ORT sum of nodes ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        ms = e["latency_ms"]
        lines.append(f"| {'x'.join(map(str, e['input_shape']))} | {e['tune_trials']} | {e['tune_s']:.0f} | "
                     f"{ms['tvm']:.3f} | {ms['onnxruntime']:.3f} | {ms['pytorch-eager']:.3f} | "
                     f"{e['tvm_over_onnxruntime']:.2f} | {e['tvm_over_pytorch']:.2f} | "
                     + (f"{e['tvm_breakdown']['sum_kernels_ms']:.3f} | "
                        f"{e['tvm_breakdown']['sum_kernels_in_network_ms']:.3f} | "
                        f"{e['ort_breakdown']['sum_nodes_ms']:.3f} |" if "tvm_breakdown" in e else "- | - | - |"))
    lines += ["", "Tuning time counts only the kernels the tuning records lacked (a rerun reuses them). One "
              "interleaved run of the protocol per row; the kernel and node sums come from the breakdowns "
              "(TVM's kernels timed one by one with the network's arguments, hot, and inside the network: each "
              "call's median span stamped by a VM instrument; onnxruntime's profiler)."]
    for e in entries:
        if "tvm_breakdown" in e:
            lines += ["", f"{'x'.join(map(str, e['input_shape']))}, {e['tune_trials']} trials: the kernel calls "
                      "that lose the most inside the network", ""] + losses_lines(e["tvm_breakdown"])
    write_results("mobilenetv2", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
