"""Specialization: search the same space for two targets, then time each target's winner on every target.

The paper's claim: one network for all hardware leaves speed on the table; each target's own winner should be the
fastest there, at similar accuracy. Each target is profiled (latency database), searched for a goal at the same
place in its own reachable range, its winner trained briefly, and every winner compiled at each target's level
and timed on that target (x86: this CPU; ARM: the emulated boards through the tracker).

    tvmnas board up --emulated aarch64 --count 2
    python bench/specialization.py --tracker 127.0.0.1:PORT --key arm-aarch64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tvmnas.arch import load_arch
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.compile import build_module, import_torch, level_name
from tvmnas.measure.profile import ProfileSettings, tuning_dir, tvm_version
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner, parse_host_port
from tvmnas.model.network import Network
from tvmnas.search.latency import table_from_db
from tvmnas.space import load_space
from tvmnas.targets import load_target

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--tracker", required=True, metavar="HOST:PORT", help="tracker of the emulated boards")
    parser.add_argument("--key", default="arm-aarch64")
    parser.add_argument("--x86-trials", type=int, default=8, help="tuning trials on x86 (default 8)")
    parser.add_argument("--arm-trials", type=int, default=0,
                        help="tuning trials on the emulated boards (default 0: each trial there costs seconds)")
    parser.add_argument("--goal-position", type=float, default=0.35,
                        help="latency goal = min + this x (max - min) of each target's reachable range")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--db", type=Path, default=Path.home() / ".cache" / "tvmnas" / "latency.db")
    parser.add_argument("--work", type=Path, default=Path("runs/specialization"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/specialization"))
    args = parser.parse_args()

    host, port = parse_host_port(args.tracker, "--tracker")
    arm_endpoint = RpcEndpoint(host, port, args.key, 30.0)
    targets = {"x86-cpu": (args.x86_trials, [], LocalRunner()),
               "arm-aarch64": (args.arm_trials, ["--tracker", args.tracker, "--key", args.key],
                               RpcRunner(arm_endpoint))}
    space = load_space(args.space)
    winners = {}
    for name, (trials, remote, runner) in targets.items():
        common = ["--space", args.space, "--target", name, "--tune-trials", str(trials), "--db", str(args.db),
                  *remote]
        run([*TVMNAS, "profile", *common])
        spec = load_target(name)
        with LatencyDB(args.db) as db:
            table = table_from_db(space, db, spec.fingerprint(runner.device_label), tvm_version(),
                                  level_name(trials))
        goal = table.min_ms + args.goal_position * (table.max_ms - table.min_ms)
        run_dir = args.work / name
        if not (run_dir / "summary.json").exists():
            resume = ["--resume", str(run_dir)] if (run_dir / "checkpoint.pt").exists() else []
            run([*TVMNAS, "search", *common, "--latency-ms", f"{goal:.6g}", "--out", str(run_dir), *resume])
        if not (run_dir / "train" / "summary.json").exists():
            run([*TVMNAS, "train", "--run", str(run_dir), "--epochs", str(args.train_epochs)])
        search = json.loads((run_dir / "summary.json").read_text())
        trained = json.loads((run_dir / "train" / "summary.json").read_text())
        winners[name] = {"arch": load_arch(run_dir / "arch.json"), "goal_ms": goal,
                         "search_valid_acc": search["valid_acc"], "test_acc": trained["test_acc"],
                         "range_ms": [table.min_ms, table.max_ms]}

    cells = {}
    shape = (1, space.input_channels, space.input_size, space.input_size)
    with tempfile.TemporaryDirectory(prefix="tvmnas-spec-") as tmp:
        for winner_of, info in winners.items():
            torch.manual_seed(0)
            net = Network(space, info["arch"]).eval()
            for name, (trials, _remote, runner) in targets.items():
                spec = load_target(name)
                built = build_module(import_torch(net, shape), spec, trials,
                                     tuning_dir(args.db, spec, runner.device_label), runner,
                                     Path(tmp) / f"{winner_of}-on-{name}.so", 0)
                timed = runner.measure(built.lib_path, spec.device, shape, ProfileSettings().timing,
                                       spec.runtime_threads)
                if timed.error:
                    raise SystemExit(f"timing {winner_of}'s winner on {name} failed: {timed.error}")
                cells[(winner_of, name)] = timed.median_ms
                print(f"{winner_of} winner on {name}: {timed.median_ms:.4f} ms", flush=True)

    names = list(targets)
    payload = {"space": args.space, "goal_position": args.goal_position,
               "levels": {n: level_name(targets[n][0]) for n in names},
               "winners": {n: {**{k: v for k, v in w.items() if k != "arch"}, "arch": list(w["arch"].ops)}
                           for n, w in winners.items()},
               "measured_ms": {f"{w} winner": {t: cells[(w, t)] for t in names} for w in names},
               "own_winner_fastest": {t: min(names, key=lambda w: cells[(w, t)]) == t for t in names}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [f"# Specialization on `{args.space}`: each target's winner timed on every target", "",
             "| winner searched for | arch | test acc | " + " | ".join(f"on {t} (ms)" for t in names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    for w in names:
        row = []
        for t in names:
            best = min(names, key=lambda x: cells[(x, t)]) == w
            ratio = cells[(w, t)] / cells[(t, t)]
            row.append(f"{'**' if best else ''}{cells[(w, t)]:.3f}{'**' if best else ''} ({ratio:.2f}x own)")
        lines.append(f"| {w} | `{' '.join(winners[w]['arch'].ops)}` | {winners[w]['test_acc']:.3f} | "
                     + " | ".join(row) + " |")
    lines += ["", "Bold: fastest on that target. Levels: " + ", ".join(f"{t} {payload['levels'][t]}" for t in names)
              + f". Goals at {args.goal_position:g} of each target's reachable range; winners trained "
              f"{args.train_epochs} epoch(s). ARM timings come from qemu-user emulated boards (about 100x slower "
              "than native, and not ARM's cost model): they show the flow, not what a real board prefers."]
    for t in names:
        lines.append(f"- {t}: own winner fastest there: {payload['own_winner_fastest'][t]}")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
