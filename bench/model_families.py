"""CNNs of other families than tvmnas's MBConv spaces, compiled the way `tvmnas bench-model` compiles a user's
ONNX (the target's layout and tuning records, `--tune-trials` trials for the kernels they lack) and timed against
onnxruntime and PyTorch eager in one interleaved run each (issue 18: the levers must hold beyond MBConv):

  resnet18_224   ResNet-18: plain 3x3 convolutions in basic blocks, residual adds, 1x1 strided shortcuts, max-pool
  resnet20_32    the CIFAR ResNet-20: three stages of 16/32/64 channels, residual adds
  vgg11_32       VGG-11 (CIFAR-sized): a plain stack of 3x3 convolutions and max-pools, no residuals

Random weights (seeded); plain PyTorch, written here. `--tune-cache hot|cold|auto` tunes every model from nothing
(a fresh tuning folder), timing its trials hot, cold, or cold only where the weights exceed the L2 cache (see
`tvmnas.measure.tuning.times_cold`): the lever for weight-bound kernels, compared across modes on equal terms;
results then go to `model_families_<mode>.*` (`_tuned-N` added at other than 8 trials).

    .venv/bin/python bench/model_families.py --tune-trials 8 [--tune-cache auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

from common import command_line, write_results
from compare import add_target_args, compare_network, runtime_target

from tvmnas.measure.tuning import TRIAL_CACHE_MODES
from tvmnas.measure.tuning_records import tuning_dir


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet(stem: list[nn.Module], widths: tuple[int, ...], blocks: int, classes: int) -> nn.Module:
    layers, cin = list(stem), stem[0].out_channels
    for i, width in enumerate(widths):
        for j in range(blocks):
            layers.append(BasicBlock(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def resnet18() -> nn.Module:
    stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    return resnet(stem, (64, 128, 256, 512), 2, 1000)


def resnet20() -> nn.Module:
    return resnet(conv_bn_relu(3, 16), (16, 32, 64), 3, 10)


def vgg11() -> nn.Module:
    layers, cin = [], 3
    for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += conv_bn_relu(cin, width)
            cin = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin, 10))


# name -> (builder, input shape)
MODELS = {"resnet18_224": (resnet18, (1, 3, 224, 224)), "resnet20_32": (resnet20, (1, 3, 32, 32)),
          "vgg11_32": (vgg11, (1, 3, 32, 32))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--tune-cache", choices=TRIAL_CACHE_MODES, default=None,
                        help="tune every model from nothing, timing trials this way (default: the target's "
                             "tuning records, trials timed hot)")
    add_target_args(parser)
    args = parser.parse_args()

    spec = runtime_target(args.target)
    entries = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-families-") as tmp:
        for name in args.models:
            build, shape = MODELS[name]
            torch.manual_seed(0)
            tune_dir = (tuning_dir(args.db, spec, "local") if args.tune_cache is None else
                        Path(tmp) / f"tuning-{name}-{args.tune_cache}")
            entries.append({"model": name, **compare_network(build().eval(), shape, name, args.tune_trials, spec,
                                                             tune_dir, Path(tmp), args.tune_cache or "hot",
                                                             args.breakdown)})
            print(f"{name}: {entries[-1]['latency_ms']}, {entries[-1]['tvm_over_onnxruntime']:.2f}x onnxruntime",
                  flush=True)
    ratios = {e["model"]: e["tvm_over_onnxruntime"] for e in entries}
    summary = {"tvm_over_onnxruntime": ratios, "median_tvm_over_onnxruntime": statistics.median(ratios.values()),
               "max_tvm_over_onnxruntime": max(ratios.values()),
               "tvm_over_pytorch": {e["model"]: e["tvm_over_pytorch"] for e in entries},
               "tune_s": {e["model"]: e["tune_s"] for e in entries}, "tune_trials": args.tune_trials,
               "tune_cache": args.tune_cache or "hot (the target's records)",
               "layout": spec.layout}
    lines = [f"## CNNs of other families on {spec.name} ({spec.layout}), {spec.runtime_threads} threads, "
             f"tuned-{args.tune_trials}" + ("" if args.tune_cache is None else
                                            f", trials timed {args.tune_cache}, tuned from nothing"), "",
             "| model | input | trials measured | tune s | TVM ms | onnxruntime ms | PyTorch ms | TVM / ORT | "
             "TVM / PyTorch |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        ms = e["latency_ms"]
        lines.append(f"| {e['model']} | {'x'.join(map(str, e['input_shape']))} | "
                     f"{e['trials_measured']} of {e['trials_asked']} | {e['tune_s']:.0f} | "
                     f"{ms['tvm']:.3f} | {ms['onnxruntime']:.3f} | {ms['pytorch-eager']:.3f} | "
                     f"{e['tvm_over_onnxruntime']:.2f} | {e['tvm_over_pytorch']:.2f} |")
    lines += ["", "Random weights; each row one interleaved run of the protocol. Tuning time counts only the kernels "
              "the tuning records lacked (a rerun reuses them); trials measured of those asked (kernels x "
              "--tune-trials): a kernel's search ends early when its design space has no new schedule left."]
    results = "model_families" + ("" if args.tune_cache is None else f"_{args.tune_cache}") + \
        ("" if args.tune_trials == 8 else f"_tuned-{args.tune_trials}")
    write_results(results, summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
