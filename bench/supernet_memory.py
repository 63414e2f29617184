"""Peak memory of one training step: binarized single-path supernet vs all-paths (DARTS-style) supernet vs the
standalone network of the same architecture, on the same space, batch and input.

Each variant runs in a fresh process. After one untimed step (so optimizer state exists), the process's peak RSS is
reset (/proc/self/clear_refs) and one more step runs; the step's memory is the new peak minus the RSS before it.
glibc is told to serve every allocation over 64 KiB with mmap, so freed tensors leave the RSS at once.
Goal (issue 3): binarized <= 1/5 of all-paths on proxyless-imagenet at 224x224, and <= 1.5x standalone.

    .venv/bin/python bench/supernet_memory.py [--space proxyless-imagenet] [--batch 8]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from common import command_line, write_results

MODES = ("binarized-weight-step", "binarized-arch-step", "all-paths", "standalone")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(mode: str, space_name: str, batch: int, op: str) -> dict:
    import torch
    import torch.nn.functional as F

    from tvmnas.arch import Arch
    from tvmnas.model.network import Network
    from tvmnas.search.latency import LatencyTable, search_loss
    from tvmnas.search.supernet import Supernet, sample_two_paths
    from tvmnas.space import load_space

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    space = load_space(space_name)
    arch = Arch(space.name, tuple(op.split(",")))
    x = torch.randn(batch, space.input_channels, space.input_size, space.input_size)
    y = torch.randint(0, space.num_classes, (batch,))
    if mode == "standalone":
        model = Network(space, arch).train()
        params = list(model.parameters())
        forward = lambda: model(x)
    else:
        model = Supernet(space).train()
        params = model.weights() if mode != "binarized-arch-step" else model.alphas()
        paths = model.arch_paths(arch)
        table = LatencyTable(1.0, tuple(tuple(1.0 for _ in l.choices) for l in space.layers()))
        if mode == "binarized-weight-step":
            forward = lambda: model(x, paths)
        elif mode == "all-paths":
            forward = lambda: model.forward_all_paths(x)
        else:
            def forward():
                two, gates = sample_two_paths(model, torch.Generator().manual_seed(0))
                return model(x, two, [g.requires_grad_() for g in gates]), table
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step():
        out = forward()
        if isinstance(out, tuple):  # architecture step: CE through the gates + latency term
            logits, table_ = out
            loss = search_loss(F.cross_entropy(logits, y), table_.expected_ms(model.probabilities()), 2.0, "mul#log")
        else:
            loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)

    step()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    step()
    peak = rss_kib("VmHWM")
    n_params = sum(p.numel() for p in model.parameters())
    return {"mode": mode, "step_peak_mib": (peak - before) / 1024, "rss_before_mib": before / 1024,
            "params_million": n_params / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="proxyless-imagenet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.space, args.batch, args.op)))
        return
    import numpy as np

    from tvmnas.space import load_space

    layers = load_space(args.space).layers()
    rng = np.random.default_rng(0)
    archs = {  # the paths the binarized steps run and the standalone network builds
        "sampled (seed 0)": [str(rng.choice([c for c in l.choices if c != "zero"])) for l in layers],
        "largest (every layer mb_k7_e6)": ["mb_k7_e6"] * len(layers),
    }
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    report = {}
    for arch_name, ops in archs.items():
        results = {}
        for mode in MODES:
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--space", args.space, "--batch",
                                   str(args.batch), "--op", ",".join(ops)], capture_output=True, text=True, env=env,
                                  check=True)
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(arch_name, results[mode], flush=True)
        binarized = max(results["binarized-weight-step"]["step_peak_mib"],
                        results["binarized-arch-step"]["step_peak_mib"])
        report[arch_name] = {"ops": ops, "modes": results,
                             "binarized_over_all_paths": binarized / results["all-paths"]["step_peak_mib"],
                             "binarized_over_standalone": binarized / results["standalone"]["step_peak_mib"]}
    summary = {"space": args.space, "batch": args.batch,
               "binarized_over_all_paths": {n: r["binarized_over_all_paths"] for n, r in report.items()},
               "binarized_over_standalone": {n: r["binarized_over_standalone"] for n, r in report.items()}}
    lines = [f"## Peak memory of one training step: {args.space}, batch {args.batch}", "",
             "Memory the step adds on top of the process (weights and optimizer state already allocated). "
             "Binarized = the worse of a weight step (one path) and an architecture step (two paths).", "",
             "| paths / architecture | binarized weight step MiB | binarized arch step MiB | all-paths MiB | "
             "standalone MiB | binarized / all-paths (goal <= 0.2) | binarized / standalone (goal <= 1.5) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report.items():
        m = r["modes"]
        lines.append(f"| {name} | {m['binarized-weight-step']['step_peak_mib']:.0f} | "
                     f"{m['binarized-arch-step']['step_peak_mib']:.0f} | {m['all-paths']['step_peak_mib']:.0f} | "
                     f"{m['standalone']['step_peak_mib']:.0f} | {r['binarized_over_all_paths']:.3f} | "
                     f"{r['binarized_over_standalone']:.2f} |")
    lines += ["", f"Parameters: supernet {report[next(iter(report))]['modes']['all-paths']['params_million']:.1f} M."]
    write_results("supernet_memory", summary, [{"architecture": n, **r} for n, r in report.items()], lines,
                  command_line())

if __name__ == "__main__":
    main()
