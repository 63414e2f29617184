"""`make demo` as a new user runs it: a fresh clone, a fresh venv, empty caches (a new HOME: no pip cache, no
latency database, no tuning records). Records the wall time of every step and what the search ended with.

Results: demo_time.{json,md} (summary: fresh_machine_s, the steps' seconds, warning_lines: lines of the tvmnas
verbs' output that carry a library or Python warning; the goal is none) and demo_search.{json,md} (summary:
top_probabilities, stable_last_epochs, the goal, the derived latency and its share of the goal).
Debian packages (the data set, CMake, g++) count as installed: they come with the machine image here.

    .venv/bin/python bench/demo_time.py [--adopt]   (--adopt: keep its cache and run folder for the other benches)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO, command_line, write_results
from tvmnas.deploy.bundle import MANIFEST
from tvmnas.run_folder import SearchRun

# a Python warning (`...Warning: ...`) or a library's warning log line (xgboost's `WARNING: ...`)
WARNING = re.compile(r"\w+Warning: |\bWARNING\b")
# the step each command line that make echoes starts (the first line holding the marker)
STEPS = (("install", "pip install"), ("runner", "cmake -S"), ("profile", "tvmnas profile"),
         ("search", "tvmnas search"), ("train", "tvmnas train"), ("export", "tvmnas export"),
         ("native run", "build/native/tvmnas-run runs/"), ("report", "tvmnas report"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adopt", action="store_true",
                        help="afterwards, use its latency database, tuning records and runs/demo here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvmnas-demo-") as tmp:
        clone, home = Path(tmp) / "clone", Path(tmp) / "home"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        env.update(HOME=str(home), PIP_NO_CACHE_DIR="1")
        started = time.perf_counter()
        marks, lines, first_verb = [], [], None
        proc = subprocess.Popen(["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            now = time.perf_counter() - started
            lines.append(line)
            for name, marker in STEPS:
                if marker in line and name not in [m[0] for m in marks]:
                    marks.append((name, now))
                    if name == "profile":
                        first_verb = len(lines) - 1
        total = time.perf_counter() - started
        # from the first tvmnas verb on (pip's own notices during the install are not the tool's output)
        warned = [line.strip() for line in lines[first_verb or 0:] if WARNING.search(line)]
        if proc.wait() != 0:
            raise SystemExit("make demo failed:\n" + "".join(lines[-30:]))
        ends = [t for _, t in marks[1:]] + [total]
        seconds = {name: round(end - start, 1) for (name, start), end in zip(marks, ends)}
        seconds["install"] = round(marks[0][1] if marks else 0.0, 1) + seconds.get("install", 0.0)
        run = clone / "runs" / "demo"
        files = SearchRun(run)
        search = json.loads(files.summary.read_text())
        train = json.loads(files.train.summary.read_text())
        manifest = json.loads((files.bundle("x86-cpu") / MANIFEST).read_text())
        with sqlite3.connect(home / ".cache" / "tvmnas" / "latency.db") as db:  # the profile's own costs
            costs = db.execute("SELECT COUNT(*), AVG(tune_s), AVG(compile_s) FROM latency WHERE level LIKE 'tuned-%' "
                               "AND error IS NULL").fetchone()
        if args.adopt:
            cache, fresh = Path.home() / ".cache" / "tvmnas", home / ".cache" / "tvmnas"
            for old in [*cache.glob("latency.db*"), cache / "tuning"]:  # the boards' root filesystem stays
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
            cache.mkdir(parents=True, exist_ok=True)
            for new in [*fresh.glob("latency.db*"), fresh / "tuning"]:
                (shutil.copytree if new.is_dir() else shutil.copy2)(new, cache / new.name)
            shutil.rmtree(REPO / "runs" / "demo", ignore_errors=True)
            shutil.copytree(run, REPO / "runs" / "demo")
    cmd = command_line()
    lat = manifest["latency"]
    write_results("demo_time", {"fresh_machine_s": round(total, 1), "goal_s": 900, "within_goal": total <= 900,
                                "steps_s": seconds,
                                "profile_candidates": costs[0], "tune_s_per_candidate": costs[1],
                                "compile_s_per_candidate": costs[2],
                                "tune_and_compile_s_per_candidate": costs[1] + costs[2],
                                "warning_lines": len(warned), "warnings": warned[:10],
                                "test_acc": train["test_acc"],
                                # the export's measurement against the table's prediction (raw: as timed; speed:
                                # the reference then over its anchor in the profile)
                                "export_latency": {k: lat.get(k) for k in (
                                    "predicted_ms", "measured_ms", "measured_raw_ms", "speed", "flag",
                                    "agreement")}},
                  ["".join(lines[-12:])],
                  [f"## `make demo` on a fresh clone with empty caches: {total / 60:.1f} min (goal 15 min)", "",
                   "| step | seconds |", "|---|---:|"] + [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
                  + ["", f"Profile: {costs[0]} candidates, {costs[1]:.1f} s tuning + {costs[2]:.1f} s compiling "
                         f"each. Test accuracy {train['test_acc']:.4f}; measured {lat['measured_ms']:.4f} ms against "
                         f"{lat['predicted_ms']:.4f} ms predicted (as timed {lat['measured_raw_ms']:.4f} ms, the "
                         f"reference at {lat['speed']:.2f}x its profile's time). Warning lines in the verbs' output: "
                         f"{len(warned)}."], cmd)
    write_results("demo_search", {key: search[key] for key in (
        "top_probabilities", "stable_last_epochs", "latency_goal_ms", "predicted_latency_ms", "goal_share", "arch",
        "valid_acc", "search_seconds", "min_reachable_ms", "max_reachable_ms")}, [],
                  ["## The demo's search (fresh `make demo`)", "",
                   f"Architecture `{' '.join(search['arch'])}`: predicted {search['predicted_latency_ms']:.4f} ms, "
                   f"{search['goal_share']:.0%} of the {search['latency_goal_ms']:g} ms goal (the space reaches "
                   f"{search['min_reachable_ms']:.4f}-{search['max_reachable_ms']:.4f} ms); derived network the "
                   f"same over the last two epochs: {search['stable_last_epochs']}.", "",
                   "| layer | top path probability |", "|---:|---:|"]
                  + [f"| {i} | {p:.3f} |" for i, p in enumerate(search["top_probabilities"])], cmd)


if __name__ == "__main__":
    main()
