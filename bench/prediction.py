"""How well does the latency database predict a whole network? Predicted (sum of the measured blocks) vs measured
end-to-end latency of the exported winner and of architectures sampled from the space, each compiled the way
`tvmnas export` compiles (same level, tuning records from the target's database) and timed the way
`tvmnas profile` times (same settings, fastest of two passes).

Goal (issue 4): report each error and the share within +/-10%.

    .venv/bin/python bench/prediction.py --bundle runs/demo/bundle-x86-cpu --samples 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from tvmnas.arch import Arch
from tvmnas.deploy.bundle import read_manifest
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.compile import build_module, import_torch
from tvmnas.measure.profile import ProfileSettings, tuning_dir, tvm_version
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.model.network import Network
from tvmnas.search.latency import predicted_latency_ms
from tvmnas.space import load_space
from tvmnas.targets import load_target


def sample_archs(space, n: int, seed: int, exclude: tuple[str, ...]) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    seen, archs = {exclude}, []
    while len(archs) < n:
        ops = tuple(str(rng.choice(layer.choices)) for layer in space.layers())
        if ops not in seen:
            seen.add(ops)
            archs.append(ops)
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle-x86-cpu"))
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, default=Path.home() / ".cache" / "tvmnas" / "latency.db")
    parser.add_argument("--out", type=Path, default=Path("bench/results/prediction"))
    args = parser.parse_args()

    manifest = read_manifest(args.bundle)
    space, spec = load_space(manifest["space"]), load_target(manifest["target"]["name"])
    trials = int(manifest["level"].split("-")[1]) if manifest["level"] != "default" else 0
    settings = ProfileSettings(tune_trials=trials)
    runner = LocalRunner()
    winner = tuple(manifest["arch"])
    archs = [winner] + sample_archs(space, args.samples, args.seed, winner)
    shape = (1, space.input_channels, space.input_size, space.input_size)
    entries = []
    with LatencyDB(args.db) as db, tempfile.TemporaryDirectory() as tmp:
        libs = []
        for i, ops in enumerate(archs):
            torch.manual_seed(i)
            net = Network(space, Arch(space.name, ops)).eval()
            built = build_module(import_torch(net, shape), spec, trials, tuning_dir(args.db, spec, "local"), runner,
                                 Path(tmp) / f"net{i}.so")
            libs.append(built)
        passes = [[runner.measure(b.lib_path, spec.device, shape, settings.timing, spec.runtime_threads).median_ms
                   for b in libs] for _ in range(settings.passes)]
        for i, (ops, built) in enumerate(zip(archs, libs)):
            measured = min(p[i] for p in passes)
            predicted = predicted_latency_ms(space, ops, db, spec.fingerprint("local"), tvm_version(),
                                             settings.level)
            entries.append({"arch": list(ops), "winner": i == 0, "predicted_ms": predicted, "measured_ms": measured,
                            "error": None if predicted is None else (predicted - measured) / measured,
                            "kernels_tuned_now": built.tasks_tuned, "kernels": built.tasks})
            print(f"{' '.join(ops)}: predicted {predicted} measured {measured:.4f}")
    errors = [e["error"] for e in entries if e["error"] is not None]
    summary = {"space": space.name, "target": spec.name, "level": settings.level, "networks": len(entries),
               "within_10pct": sum(abs(e) <= 0.10 for e in errors), "mean_error": statistics.mean(errors),
               "mean_abs_error": statistics.mean(abs(e) for e in errors), "max_abs_error": max(map(abs, errors)),
               "command": f"python bench/prediction.py --bundle {args.bundle} --samples {args.samples}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "entries": entries}, indent=1) + "\n")
    lines = [f"## Predicted vs measured network latency: {space.name} on {spec.name} ({settings.level})", "",
             f"Within +/-10%: {summary['within_10pct']}/{len(errors)}; mean error {summary['mean_error']:+.1%}, "
             f"mean |error| {summary['mean_abs_error']:.1%}, worst {summary['max_abs_error']:.1%}. "
             "Error = (predicted - measured) / measured; predicted = sum of the blocks' database latencies.", "",
             "| architecture | predicted ms | measured ms | error |", "|---|---:|---:|---:|"]
    for e in entries:
        name = " ".join(e["arch"]) + (" (winner)" if e["winner"] else "")
        lines.append(f"| {name} | {e['predicted_ms']:.4f} | {e['measured_ms']:.4f} | {e['error']:+.1%} |")
    lines += ["", f"Command: `{summary['command']}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
