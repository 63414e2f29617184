"""Does the latency goal steer the search? The same space searched for a tight and a loose goal (latency loss
on) and with the latency loss off, on x86-cpu latencies from the database.

Goal (issue 3): each derived network's predicted latency within 15% of its goal or below it; the tight one faster
than the loose one; the run without latency loss picks costlier blocks. Accuracies are recorded next to latencies.

    .venv/bin/python bench/latency_control.py [--epochs 8] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tvmnas.data.datasets import load_search_data
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.compile import level_name
from tvmnas.measure.profile import tvm_version
from tvmnas.search.config import SearchConfig
from tvmnas.search.latency import table_from_db
from tvmnas.search.run import run_search
from tvmnas.space import load_space
from tvmnas.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--db", type=Path, default=Path.home() / ".cache" / "tvmnas" / "latency.db")
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=SearchConfig.epochs)
    parser.add_argument("--warmup-epochs", type=int, default=SearchConfig.warmup_epochs)
    parser.add_argument("--limit", type=int, help="training images to use (default: all)")
    parser.add_argument("--loss", default=SearchConfig.loss)
    parser.add_argument("--loss-lambda", type=float, default=SearchConfig.loss_lambda)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latency_control"))
    args = parser.parse_args()

    space, spec = load_space(args.space), load_target(args.target)
    level = level_name(args.tune_trials)
    with LatencyDB(args.db) as db:
        table = table_from_db(space, db, spec.fingerprint("local"), tvm_version(), level)
    span = table.max_ms - table.min_ms
    goals = {"tight": table.min_ms + 0.25 * span, "loose": table.min_ms + 0.6 * span}
    runs = [("tight", goals["tight"], args.loss), ("loose", goals["loose"], args.loss),
            ("no latency loss", goals["loose"], "none")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, goal, loss in runs:
            cfg = SearchConfig(space=args.space, target=args.target, latency_ms=round(goal, 4), level=level,
                               loss=loss, loss_lambda=args.loss_lambda, epochs=args.epochs,
                               warmup_epochs=args.warmup_epochs, limit=args.limit)
            data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction,
                                    cfg.seed, cfg.limit)
            start = time.perf_counter()
            result = run_search(cfg, space, table, data, Path(tmp) / name.replace(" ", "-"))
            entry = {"run": name, "loss": loss, "goal_ms": cfg.latency_ms, "predicted_ms": result.predicted_latency_ms,
                     "predicted_over_goal": result.predicted_latency_ms / cfg.latency_ms,
                     "valid_acc": result.valid_acc, "arch": list(result.arch_ops),
                     "seconds": time.perf_counter() - start}
            results.append(entry)
            print(json.dumps(entry), flush=True)
    tight, loose, free = results
    checks = {
        "tight_within_15pct_or_below": tight["predicted_over_goal"] <= 1.15,
        "loose_within_15pct_or_below": loose["predicted_over_goal"] <= 1.15,
        "tight_faster_than_loose": tight["predicted_ms"] < loose["predicted_ms"],
        "no_latency_loss_is_costliest": free["predicted_ms"] > max(tight["predicted_ms"], loose["predicted_ms"]),
    }
    summary = {"space": args.space, "target": args.target, "level": level, "epochs": args.epochs,
               "train_images": len(data.train), "reachable_ms": [table.min_ms, table.max_ms], "checks": checks,
               "command": f"python bench/latency_control.py --epochs {args.epochs} --loss {args.loss} "
                          f"--loss-lambda {args.loss_lambda}"
                          + (f" --limit {args.limit}" if args.limit else "")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
    lines = [f"## Latency control: {args.space} on {args.target} ({level}), {args.epochs} epochs of "
             f"{cfg.images_per_epoch or len(data.train)} images (from {len(data.train)})", "",
             f"Reachable predicted latency: {table.min_ms:.4f}-{table.max_ms:.4f} ms.", "",
             "| run | loss | goal ms | predicted ms | predicted/goal | valid acc | search s | architecture |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['run']} | {r['loss']} | {r['goal_ms']:.4f} | {r['predicted_ms']:.4f} | "
                     f"{r['predicted_over_goal']:.2f} | {r['valid_acc']:.3f} | {r['seconds']:.0f} | "
                     f"{' '.join(r['arch'])} |")
    lines += ["", "Checks: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()), "",
              f"Command: `{summary['command']}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
