"""TVM tuned vs onnxruntime on networks drawn uniformly from a space (issue 18's held-out check: the demo winner is
one network; a user deploys whichever the search picks). Each network (random weights, BatchNorm folded) is
compiled the way `tvmnas export` compiles a winner (the target's layout, tuned-N from the target's tuning records,
kernels they lack tuned now) and exported to ONNX; the two are checked to compute the same thing and timed in one
interleaved run of their own. Reports the median, the spread and each network's ratio.

    .venv/bin/python bench/sampled_runtimes.py [--space fashion-mnist] [--networks 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_DB, command_line, write_results
from compare import interleave_calls, ort_call, tvm_call

from tvmnas.arch import Arch
from tvmnas.deploy.export import export_onnx
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.model.network import Network
from tvmnas.space import load_space
from tvmnas.targets import load_target


def sample_archs(space, count: int, seed: int) -> list[Arch]:
    """`count` distinct architectures, each layer's choice drawn uniformly (seeded)."""
    rng, archs = np.random.default_rng(seed), []
    while len(archs) < count:
        arch = Arch(space.name, tuple(layer.choices[int(rng.integers(len(layer.choices)))]
                                      for layer in space.layers()))
        if arch not in archs:
            archs.append(arch)
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="draws the architectures and their weights")
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="its tuning folder holds the records")
    args = parser.parse_args()
    space, spec = load_space(args.space), load_target(args.target)
    set_threads(spec.runtime_threads)
    torch.set_num_threads(spec.runtime_threads)
    shape = (1, space.input_channels, space.input_size, space.input_size)
    data = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(sample_archs(space, args.networks, args.seed)):
            torch.manual_seed(args.seed * 1000 + i)
            net = fold_batchnorm(Network(space, arch).eval())
            onnx_path, lib_path = Path(tmp) / f"net{i}.onnx", Path(tmp) / f"net{i}.so"
            export_onnx(net, shape, onnx_path)
            built = build_module(import_torch(net, shape), spec, args.tune_trials,
                                 tuning_dir(args.db, spec, "local"), LocalRunner(), lib_path)
            calls = {"tvm": tvm_call(lib_path, data), "onnxruntime": ort_call(onnx_path, data, spec.runtime_threads)}
            with torch.inference_mode():
                expected = net(torch.from_numpy(data)).numpy()
            for name, call in calls.items():
                assert np.allclose(call(), expected, rtol=1e-3, atol=1e-3), name
            est = interleave_calls(calls, spec)
            latency = {n: e.raw_ms for n, e in est.items()}
            entries.append({"arch": list(arch.ops), "latency_ms": latency,
                            "dispersion": {n: e.dispersion for n, e in est.items()},
                            "tvm_over_onnxruntime": latency["tvm"] / latency["onnxruntime"],
                            "tune_s": built.tune_s, "kernels_tuned": built.tasks_tuned})
            print(f"{' '.join(arch.ops)}: TVM {latency['tvm']:.4f} ms, onnxruntime {latency['onnxruntime']:.4f} ms, "
                  f"{entries[-1]['tvm_over_onnxruntime']:.2f}x", flush=True)
    ratios = [e["tvm_over_onnxruntime"] for e in entries]
    summary = {"space": space.name, "target": spec.name, "layout": spec.layout, "level": f"tuned-{args.tune_trials}",
               "threads": spec.runtime_threads, "networks": len(entries),
               "tvm_over_onnxruntime_median": statistics.median(ratios),
               "tvm_over_onnxruntime_min": min(ratios), "tvm_over_onnxruntime_max": max(ratios),
               "at_or_below_onnxruntime": sum(r <= 1.0 for r in ratios)}
    lines = [f"## TVM tuned vs onnxruntime on {len(entries)} networks drawn uniformly from {space.name} "
             f"({spec.name}: {spec.layout}, tuned-{args.tune_trials}, {spec.runtime_threads} threads)", "",
             f"TVM / onnxruntime: median {summary['tvm_over_onnxruntime_median']:.2f}x "
             f"({summary['tvm_over_onnxruntime_min']:.2f}-{summary['tvm_over_onnxruntime_max']:.2f}x); "
             f"{summary['at_or_below_onnxruntime']} of {len(entries)} at or below 1.0x.", "",
             "| network | TVM ms | onnxruntime ms | TVM / ORT | ORT dispersion |", "|---|---:|---:|---:|---:|"]
    lines += [f"| `{' '.join(e['arch'])}` | {e['latency_ms']['tvm']:.4f} | {e['latency_ms']['onnxruntime']:.4f} | "
              f"{e['tvm_over_onnxruntime']:.2f} | {e['dispersion']['onnxruntime']:.0%} |" for e in entries]
    lines += ["", "Random weights (BatchNorm folded); each network's pair timed in one interleaved run of the "
              "protocol (the 5% quantile of the kept windows)."]
    write_results("sampled_runtimes", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
