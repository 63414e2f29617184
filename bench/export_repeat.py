"""The export of one network repeated: how far apart are the latencies its manifests report?

The same network file exported N times in a row with `tvmnas export` (each export compiles, checks and measures
with the single-network protocol: >= 10 s against the reference module, scaled to the database's anchor).

Goal (issue 10): max / min of the measured latencies <= 1.10 over 5 exports.

    .venv/bin/python bench/export_repeat.py --network runs/demo/train/network.pt --runs 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import DEFAULT_DB, command_line, write_results

from tvmnas.cli import main as tvmnas
from tvmnas.deploy.bundle import MANIFEST


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, default=Path("runs/demo/train/network.pt"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    args = parser.parse_args()
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"bundle{i}"
            if tvmnas(["export", "--network", str(args.network), "--target", "x86-cpu", "--db", str(args.db),
                       "--out", str(out)]) != 0:
                raise SystemExit("export failed")
            lat = json.loads((out / MANIFEST).read_text())["latency"]
            entries.append({"run": i, "measured_ms": lat["measured_ms"], "raw_ms": lat["measured_raw_ms"],
                            "speed": lat["speed"], "dispersion": lat["measured_dispersion"],
                            "predicted_ms": lat["predicted_ms"], "flag": lat["flag"]})
    measured = [e["measured_ms"] for e in entries]
    raw = [e["raw_ms"] for e in entries]
    summary = {"runs": len(entries), "max_over_min": max(measured) / min(measured),
               "raw_max_over_min": max(raw) / min(raw), "measured_ms": measured,
               "predicted_ms": entries[0]["predicted_ms"]}
    lines = [f"## One network exported {len(entries)} times", "",
             f"max / min of the manifests' measured latency: **{summary['max_over_min']:.3f}** (before the anchor "
             f"scaling: {summary['raw_max_over_min']:.3f}); predicted {summary['predicted_ms']:.4f} ms.", "",
             "| run | measured ms | raw ms | device speed | dispersion |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {e['run']} | {e['measured_ms']:.4f} | {e['raw_ms']:.4f} | {e['speed']:.3f} | "
              f"{e['dispersion']:.1%} |" for e in entries]
    write_results("export_repeat", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
