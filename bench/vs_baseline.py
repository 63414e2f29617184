"""Searched networks vs a hand-designed MobileNetV2-style network on the same space (every layer mb_k3_e6),
trained the same way (the searched run's training settings) and compiled the same way (tuned, records from the
target's database), timed in one process. Accuracy is on the held-out test set.

Goal (issue 4, from the paper): the searched network about 1.8x faster at similar accuracy.

    .venv/bin/python bench/vs_baseline.py --run runs/demo [--also ARCH_JSON ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import DEFAULT_DB, command_line, write_results

from tvmnas.arch import Arch, load_arch
from tvmnas.data.datasets import load_search_data
from tvmnas.deploy.bundle import MANIFEST, read_manifest
from tvmnas.deploy.export import ExportSettings, export_bundle
from tvmnas.measure.level import parse_level
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.run_folder import SearchRun, TrainRun, bundle_folder
from tvmnas.space import load_space
from tvmnas.targets import load_target
from tvmnas.train.config import TrainConfig
from tvmnas.train.network_file import load_network
from tvmnas.train.run import train_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="more searched arch.json files to train")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--work", type=Path, default=Path("runs/vs_baseline"), help="where networks are trained")
    args = parser.parse_args()

    run = SearchRun(args.run)
    winner = read_manifest(run.bundles(MANIFEST)[0])
    space, spec = load_space(winner["space"]), load_target(winner["target"]["name"])
    trained = load_network(run.train.network)
    cfg = TrainConfig(**trained.info["train_config"])
    trials = parse_level(winner["level"])
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed, cfg.limit)
    runner = LocalRunner()
    networks = [("searched (demo run)", run.train.network)]
    others = [("MobileNetV2-style baseline", Arch(space.name, space.mobilenetv2_ops))]
    others += [(f"searched ({p})", load_arch(p)) for p in args.also]
    for i, (label, arch) in enumerate(others):
        out = TrainRun(args.work / f"net{i}")
        if not out.summary.exists() or json.loads(out.summary.read_text())["arch"] != list(arch.ops):
            print(f"training {label}: {' '.join(arch.ops)}")
            train_network(cfg, space, arch, data, out.folder)
        networks.append((label, out.network))
    entries = []
    for label, path in networks:
        net = load_network(path)
        bundle = bundle_folder(path.parent, spec.name)
        manifest = export_bundle(net, path, spec, runner, tuning_dir(args.db, spec, "local"), bundle,
                                 ExportSettings(tune_trials=trials))
        entries.append({"network": label, "arch": list(net.arch.ops), "test_acc": net.info["test_acc"],
                        "measured_ms": manifest["latency"]["measured_ms"]})
        print(entries[-1])
    base = next(e for e in entries if e["network"].startswith("MobileNetV2"))
    for e in entries:
        e["speedup_vs_baseline"] = base["measured_ms"] / e["measured_ms"]
        e["acc_delta_vs_baseline"] = e["test_acc"] - base["test_acc"]
    summary = {"space": space.name, "target": spec.name, "level": winner["level"], "train_config": cfg.to_json(),
               "speedup_vs_baseline": {e["network"]: e["speedup_vs_baseline"] for e in entries},
               "acc_delta_vs_baseline": {e["network"]: e["acc_delta_vs_baseline"] for e in entries}}
    lines = [f"## Searched vs MobileNetV2-style baseline: {space.name} on {spec.name} ({winner['level']})", "",
             f"All trained {cfg.epochs} epochs from scratch with the same settings; test accuracy on "
             f"{trained.info.get('test_images')} held-out images; latency: each bundle's measured latency (the "
             "single-network protocol, at the latency database's anchor speed).", "",
             "| network | architecture | test acc | latency ms | speed-up vs baseline | acc vs baseline |",
             "|---|---|---:|---:|---:|---:|"]
    for e in entries:
        lines.append(f"| {e['network']} | `{' '.join(e['arch'])}` | {e['test_acc']:.4f} | {e['measured_ms']:.4f} | "
                     f"{e['speedup_vs_baseline']:.2f}x | {e['acc_delta_vs_baseline']:+.4f} |")
    write_results("vs_baseline", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
