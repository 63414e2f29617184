"""Train once, specialize for another device (issue 11): one supernet searched on x86 (a finished run), its
architecture parameters retrained alone against ARM's latency table (`tvmnas specialize`, emulated aarch64 boards
through a tracker), and both winners timed on both targets, each target's pair in one interleaved run.

The time saved: a second search for ARM costs what the x86 search cost (its weights and alphas trained again);
specializing costs its alpha-only phase.

    tvmnas board up --emulated aarch64 --count 2
    python bench/specialization.py --run runs/demo --tracker 127.0.0.1:PORT --key arm-aarch64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import DEFAULT_DB, REPO, command_line, write_results

from tvmnas.arch import load_arch
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.level import level_name, parse_level
from tvmnas.measure.method import latency_scope
from tvmnas.measure.protocol import Protocol
from tvmnas.measure.reference import REFERENCE_FILE, build_reference, read_anchor
from tvmnas.measure.runner.base import Batch
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner, parse_host_port
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.model.network import Network
from tvmnas.run_folder import SearchRun
from tvmnas.search.latency import table_from_db
from tvmnas.space import load_space
from tvmnas.targets import load_target

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]
PAIR = Protocol(windows=40, reference_every=1, min_span_s=5.0)  # two networks against the reference


def tvmnas(*argv) -> None:
    subprocess.run([*TVMNAS, *map(str, argv)], check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished x86 search")
    parser.add_argument("--tracker", required=True, metavar="HOST:PORT", help="tracker of the emulated boards")
    parser.add_argument("--key", default="arm-aarch64")
    parser.add_argument("--arm-trials", type=int, default=0,
                        help="tuning trials on the emulated boards (default 0: each trial there costs seconds)")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    args = parser.parse_args()

    run = SearchRun(args.run)
    config = json.loads(run.config.read_text())
    searched = json.loads(run.summary.read_text())
    space = load_space(config["space"])
    host, port = parse_host_port(args.tracker, "--tracker")
    arm = RpcRunner(RpcEndpoint(host, port, args.key, 30.0))
    remote = ["--tracker", args.tracker, "--key", args.key, "--tune-trials", args.arm_trials]
    tvmnas("profile", "--space", space.name, "--target", "arm-aarch64", "--db", args.db, *remote)
    specs = {"x86-cpu": load_target(config["target"]), "arm-aarch64": load_target("arm-aarch64")}
    runners = {"x86-cpu": LocalRunner(), "arm-aarch64": arm}
    levels = {"x86-cpu": config["level"], "arm-aarch64": level_name(args.arm_trials)}
    scopes = {t: latency_scope(specs[t], runners[t].device_label, levels[t]) for t in specs}
    with LatencyDB(args.db) as db:
        tables = {t: table_from_db(space, db, scopes[t]) for t in specs}
        anchors = {t: read_anchor(db, scopes[t]) for t in specs}
    x86 = tables["x86-cpu"]
    position = (config["latency_ms"] - x86.min_ms) / (x86.max_ms - x86.min_ms)
    arm_goal = round(tables["arm-aarch64"].min_ms + position * (tables["arm-aarch64"].max_ms
                                                                  - tables["arm-aarch64"].min_ms), 4)
    with tempfile.TemporaryDirectory(prefix="tvmnas-spec-") as tmp:
        tmp = Path(tmp)
        tvmnas("specialize", "--run", args.run, "--target", "arm-aarch64", "--latency-ms", arm_goal, "--db", args.db,
               "--out", tmp / "arm", *remote)
        arm_run = SearchRun(tmp / "arm")
        special = json.loads(arm_run.summary.read_text())
        winners = {"x86-cpu": load_arch(run.arch), "arm-aarch64": load_arch(arm_run.arch)}
        shape = (1, space.input_channels, space.input_size, space.input_size)
        measured = {}
        for target, spec in specs.items():
            libs = []
            for winner_of, arch in winners.items():
                torch.manual_seed(0)
                built = build_module(import_torch(fold_batchnorm(Network(space, arch)), shape), spec,
                                     parse_level(levels[target]),
                                     tuning_dir(args.db, spec, runners[target].device_label), runners[target],
                                     tmp / f"{winner_of}-on-{target}.so")
                libs.append(built.lib_path)
            ref = build_reference(spec, tmp / f"{target}-{REFERENCE_FILE}")
            run = runners[target].measure(Batch(tuple(libs), (shape, shape), spec.device, spec.runtime_threads, ref,
                                                anchors[target]), PAIR)
            for winner_of, est in zip(winners, run.estimates):
                if est.error:
                    raise SystemExit(f"{winner_of}'s winner on {target}: {est.error}")
                measured[(winner_of, target)] = est.latency_ms
    saved = searched["search_seconds"] - special["specialize_seconds"]
    names = list(specs)
    summary = {"space": space.name, "x86_goal_ms": config["latency_ms"], "arm_goal_ms": arm_goal,
               "search_s": searched["search_seconds"], "specialize_s": special["specialize_seconds"],
               "saved_s_per_extra_target": saved,
               "saved_share": saved / searched["search_seconds"],
               "own_winner_fastest": {t: min(names, key=lambda w: measured[(w, t)]) == t for t in names},
               "levels": levels}
    entries = [{"winner_of": w, "arch": list(winners[w].ops),
                "valid_acc_supernet": (searched if w == "x86-cpu" else special)["valid_acc"],
                "measured_ms": {t: measured[(w, t)] for t in names}} for w in names]
    lines = [f"## Train once, specialize: {space.name} searched on x86, specialized for ARM", "",
             f"x86 search: {searched['search_seconds']:.0f} s (goal {config['latency_ms']:g} ms); ARM "
             f"specialization: {special['specialize_seconds']:.0f} s (goal {arm_goal:g} ms, the same place in ARM's "
             f"reachable range), no weight trained: **{saved:.0f} s saved** against a second search "
             f"({summary['saved_share']:.0%}).", "",
             "| winner for | architecture | valid acc (supernet weights) | " + " | ".join(f"on {t} ms" for t in names)
             + " |", "|---|---|---:|" + "---:|" * len(names)]
    for e in entries:
        lines.append(f"| {e['winner_of']} | `{' '.join(e['arch'])}` | {e['valid_acc_supernet']:.4f} | "
                     + " | ".join(f"{e['measured_ms'][t]:.4f}" for t in names) + " |")
    lines += ["", "Levels: " + ", ".join(f"{t} {levels[t]}" for t in names) + ". ARM timings come from qemu-user "
              "emulated boards: they show the flow, not what a real board prefers."]
    write_results("specialization", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
