"""Levers on the exported winner's speed against onnxruntime (issue 18): each variant of the same network compiled
and timed beside the exported module and onnxruntime in one interleaved run of its own; one row per lever with the
ratio to onnxruntime, the ratio to the exported module and the seconds of tuning it took.

Levers (`--levers`, default all):
  threads-1     both runtimes on one thread (the gap in the kernels or in the threading?)
  spin-0        TVM_THREAD_POOL_SPIN_COUNT=0: TVM's workers sleep between kernels (read once per process: timed in
  spin-large    a child process), or 1e6: they spin longer; onnxruntime left at its default spinning
  compiled      relax.build(exec_mode="compiled"): the VM program compiled too, not interpreted
  nchw, nhwc,   each layout of `tvmnas.measure.layout` other than the target's `conv_layout` (NCHW as imported,
  nchw8c, ...   NHWC, channels in blocks of 8 or 16 as onnxruntime's CPU convolutions use), tuned at the module's
                trials; `<layout>@N` (`--layout-trials`): tuned at N trials
  fresh-hot     the kernels tuned again from nothing (an empty tuning folder, no cost model) at the module's
  fresh-cold    trials, timing each trial hot (as profiling does), cold (cache flushed before each call, as a
  fresh-auto    kernel runs inside a network), or cold only for kernels whose weights exceed the L2
                cache: does tuning with cold caches find faster schedules?
  tuned-N       the winner's kernels tuned deeper (`--deeper 64 128 256`), records kept in the target's tuning
                folder (what `tvmnas export --tune-trials N` does; a later run reuses them)
Every result is written after each lever (a run cut short keeps what it did); `--skip-done` keeps the rows of an
earlier run and measures only the missing levers.

    .venv/bin/python bench/runtime_levers.py --bundle runs/demo/bundle-x86-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import DEFAULT_DB, RESULTS, command_line, results_name, write_results
from compare import interleave_calls, ort_call, tvm_call

from tvmnas.deploy.bundle import read_manifest
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import export_library, fuse, import_torch
from tvmnas.measure.layout import LAYOUTS
from tvmnas.measure.level import parse_level
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import budget_database, tuning_dir
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network
from tvmnas.tvm_compat import apply_tuning_records

NAME = "runtime_levers"
SPIN_LARGE = 1_000_000


class Winner:
    """The exported bundle: its module, network, input, target and tuning folder."""

    def __init__(self, bundle: Path, db: Path) -> None:
        self.bundle, self.manifest = bundle, read_manifest(bundle)
        self.spec = load_target(self.manifest["target"]["name"])
        self.trained = load_network(bundle / self.manifest["network"])
        self.data = np.load(bundle / self.manifest["sample_input"])
        self.trials = parse_level(self.manifest["level"])
        self.tune_dir = tuning_dir(db, self.spec, LocalRunner().device_label)

    @property
    def module(self) -> Path:
        return self.bundle / self.manifest["module"]

    def relax_module(self):
        return import_torch(fold_batchnorm(self.trained.net), tuple(self.data.shape))

    def onnxruntime(self, threads: int):
        return ort_call(self.bundle / self.manifest["onnx"], self.data, threads)


def timed(winner: Winner, lever_call, threads: int) -> dict:
    """The lever's module beside the exported one and onnxruntime, in one interleaved run; latencies in ms."""
    calls = {"lever": lever_call, "exported": tvm_call(winner.module, winner.data),
             "onnxruntime": winner.onnxruntime(threads)}
    expected = calls["exported"]()
    for name, call in calls.items():
        if not np.allclose(call(), expected, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"{name} computes something else than the exported module")
    est = interleave_calls(calls, winner.spec)
    ms = {name: e.raw_ms for name, e in est.items()}
    return {"lever_ms": ms["lever"], "exported_ms": ms["exported"], "onnxruntime_ms": ms["onnxruntime"],
            "over_onnxruntime": ms["lever"] / ms["onnxruntime"], "over_exported": ms["lever"] / ms["exported"],
            "exported_over_onnxruntime": ms["exported"] / ms["onnxruntime"],
            "dispersion": {name: e.dispersion for name, e in est.items()}}


def lever_threads_1(winner: Winner, tmp: Path) -> dict:
    set_threads(1)
    try:
        calls = {"lever": tvm_call(winner.module, winner.data), "onnxruntime": winner.onnxruntime(1)}
        est = interleave_calls(calls, winner.spec)
    finally:
        set_threads(winner.spec.runtime_threads)
    ms = {name: e.raw_ms for name, e in est.items()}
    return {"lever_ms": ms["lever"], "onnxruntime_ms": ms["onnxruntime"],
            "over_onnxruntime": ms["lever"] / ms["onnxruntime"], "tune_s": 0.0,
            "note": "the exported module and onnxruntime, both on one thread"}


def lever_spin(count: int):
    def run(winner: Winner, tmp: Path) -> dict:
        env = dict(os.environ, TVM_THREAD_POOL_SPIN_COUNT=str(count))
        proc = subprocess.run([sys.executable, __file__, "--bundle", str(winner.bundle), "--child-exported"],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the spin-count child failed:\n{proc.stderr[-2000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        return {**child, "tune_s": 0.0, "note": f"TVM_THREAD_POOL_SPIN_COUNT={count} in a child process; "
                                                 f"lever = the exported module there"}
    return run


def lever_compiled(winner: Winner, tmp: Path) -> dict:
    from tvm import relax

    target = winner.spec.tvm()
    fused = apply_tuning_records(fuse(winner.relax_module(), target, winner.spec.layout),
                                 budget_database(winner.tune_dir, winner.trials))
    with target:
        executable = relax.build(fused, target=target, exec_mode="compiled")
    lib = export_library(executable, tmp / "compiled.so", winner.spec)
    return {**timed(winner, tvm_call(lib, winner.data), winner.spec.runtime_threads), "tune_s": 0.0}


def lever_layout(layout: str, trials: int | None = None):
    def run(winner: Winner, tmp: Path) -> dict:
        level = winner.trials if trials is None else trials
        built = build_module(winner.relax_module(), replace(winner.spec, conv_layout=layout), level,
                             winner.tune_dir, LocalRunner(), tmp / f"{layout}-{level}.so")
        return {**timed(winner, tvm_call(built.lib_path, winner.data), winner.spec.runtime_threads),
                "tune_s": built.tune_s, "kernels": built.tasks, "kernels_tuned": built.tasks_tuned}
    return run


def lever_fresh(cache: str):
    def run(winner: Winner, tmp: Path) -> dict:
        from tvmnas.measure.compile import compile_fused
        from tvmnas.measure.tuning import TuneSettings, make_in_process_runner, tune_fused
        from tvmnas.measure.tuning_records import tuning_store

        target = winner.spec.tvm()
        fused = fuse(winner.relax_module(), target, winner.spec.layout)
        work = tmp / f"fresh-{cache}"
        work.mkdir()
        with tuning_store(work).session() as store:
            report = tune_fused(fused, winner.spec, target, store.database, work, TuneSettings(winner.trials),
                                lambda: make_in_process_runner("cpu", winner.spec.runtime_threads, cache),
                                in_memory=True)
            database = store.budget(winner.trials)
        lib = export_library(compile_fused(fused, target, database), tmp / f"{work.name}.so", winner.spec)
        return {**timed(winner, tvm_call(lib, winner.data), winner.spec.runtime_threads),
                "tune_s": report.seconds, "kernels": report.tasks_total, "kernels_tuned": report.tasks_tuned}
    return run


def lever_deeper(trials: int):
    def run(winner: Winner, tmp: Path) -> dict:
        built = build_module(winner.relax_module(), winner.spec, trials, winner.tune_dir, LocalRunner(),
                             tmp / f"tuned-{trials}.so")
        return {**timed(winner, tvm_call(built.lib_path, winner.data), winner.spec.runtime_threads),
                "tune_s": built.tune_s, "kernels": built.tasks, "kernels_tuned": built.tasks_tuned}
    return run


def child_exported(winner: Winner) -> None:
    """(spin-count child) the exported module beside onnxruntime; one JSON line."""
    threads = winner.spec.runtime_threads
    set_threads(threads)
    est = interleave_calls({"lever": tvm_call(winner.module, winner.data),
                            "onnxruntime": winner.onnxruntime(threads)}, winner.spec)
    ms = {name: e.raw_ms for name, e in est.items()}
    print(json.dumps({"lever_ms": ms["lever"], "onnxruntime_ms": ms["onnxruntime"],
                      "over_onnxruntime": ms["lever"] / ms["onnxruntime"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle-x86-cpu"))
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="its tuning folder holds the records")
    parser.add_argument("--deeper", type=int, nargs="*", default=[64, 128, 256], help="trials per kernel")
    parser.add_argument("--layout-trials", type=int, nargs="*", default=[64],
                        help="also tune each layout lever at these trials per kernel")
    parser.add_argument("--levers", nargs="*", help="only these (names as in the table)")
    parser.add_argument("--skip-done", action="store_true", help="keep the rows of the last record")
    parser.add_argument("--child-exported", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    winner = Winner(args.bundle, args.db)
    if args.child_exported:
        child_exported(winner)
        return
    set_threads(winner.spec.runtime_threads)
    levers = {"threads-1": lever_threads_1, "spin-0": lever_spin(0), "spin-large": lever_spin(SPIN_LARGE),
              "compiled": lever_compiled,
              **{layout: lever_layout(layout) for layout in LAYOUTS if layout != winner.spec.layout},
              **{f"{layout}@{n}": lever_layout(layout, n) for layout in LAYOUTS if layout != winner.spec.layout
                 for n in args.layout_trials},
              "fresh-hot": lever_fresh("hot"),
              "fresh-cold": lever_fresh("cold"),
              "fresh-auto": lever_fresh("auto"),
              **{f"tuned-{n}": lever_deeper(n) for n in args.deeper}}
    unknown = set(args.levers or []) - set(levers)
    if unknown:
        raise SystemExit(f"unknown levers {', '.join(sorted(unknown))}; known: {', '.join(levers)}")
    rows = []
    earlier = RESULTS / f"{results_name(NAME)}.json"
    if args.skip_done and earlier.exists():
        rows = [r for r in json.loads(earlier.read_text())["entries"]
                if (r.get("bundle_arch"), r.get("level")) == (winner.manifest["arch"], winner.manifest["level"])]
    done = {r["lever"] for r in rows}
    with tempfile.TemporaryDirectory(prefix="tvmnas-levers-") as tmp:
        for name, lever in levers.items():
            if (args.levers and name not in args.levers) or name in done:
                continue
            start = time.perf_counter()
            row = {"lever": name, "bundle_arch": winner.manifest["arch"], "level": winner.manifest["level"],
                   **lever(winner, Path(tmp)), "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(f"{name}: {row['over_onnxruntime']:.2f}x onnxruntime", flush=True)
            record(winner, rows)


def record(winner: Winner, rows: list[dict]) -> None:
    best = min(rows, key=lambda r: r["over_onnxruntime"])
    summary = {"network": winner.manifest["arch"], "level": winner.manifest["level"],
               "threads": winner.spec.runtime_threads,
               "over_onnxruntime": {r["lever"]: r["over_onnxruntime"] for r in rows},
               "over_exported": {r["lever"]: r.get("over_exported") for r in rows},
               "tune_s": {r["lever"]: r["tune_s"] for r in rows}, "best_lever": best["lever"],
               "best_over_onnxruntime": best["over_onnxruntime"]}
    lines = [f"## Levers on the exported winner ({winner.spec.name}, {winner.spec.runtime_threads} threads, "
             f"{winner.manifest['level']})", "", f"`{' '.join(winner.manifest['arch'])}`. Each lever's module timed "
             "in one interleaved run of its own beside the exported module and onnxruntime (threads-1 and the "
             "spin counts: beside onnxruntime only). Weight pre-packing is not a row: the weights are constants and "
             "their layout transform is folded at compile time in every variant (packed once, not per call).", "",
             "| lever | / onnxruntime | / exported module | tuning s |", "|---|---:|---:|---:|"]
    for r in rows:
        over_exported = "" if r.get("over_exported") is None else f"{r['over_exported']:.2f}"
        lines.append(f"| {r['lever']} | {r['over_onnxruntime']:.2f} | {over_exported} | {r['tune_s']:.0f} |")
    write_results(NAME, summary, rows, lines, command_line())


if __name__ == "__main__":
    main()
