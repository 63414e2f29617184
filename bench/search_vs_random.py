"""Does the search beat random architectures of the same latency? (issue 11)

The searched network (a finished search run, or a fresh `tvmnas search` at the demo's settings) against random
architectures of the same space whose predicted latency lies within +/-tolerance of the searched one's, all
trained the same way from scratch (`tvmnas train --arch`, the same epochs, for each seed): test accuracy mean and
spread per network.

    .venv/bin/python bench/search_vs_random.py --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import DEFAULT_DB, REPO, command_line, write_results

from tvmnas.arch import Arch, load_arch, save_arch
from tvmnas.latency_db import LatencyDB
from tvmnas.search.latency import table_from_db
from tvmnas.space import load_space
from tvmnas.targets import load_target
from tvmnas.versions import tvm_version

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]


def random_archs(space, table, centre_ms: float, tolerance: float, count: int, seed: int,
                 exclude: tuple[str, ...], tries: int = 200_000) -> list[tuple[Arch, float]]:
    """`count` distinct architectures drawn uniformly per layer whose predicted latency lies within
    +/-tolerance of centre_ms (rejection sampling with a seeded generator)."""
    rng = np.random.default_rng(seed)
    layers = space.layers()
    found: dict[tuple[str, ...], float] = {}
    for _ in range(tries):
        picks = [int(rng.integers(len(layer.choices))) for layer in layers]
        ops = tuple(layer.choices[i] for layer, i in zip(layers, picks))
        latency = table.arch_ms(picks)
        if abs(latency / centre_ms - 1) <= tolerance and ops != exclude and ops not in found:
            found[ops] = latency
            if len(found) == count:
                break
    if len(found) < count:
        raise SystemExit(f"only {len(found)} random architectures within +/-{tolerance:.0%} of {centre_ms:.4f} ms")
    return [(Arch(space.name, ops), ms) for ops, ms in found.items()]


def train(arch_file: Path, seed: int, epochs: int, images: int, out: Path) -> dict:
    """The training's summary (kept in `out`: a rerun of the bench reuses trainings of the same settings)."""
    done = out / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        settings = json.loads((out / "settings.json").read_text())
        if summary.get("arch") == json.loads(arch_file.read_text())["ops"] and summary.get("epochs") == epochs \
                and settings.get("images_per_epoch") == (images or None):
            return summary
    subprocess.run([*TVMNAS, "train", "--arch", str(arch_file), "--epochs", str(epochs), "--seed", str(seed),
                    "--images-per-epoch", str(images), "--out", str(out)], check=True, cwd=REPO)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"),
                        help="a finished search (searched at --latency-ms into it when it has no arch.json)")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--latency-ms", type=float, default=0.5)
    parser.add_argument("--randoms", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images-per-epoch", type=int, default=12800,
                        help="training images per epoch, a fresh seeded sample each (0: all 55,000; default 12,800, "
                             "the search's epoch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("runs/search_vs_random"),
                        help="where the networks are trained (a rerun reuses finished trainings)")
    args = parser.parse_args()

    if not (args.run / "arch.json").exists():
        where = ["--resume", str(args.run)] if (args.run / "checkpoint.pt").exists() else ["--out", str(args.run)]
        subprocess.run([*TVMNAS, "search", "--space", "fashion-mnist", "--target", "x86-cpu", "--latency-ms",
                        str(args.latency_ms), "--db", str(args.db), *where], check=True, cwd=REPO)
    config = json.loads((args.run / "config.json").read_text())
    searched = load_arch(args.run / "arch.json")
    space, spec = load_space(config["space"]), load_target(config["target"])
    with LatencyDB(args.db) as db:
        table = table_from_db(space, db, spec.fingerprint(config["measured_by"]), tvm_version(), config["level"])
    searched_ms = table.arch_ms([layer.choices.index(op) for layer, op in zip(space.layers(), searched.ops)])
    nets = [("searched", searched, searched_ms)]
    nets += [(f"random-{i + 1}", arch, ms) for i, (arch, ms) in
             enumerate(random_archs(space, table, searched_ms, args.tolerance, args.randoms, 0, searched.ops))]

    entries = []
    args.work.mkdir(parents=True, exist_ok=True)
    for name, arch, ms in nets:
        arch_file = args.work / f"{name}.json"
        save_arch(arch, arch_file)
        accs = [train(arch_file, seed, args.epochs, args.images_per_epoch, args.work / f"{name}-seed{seed}")["test_acc"]
                for seed in args.seeds]
        entries.append({"name": name, "ops": list(arch.ops), "predicted_ms": ms, "test_acc": accs,
                        "mean": statistics.mean(accs), "spread": (max(accs) - min(accs)) / 2})
        print(entries[-1], flush=True)

    best_random = max(e["mean"] for e in entries[1:])
    summary = {"goal_ms": config["latency_ms"], "searched_ms": searched_ms, "searched_mean_acc": entries[0]["mean"],
               "random_mean_accs": [e["mean"] for e in entries[1:]], "best_random_mean": best_random,
               "random_mean": statistics.mean(e["mean"] for e in entries[1:]),
               "searched_at_or_above_best_random": entries[0]["mean"] >= best_random,
               "randoms": args.randoms, "tolerance": args.tolerance, "epochs": args.epochs, "seeds": args.seeds,
               "images_per_epoch": args.images_per_epoch or 55000}
    lines = [f"## Searched vs random architectures at {searched_ms:.3f} ms predicted (+/-{args.tolerance:.0%})", "",
             f"{space.name} on {spec.name} ({config['level']}); each trained from scratch for {args.epochs} epochs "
             f"of {summary['images_per_epoch']} images with seeds {args.seeds}; test accuracy on the 10,000 test "
             "images.", "",
             "| network | predicted ms | test acc mean | +/- | architecture |", "|---|---:|---:|---:|---|"]
    lines += [f"| {e['name']} | {e['predicted_ms']:.4f} | {e['mean']:.4f} | {e['spread']:.4f} | "
              f"`{' '.join(e['ops'])}` |" for e in entries]
    lines += ["", f"Searched {summary['searched_mean_acc']:.4f} vs best random {best_random:.4f} "
                  f"(mean of randoms {summary['random_mean']:.4f})."]
    write_results("search_vs_random", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
