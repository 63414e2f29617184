"""How repeatable are the profile's latencies, and does loopback RPC agree with local timing?

Three profiles of the space, each into an empty latency database: two on this machine, one through a TVM RPC
server on 127.0.0.1 (started and stopped here; TVM_NUM_THREADS = the target's threads). The kernels' tuning
records are shared (the default database's tuning folder), so every profile compiles the same modules; only the
measurement differs. Each profile times its candidates with the measurement protocol (interleaved windows
against the reference module, low-quantile estimate).

Two comparisons: as stored (each database anchored to its own first reference measurement, so a whole run's
speed phase is in its numbers), and anchored to the first profile's database (what a second profile into the
same database stores: the device's speed in each run divided out through the reference module).
The old protocol (five rounds within a second, median of the fastest round, fastest of two passes) is run once on
the same libraries to compare the measuring time.

Goal (issue 10): repeat within 5% for at least 26 of 27 candidates; loopback RPC within 10% for at least 26 of 27;
the new protocol at most 20% more measuring time than the old one.

    .venv/bin/python bench/measure_consistency.py [--tune-trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DB, command_line, write_results

from tvmnas.latency_db import LatencyDB
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.procs import free_port, start_server, stop_group
from tvmnas.profile import ProfileSettings, profile_candidates
from tvmnas.space import load_space
from tvmnas.targets import load_target


def old_protocol_seconds(libs: list[Path], shapes: list[tuple], threads: int) -> float:
    """Measuring time of protocol 1 on these libraries: per library, 3 calls, 200 ms untimed, 5 rounds of 5
    samples of >= 25 ms; two passes over the list."""
    import numpy as np
    import tvm
    from tvm import relax

    set_threads(threads)
    start = time.perf_counter()
    for _ in range(2):
        for lib, shape in zip(libs, shapes):
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
            x = tvm.runtime.tensor(np.zeros(shape, dtype="float32"))
            for _ in range(3):
                vm["main"](x)
            vm.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=200)(x)
            timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=5, min_repeat_ms=25)
            for _ in range(5):
                timer(x)
    return time.perf_counter() - start


def profile(space, spec, runner, db_path: Path, tune: Path, settings: ProfileSettings, keep: Path | None = None):
    with LatencyDB(db_path) as db:
        report = profile_candidates(space.candidates(), spec, runner, db, settings, tune)
        anchor = next(r.latency_ms for r in db.rows() if r.block_key.startswith("reference"))
    return report, anchor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="whose tuning records to use")
    parser.add_argument("--tune-trials", type=int, default=8)
    args = parser.parse_args()

    space, spec = load_space(args.space), load_target("x86-cpu")
    settings = ProfileSettings(tune_trials=args.tune_trials)
    tune = tuning_dir(args.db, spec, "local")
    endpoint = RpcEndpoint("127.0.0.1", free_port())
    server = start_server(endpoint.port, threads=spec.runtime_threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for name, runner in (("local", LocalRunner()), ("again", LocalRunner()), ("rpc", RpcRunner(endpoint))):
                with runner:
                    runs[name] = profile(space, spec, runner, Path(tmp) / f"{name}.db", tune, settings)
            # the old protocol on the same libraries (built again into a folder of our own)
            from tvmnas.profile import build_candidate

            built = [build_candidate(c, spec, settings, tune, LocalRunner(), Path(tmp)) for c in space.candidates()]
            old_s = old_protocol_seconds([b.lib_path for b in built], [b.input_shape for b in built],
                                         spec.runtime_threads)
    finally:
        stop_group(server.pid)

    def latencies(name):
        return {o.candidate.ident: o.row for o in runs[name][0].outcomes}

    base, again, rpc = latencies("local"), latencies("again"), latencies("rpc")
    anchor = {name: runs[name][1] for name in runs}
    entries = []
    for key, row in base.items():
        def anchored(other, name):  # the other run's raw latency in the first database's anchor
            return other[key].raw_ms / anchor[name] * anchor["local"]
        entries.append({"candidate": row.block_key, "input_shape": row.input_shape, "local_ms": row.latency_ms,
                        "again_ms": again[key].latency_ms, "rpc_ms": rpc[key].latency_ms,
                        "again_ratio": again[key].latency_ms / row.latency_ms,
                        "rpc_ratio": rpc[key].latency_ms / row.latency_ms,
                        "again_anchored_ratio": anchored(again, "again") / row.latency_ms,
                        "rpc_anchored_ratio": anchored(rpc, "rpc") / row.latency_ms,
                        "dispersion": row.dispersion, "flag": row.flag})

    def within(key, tol):
        return sum(1 for e in entries if abs(e[key] - 1) <= tol)

    new_s = runs["local"][0].measure_s
    summary = {"space": space.name, "target": spec.name, "level": settings.level, "candidates": len(entries),
               "repeat_within_5pct": within("again_ratio", 0.05), "rpc_within_10pct": within("rpc_ratio", 0.10),
               "repeat_within_5pct_anchored": within("again_anchored_ratio", 0.05),
               "rpc_within_10pct_anchored": within("rpc_anchored_ratio", 0.10),
               "repeat_within_10pct": within("again_ratio", 0.10),
               "worst_repeat_ratio": max((e["again_ratio"] for e in entries), key=lambda r: abs(r - 1)),
               "worst_rpc_ratio": max((e["rpc_ratio"] for e in entries), key=lambda r: abs(r - 1)),
               "run_speed": {name: runs[name][1] / anchor["local"] for name in runs},
               "measure_s": round(new_s, 1), "old_protocol_measure_s": round(old_s, 1),
               "measure_overhead": round(new_s / old_s - 1, 3),
               "flagged": sum(1 for e in entries if e["flag"]), "threads": spec.runtime_threads}
    lines = [f"## Measurement consistency: {space.name} on {spec.name} ({settings.level}), three profiles into "
             "empty databases", "",
             f"As stored: repeat within 5%: **{summary['repeat_within_5pct']}/{len(entries)}** (within 10%: "
             f"{summary['repeat_within_10pct']}); loopback RPC within 10% of local: "
             f"**{summary['rpc_within_10pct']}/{len(entries)}**.",
             f"Anchored to the first profile's database: repeat within 5%: "
             f"{summary['repeat_within_5pct_anchored']}/{len(entries)}; RPC within 10%: "
             f"{summary['rpc_within_10pct_anchored']}/{len(entries)}.",
             f"Measuring time (compiling excluded): {new_s:.0f} s against {old_s:.0f} s for the old protocol on the "
             f"same libraries ({summary['measure_overhead']:+.0%}). Rows flagged noisy: {summary['flagged']}.", "",
             "| candidate | input | local ms | again / local | RPC / local | again anchored | RPC anchored |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for e in entries:
        lines.append(f"| {e['candidate']} | {e['input_shape']} | {e['local_ms']:.4f} | {e['again_ratio']:.3f} | "
                     f"{e['rpc_ratio']:.3f} | {e['again_anchored_ratio']:.3f} | {e['rpc_anchored_ratio']:.3f} |")
    write_results("measure_consistency", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
