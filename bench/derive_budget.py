"""Hard latency budgets from one searched supernet (issue 11): for each goal, the derived network's predicted
latency as a share of the goal, (a) by `tvmnas derive` (the most probable architecture under the goal, exact
dynamic programme over the search's final alphas) and (b) by `tvmnas specialize` on the same target (a short
alpha-only phase with the new goal, then the same derivation; no weight trained).
Goal: the derived predicted latency in [0.9, 1.0] x goal. The goals default to 25%, 50% and 75% of the way across
the latency range the search's table reaches (`--fractions`), so they bind on any CPU; `--goals` names them in ms.

    .venv/bin/python bench/derive_budget.py --run runs/demo [--goals 0.08 0.12 0.16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import DEFAULT_DB, REPO, command_line, write_results
from tvmnas.run_folder import SearchRun

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]


def run(*argv) -> None:
    subprocess.run([*TVMNAS, *map(str, argv)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--goals", type=float, nargs="+", help="latency goals in ms (default: see --fractions)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                        help="goals as fractions of the way from the smallest to the largest reachable latency")
    args = parser.parse_args()

    config = json.loads(SearchRun(args.run).config.read_text())
    entries = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-derive-") as tmp:
        goals = args.goals
        if goals is None:  # the reachable range, from a derivation at the searched goal
            out = Path(tmp) / "range"
            run("derive", "--run", args.run, "--latency-ms", config["latency_ms"], "--db", args.db, "--out", out)
            low, high = json.loads(SearchRun(out).summary.read_text())["reachable_ms"]
            goals = [round(low + f * (high - low), 4) for f in args.fractions]
        for goal in goals:
            for how in ("derive", "specialize"):
                out = Path(tmp) / f"{how}-{goal:g}"
                extra = ["--target", config["target"]] if how == "specialize" else []
                run(how, "--run", args.run, "--latency-ms", goal, "--db", args.db, "--out", out, *extra)
                s = json.loads(SearchRun(out).summary.read_text())
                if how == "derive":
                    reachable = s["reachable_ms"]
                entries.append({"goal_ms": goal, "how": how, "predicted_ms": s["predicted_latency_ms"],
                                "goal_share": s["goal_share"], "arch": s["arch"],
                                "in_band": 0.9 <= s["goal_share"] <= 1.0,
                                "reachable": goal * 0.9 <= reachable[1]})
                print(entries[-1], flush=True)
    summary = {"searched_goal_ms": config["latency_ms"], "reachable_ms": reachable,
               "goals": [{"goal_ms": e["goal_ms"], "derived_ms": e["predicted_ms"], "how": e["how"]} for e in entries],
               "goal_share": {f"{e['how']}_{e['goal_ms']:g}": e["goal_share"] for e in entries},
               "in_band_of_reachable": {how: [sum(e["in_band"] for e in entries if e["how"] == how and e["reachable"]),
                                              sum(e["reachable"] for e in entries if e["how"] == how)]
                                        for how in ("derive", "specialize")}}
    lines = [f"## Latency budgets from one supernet searched at {config['latency_ms']:g} ms ({config['space']}, "
             f"{config['target']})", "", f"Reachable: {reachable[0]:.4f}-{reachable[1]:.4f} ms (a goal whose band "
             "[0.9, 1.0] x goal lies above the largest reachable latency gets the unconstrained argmax).", "",
             "| goal ms | how | predicted ms | share of goal | in [0.9, 1.0] |", "|---:|---|---:|---:|---|"]
    lines += [f"| {e['goal_ms']:g} | {e['how']} | {e['predicted_ms']:.4f} | {e['goal_share']:.3f} | "
              f"{('yes' if e['in_band'] else 'no') if e['reachable'] else 'unreachable'} |" for e in entries]
    write_results("derive_budget", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
