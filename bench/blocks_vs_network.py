"""Does a network take the sum of its blocks? The table's prediction against the whole network, in one run.

Issue 19: at 224x224 the export measured networks ~20% over their predictions (the sum of the blocks' rows), and
the native runner and the in-process timing agree with each other (`native_vs_inprocess.md`). Here the bundle's
blocks are compiled as `tvmnas profile` compiles them (the database's tuning records, so nothing is tuned again)
and timed in one interleaved run with the whole network and the reference, `--rounds` times: the same phases of
the machine for all, so their ratio is free of the anchor. Run it on an idle machine.

    .venv/bin/python bench/blocks_vs_network.py --bundle BUNDLE --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import DEFAULT_DB, command_line, write_results

from tvmnas.deploy.bundle import MANIFEST
from tvmnas.measure.level import parse_level
from tvmnas.measure.protocol import Protocol, measure_interleaved
from tvmnas.measure.reference import REFERENCE_SHAPES
from tvmnas.measure.runner.base import VmTimer, set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.profile import ProfileSettings, build_candidate
from tvmnas.space import load_space
from tvmnas.targets import load_target

# the profile's interleaving: a reference window after every 6 module windows
ROUND = Protocol(windows=30, reference_every=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="whose tuning records build the blocks")
    args = parser.parse_args()

    import tvm

    manifest = json.loads((args.bundle / MANIFEST).read_text())
    space, ops = load_space(manifest["space"]), tuple(manifest["arch"])
    spec, runner = load_target(manifest["target"]["name"]), LocalRunner()
    blocks = space.blocks(ops)
    settings = ProfileSettings(tune_trials=parse_level(manifest["level"]))
    set_threads(spec.runtime_threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-blocks-") as tmp:
        built = [build_candidate(c, spec, settings, tuning_dir(args.db, spec, runner.device_label), runner,
                                 Path(tmp)) for c in blocks]
        device = tvm.cpu()
        network = VmTimer(tvm.runtime.load_module(str(args.bundle / manifest["module"])), device,
                          (tuple(manifest["input"]["shape"]),))
        timers = [VmTimer(tvm.runtime.load_module(str(b.lib_path)), device, (b.input_shape,)) for b in built]
        reference = VmTimer(tvm.runtime.load_module(str(args.bundle / "reference.so")), device, REFERENCE_SHAPES)
        for i in range(args.rounds):
            run = measure_interleaved([network] + timers, reference, ROUND, None)
            blocks_ms = [e.raw_ms for e in run.estimates[1:]]
            rows.append({"network_raw_ms": run.estimates[0].raw_ms, "blocks_sum_raw_ms": sum(blocks_ms),
                         "reference_raw_ms": run.reference.raw_ms, "blocks_raw_ms": blocks_ms,
                         "ratio": run.estimates[0].raw_ms / sum(blocks_ms)})
            print(f"round {i + 1}: network {rows[-1]['network_raw_ms']:.4f} ms, blocks {sum(blocks_ms):.4f} ms "
                  f"({rows[-1]['ratio']:.3f}x)", flush=True)
    ratios = [r["ratio"] for r in rows]
    summary = {"bundle_arch": list(ops), "input_shape": manifest["input"]["shape"], "level": manifest["level"],
               "blocks": [f"{c.key} {c.shape_text}" for c in blocks], "tasks_tuned": sum(b.tasks_tuned for b in built),
               "predicted_ms": manifest["latency"]["predicted_ms"], "rounds": len(rows),
               "median_network_over_blocks": statistics.median(ratios), "min_ratio": min(ratios),
               "max_ratio": max(ratios)}
    lines = [f"## The whole network against the sum of its blocks ({'x'.join(map(str, manifest['input']['shape']))}, "
             f"{manifest['level']}, {len(blocks)} blocks, one interleaved run per round)", "",
             "| round | network raw ms | sum of blocks raw ms | network / blocks | reference raw ms |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {r['network_raw_ms']:.4f} | {r['blocks_sum_raw_ms']:.4f} | {r['ratio']:.3f} | "
              f"{r['reference_raw_ms']:.5f} |" for i, r in enumerate(rows)]
    lines += ["", f"Median network / sum of blocks: **{summary['median_network_over_blocks']:.3f}** (the table's "
              f"prediction {summary['predicted_ms']:.4f} ms at the anchor's speed)."]
    write_results("blocks_vs_network", summary, rows, lines, command_line())


if __name__ == "__main__":
    main()
