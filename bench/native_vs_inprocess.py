"""Does the in-process measurement of a bundle (Python, as `tvmnas export` times it) agree with the native runner?

Issue 19: at 224x224 the export measured its networks 20-28% over the prediction while the native runner timed one
of the same bundles 4-14% under it. Here the two alternate on one bundle, `--rounds` times in one run: the native
runner (`build/native/tvmnas-run --json`, its own process) and the same module timed in this process with the
single-network protocol (`tvmnas.measure.single.time_network`, the export's call); each round's raw latencies
(unscaled by the anchor) and their ratio, and the median ratio. Run it on an idle machine.

    .venv/bin/python bench/native_vs_inprocess.py --bundle runs/demo/bundle-x86-cpu --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from common import REPO, command_line, write_results

from tvmnas.deploy.bundle import MANIFEST, SAMPLE_FILE
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.single import time_network
from tvmnas.targets import load_target

RUNNER = REPO / "build" / "native" / "tvmnas-run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not RUNNER.exists():
        raise SystemExit(f"no native runner at {RUNNER}: run `make runner` first")

    manifest = json.loads((args.bundle / MANIFEST).read_text())
    spec = load_target(manifest["target"]["name"])
    anchor_ms = manifest["latency"]["reference"]["anchor_ms"]
    runner, rows = LocalRunner(), []
    for i in range(args.rounds):
        proc = subprocess.run([str(RUNNER), str(args.bundle), str(args.bundle / SAMPLE_FILE), "--json"],
                              capture_output=True, text=True, check=True)
        native = json.loads(proc.stdout)
        inproc = time_network(runner, spec, args.bundle / manifest["module"], tuple(manifest["input"]["shape"]),
                              args.bundle / "reference.so", anchor_ms)
        rows.append({"native_raw_ms": native["raw_ms"], "native_speed": native["speed"],
                     "inprocess_raw_ms": inproc["measured_raw_ms"], "inprocess_speed": inproc["speed"],
                     "inprocess_flag": inproc["flag"], "ratio": inproc["measured_raw_ms"] / native["raw_ms"]})
        print(f"round {i + 1}: native {native['raw_ms']:.4f} ms, in-process {inproc['measured_raw_ms']:.4f} ms "
              f"({rows[-1]['ratio']:.3f}x)", flush=True)
    ratios = [r["ratio"] for r in rows]
    summary = {"bundle_arch": manifest["arch"], "input_shape": manifest["input"]["shape"],
               "predicted_ms": manifest["latency"]["predicted_ms"], "rounds": len(rows),
               "median_inprocess_over_native": statistics.median(ratios), "min_ratio": min(ratios),
               "max_ratio": max(ratios)}
    lines = [f"## In-process vs native timing of one bundle ({'x'.join(map(str, manifest['input']['shape']))}, "
             f"{manifest['level']})", "", "| round | native raw ms | in-process raw ms | in-process / native |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {r['native_raw_ms']:.4f} | {r['inprocess_raw_ms']:.4f} | {r['ratio']:.3f} |"
              for i, r in enumerate(rows)]
    lines += ["", f"Median in-process / native: **{summary['median_inprocess_over_native']:.3f}** "
              f"(prediction {summary['predicted_ms']:.4f} ms)."]
    write_results("native_vs_inprocess", summary, rows, lines, command_line())


if __name__ == "__main__":
    main()
