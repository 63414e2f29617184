"""Profile a space on emulated aarch64 boards through a tracker: wall time with one board vs several, and the
fault case (one board killed in the middle of the run).

Each run starts its own boards (`tvmnas board up`, the cached root filesystem) and a fresh latency database, so
every candidate is compiled here and timed on the boards; tuning records are shared (cross-compiled kernels, so
tuning is not redone). Emulated boards time ARM code about 100x slower than this CPU runs x86 code: the numbers
show the flow and its parallelism, not ARM speed.

    python bench/farm_profile.py --boards 1 2 [--tune-trials 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import command_line, write_results

from tvmnas.board import farm, rootfs
from tvmnas.procs import stop_group
from tvmnas.latency_db import LatencyDB

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]


def profile(state: farm.FarmState, db: Path, trials: int, space: str, kill_after_s: float | None) -> dict:
    host, port = state.tracker
    cmd = [*TVMNAS, "profile", "--space", space, "--target", "arm-aarch64", "--tracker", f"{host}:{port}",
           "--key", state.key, "--tune-trials", str(trials), "--db", str(db)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    if kill_after_s is not None:
        try:
            proc.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            killed = state.server_pids[-1]
            stop_group(killed, "rpc_server")
    out, err = proc.communicate()
    wall_s = time.perf_counter() - start
    with LatencyDB(db) as handle:
        rows = handle.rows()
    return {"boards": len(state.server_pids), "wall_s": round(wall_s, 1), "exit": proc.returncode,
            "compile_s": round(sum(r.compile_s + r.tune_s for r in rows), 1),
            "rows": len(rows), "rows_ok": sum(r.ok for r in rows), "rows_flagged": sum(r.flag is not None
                                                                                      for r in rows),
            "killed_board_after_s": kill_after_s if killed else None,
            "summary": (out.strip().splitlines() or [""])[0], "stderr_tail": err.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--tune-trials", type=int, default=0)
    parser.add_argument("--kill-after", type=float, default=20.0, metavar="S",
                        help="the fault run: kill one of two boards this many seconds into the profile")
    args = parser.parse_args()

    root = rootfs.create_rootfs()
    runs = []
    plans = [(n, None) for n in args.boards] + [(2, args.kill_after)]
    with tempfile.TemporaryDirectory(prefix="tvmnas-farm-bench-") as tmp:
        tuning = Path(tmp) / "shared-tuning"
        for i, (count, kill) in enumerate(plans):
            state_file = Path(tmp) / f"farm{i}.json"
            state = farm.up(root, farm.FarmSettings(count=count, key="bench-farm"), state_file)
            try:
                work = Path(tmp) / f"run{i}"
                work.mkdir()
                if tuning.exists():  # every run uses the first run's tuning records (same key, same fingerprint)
                    shutil.copytree(tuning, work / "tuning")
                result = profile(state, work / "latency.db", args.tune_trials, args.space, kill)
                if not tuning.exists() and (work / "tuning").exists():
                    shutil.copytree(work / "tuning", tuning)
            finally:
                farm.down(root, state_file)
            print(json.dumps(result))
            runs.append(result)
    one = next((r["wall_s"] for r in runs if r["boards"] == 1 and r["killed_board_after_s"] is None), None)
    summary = {"space": args.space, "target": "arm-aarch64 (emulated, qemu-user)", "tune_trials": args.tune_trials,
               "host_cores": os.cpu_count(), "wall_s": {f"{r['boards']}{'-killed' if r['killed_board_after_s'] else ''}":
                                                       r["wall_s"] for r in runs},
               "all_rows_ok": all(r["rows_ok"] == r["rows"] for r in runs)}
    lines = [f"# Farm profile: `{args.space}` on emulated aarch64 boards ({args.tune_trials} tuning trials)", "",
             "| boards | fault | wall (s) | vs 1 board | compile + tune here (s) | rows ok / written | flagged "
             "| exit |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        fault = f"one board killed at {r['killed_board_after_s']:g} s" if r["killed_board_after_s"] else "-"
        ratio = f"{one / r['wall_s']:.2f}x" if one else "-"
        lines.append(f"| {r['boards']} | {fault} | {r['wall_s']:.1f} | {ratio} | {r['compile_s']:.1f} | "
                     f"{r['rows_ok']} / {r['rows']} | "
                     f"{r['rows_flagged']} | {r['exit']} |")
    lines += ["", f"This machine: {os.cpu_count()} cores; every board is a qemu-user process on them, and the "
              "candidates are compiled here (on the same cores) while the boards time the ones already built, so "
              "the wall time cannot drop below the compile + tune column however many boards there are. "
              "Flagged: rows the protocol marked noisy (slow phases of the board, or an estimate that moves "
              "between quarters of its run)."]
    write_results("farm_profile", summary, runs, lines, command_line())


if __name__ == "__main__":
    main()
