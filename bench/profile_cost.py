"""How long `tvmnas profile` takes for each built-in space on this machine, from nothing (issue 19): a fresh latency
database and tuning folder per space, so no record is reused; then the same profile again at once (what a rerun
costs: nothing to tune or measure). Per space: candidates, wall seconds, tuning and compiling seconds per candidate
(from the rows the profile wrote), and the measuring time (the rest). Run it on an idle machine: the measurements
themselves are timed.

    .venv/bin/python bench/profile_cost.py [--spaces fashion-mnist cluttered-fashion-64 proxyless-imagenet]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, command_line, commit, results_name, write_results

from tvmnas.latency_db import LatencyDB, now_utc
from tvmnas.measure.level import DEFAULT_TUNE_TRIALS
from tvmnas.measure.reference import REFERENCE_LEVEL

SPACES = ("fashion-mnist", "cluttered-fashion-64", "proxyless-imagenet")


def profile(space: str, db: Path, trials: int) -> float:
    """Wall seconds of one `tvmnas profile` (x86-cpu) into `db`."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tvmnas.cli", "profile", "--space", space, "--target", "x86-cpu",
                           "--db", str(db), "--tune-trials", str(trials)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, TVMNAS_CACHE=str(db.parent)))
    if proc.returncode != 0:
        raise SystemExit(f"profile of {space} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="*", default=list(SPACES))
    parser.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS)
    args = parser.parse_args()

    entries = []
    for space in args.spaces:
        with tempfile.TemporaryDirectory(prefix="tvmnas-profile-cost-") as tmp:
            db = Path(tmp) / "latency.db"
            wall_s = profile(space, db, args.tune_trials)
            rerun_s = profile(space, db, args.tune_trials)
            with LatencyDB(db) as opened:
                rows = [r for r in opened.rows() if r.level != REFERENCE_LEVEL]  # candidates, not the anchor
        tune_s, compile_s = sum(r.tune_s for r in rows), sum(r.compile_s for r in rows)
        entries.append({"space": space, "commit": commit(), "date": now_utc(), "candidates": len(rows),
                        "failed": sum(1 for r in rows if not r.ok),
                        "wall_s": wall_s, "rerun_s": rerun_s, "tune_s": tune_s, "compile_s": compile_s,
                        "measure_and_rest_s": wall_s - tune_s - compile_s,
                        "wall_s_per_candidate": wall_s / max(1, len(rows)),
                        "kernels_tuned": sum(r.tasks_tuned for r in rows)})
        print(json.dumps(entries[-1]), flush=True)
    # the spaces this run did not profile keep their rows from this machine's last run at the same level
    earlier = RESULTS / f"{results_name('profile_cost')}.json"
    if earlier.exists():
        recorded = json.loads(earlier.read_text())
        if recorded["summary"].get("tune_trials") == args.tune_trials:
            entries = [e for e in recorded["entries"] if e["space"] not in args.spaces] + entries
    summary = {"tune_trials": args.tune_trials,
               "profile_s": {e["space"]: e["wall_s"] for e in entries},
               "s_per_candidate": {e["space"]: e["wall_s_per_candidate"] for e in entries},
               "rerun_s": {e["space"]: e["rerun_s"] for e in entries}}
    lines = [f"## `tvmnas profile` from nothing, per space (x86-cpu, tuned-{args.tune_trials})", "",
             "| space | candidates | wall s | s per candidate | tuning s | compiling s | measuring and rest s | "
             "kernels tuned | rerun s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {e['space']} | {e['candidates']} | {e['wall_s']:.0f} | {e['wall_s_per_candidate']:.1f} | "
              f"{e['tune_s']:.0f} | {e['compile_s']:.0f} | {e['measure_and_rest_s']:.0f} | {e['kernels_tuned']} | "
              f"{e['rerun_s']:.0f} |" for e in entries]
    lines += ["", "Each space starts from an empty database and tuning folder (nothing reused between spaces); "
              "the rerun is the same command again. A run with `--spaces` keeps the other spaces' rows of this "
              "machine's last run (their own commit and date in the entries)."]
    write_results("profile_cost", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
