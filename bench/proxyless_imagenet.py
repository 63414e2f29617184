"""`proxyless-imagenet` end to end on this CPU (issue 14): profile every candidate on x86 (tuned), a short search
and training on a generated ImageFolder of 224x224 JPEG files, export to a tuned bundle, run it natively, and the
exported network's measured latency against its prediction.

The generated images carry no signal: accuracy means nothing here, the pipeline and the latency do. On ImageNet a
user runs the same commands with `--data /path/to/imagenet` (see the README).

    .venv/bin/python bench/proxyless_imagenet.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DB, REPO, command_line, write_results

from tvmnas.space import load_space
from tvmnas.deploy.bundle import MANIFEST, SAMPLE_FILE

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]
RUNNER = REPO / "build" / "native" / "tvmnas-run"


def run(*argv) -> float:
    start = time.perf_counter()
    subprocess.run([*TVMNAS, *map(str, argv)], check=True, cwd=REPO)
    return time.perf_counter() - start


def image_folder(root: Path, per_class: int, classes: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", max(1, per_class // 4))):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(small).resize((256, 256), Image.BILINEAR).save(root / split / f"class{c}" / f"{i}.jpg")
    return root


def profile_cost(space, db_path: Path, tune_trials: int, wall_s: float) -> dict:
    """The profile's cost: this run's wall time, or, where the database already held every candidate (a rerun),
    what its rows recorded (tuning and compiling; their timing run is not kept per row) and when."""
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.level import level_name
    from tvmnas.measure.method import latency_scope
    from tvmnas.targets import load_target

    scope = latency_scope(load_target("x86-cpu"), "local", level_name(tune_trials))
    with LatencyDB(db_path) as db:
        rows = [db.get(scope, c.key, c.shape_text) for c in space.candidates()]
    recorded = sum(r.tune_s + r.compile_s for r in rows)
    if wall_s >= recorded:  # measured in this run
        return {"profile_s": wall_s, "profile_from_rows": False, "profile_note": ""}
    return {"profile_s": recorded, "profile_from_rows": True, "profile_rerun_s": wall_s,
            "profiled_at": max(r.measured_at for r in rows),
            "profile_note": f", tuning and compiling as recorded in the database on "
                            f"{max(r.measured_at for r in rows)[:10]}, timing not included"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--calibrate", type=int, default=10,
                        help="whole networks timed to fit the space's composition (0: none)")
    parser.add_argument("--latency-ms", type=float, default=None,
                        help="the search's goal (default: the middle of the reachable range)")
    args = parser.parse_args()

    space = load_space("proxyless-imagenet")
    profile_s = run("profile", "--space", space.name, "--target", "x86-cpu", "--db", args.db,
                    "--tune-trials", args.tune_trials)
    profile = profile_cost(space, args.db, args.tune_trials, profile_s)
    calibrate_s = run("profile", "--space", space.name, "--target", "x86-cpu", "--db", args.db,
                      "--tune-trials", args.tune_trials, "--calibrate", args.calibrate) if args.calibrate else None
    with tempfile.TemporaryDirectory(prefix="tvmnas-pxl-") as tmp:
        tmp = Path(tmp)
        data, out = image_folder(tmp / "images", 32), tmp / "run"
        goal = args.latency_ms
        if goal is None:
            from tvmnas.measure.level import level_name
            from tvmnas.measure.method import latency_scope
            from tvmnas.search.latency import load_table
            from tvmnas.targets import load_target

            scope = latency_scope(load_target("x86-cpu"), "local", level_name(args.tune_trials))
            table = load_table(args.db, space, scope)
            goal = round((table.min_ms + table.max_ms) / 2, 3)
        search_s = run("search", "--space", space.name, "--target", "x86-cpu", "--db", args.db, "--latency-ms", goal,
                       "--tune-trials", args.tune_trials, "--data", data, "--epochs", "2", "--warmup-epochs", "1",
                       "--images-per-epoch", "64", "--batch-size", "16", "--workers", "2", "--out", out)
        train_s = run("train", "--run", out, "--epochs", "1", "--batch-size", "16", "--workers", "2")
        export_s = run("export", "--run", out, "--target", "x86-cpu", "--db", args.db)
        bundle = out / "bundle-x86-cpu"
        manifest = json.loads((bundle / MANIFEST).read_text())
        native = None
        if RUNNER.exists():
            proc = subprocess.run([str(RUNNER), str(bundle), str(bundle / SAMPLE_FILE), "--json"],
                                  capture_output=True, text=True, check=True)
            native = json.loads(proc.stdout)
    latency = manifest["latency"]
    candidates = len(space.candidates())
    composition = latency.get("predicted_composition")
    summary = {**profile, "candidates": candidates, "profile_s_per_candidate": profile["profile_s"] / candidates,
               "calibrate_s": calibrate_s, "calibration_networks": composition["networks"] if composition else 0,
               "predicted_ms": latency["predicted_ms"], "measured_ms": latency["measured_ms"],
               "error": latency["measured_ms"] / latency["predicted_ms"] - 1,
               "within_10pct": abs(latency["measured_ms"] / latency["predicted_ms"] - 1) <= 0.1,
               "native_ms": native["latency_ms"] if native else None, "goal_ms": goal, "level": manifest["level"],
               "search_s": search_s, "train_s": train_s, "export_s": export_s}
    lines = [f"## proxyless-imagenet end to end on x86-cpu ({manifest['level']})", "",
             "| step | seconds |", "|---|---:|", f"| profile ({candidates} candidates{profile['profile_note']}) | "
             f"{profile['profile_s']:.0f} |"]
    if calibrate_s is not None:
        lines += [f"| calibrate ({args.calibrate} whole networks) | {calibrate_s:.0f} |"]
    lines += [f"| search (2 epochs x 64 generated images) | {search_s:.0f} |", f"| train (1 epoch) | {train_s:.0f} |",
              f"| export | {export_s:.0f} |", "",
              f"Exported network (goal {goal:g} ms): predicted {latency['predicted_ms']:.3f} ms, measured "
              f"{latency['measured_ms']:.3f} ms ({summary['error']:+.1%})"
              + (f"; native runner {native['latency_ms']:.3f} ms" if native else "") + ".",
              f"Profile: {profile['profile_s'] / candidates:.1f} s per candidate"
              + (" (tuning and compiling, as recorded)." if profile["profile_from_rows"]
                 else " (tuning, compiling, timing).")]
    if composition and composition["networks"] == 1:
        lines += [f"Prediction scaled x{composition['scale']:.3f} by the space's reference network."]
    elif composition:
        lines += [f"Prediction calibrated on {composition['networks']} whole networks: intercept "
                  f"{composition['intercept_ms']:.3f} ms, scale {composition['scale']:.3f}, "
                  f"{composition['ms_per_weight_mb']:.4f} ms per MB of weights (left-out error "
                  f"{composition['loo_mean_abs_error']:.1%})."]
    write_results("proxyless_imagenet", summary, [{"manifest_latency": latency, "native": native,
                                                   "arch": manifest["arch"]}], lines, command_line())


if __name__ == "__main__":
    main()
