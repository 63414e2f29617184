"""How repeatable are tvmnas latency measurements, and does loopback RPC agree with local timing?

Each candidate is compiled once (at the given level, tuning records taken from the local database). A measurement
is what `tvmnas profile` stores: the fastest of its timing passes over the whole candidate list. Two local
measurements and one through a TVM RPC server on 127.0.0.1 (started and stopped here) are compared.
Goal: repeat within 10% of the first local run; loopback RPC within 20% of it.

    python bench/measure_consistency.py --db ~/.cache/tvmnas/latency.db --tune-trials 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tvmnas.measure.profile import ProfileSettings, build_candidate, tuning_dir, tvm_version
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.runner.loopback import free_port, start_server, stop
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner
from tvmnas.space import load_space
from tvmnas.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--db", type=Path, default=Path.home() / ".cache" / "tvmnas" / "latency.db")
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/measure_consistency"))
    args = parser.parse_args()

    space, spec = load_space(args.space), load_target("x86-cpu")
    settings = ProfileSettings(tune_trials=args.tune_trials)
    local = LocalRunner()
    endpoint = RpcEndpoint("127.0.0.1", free_port())
    server = start_server(endpoint.port, threads=spec.runtime_threads)
    rpc = RpcRunner(endpoint)
    entries = []
    candidates = space.candidates()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            libs = [build_candidate(c, spec, settings, tuning_dir(args.db, spec, "local"), local, tmp).lib_path
                    for c in candidates]

            def measurement(runner) -> list:
                """What `tvmnas profile` stores: the fastest of `passes` passes over the whole list."""
                passes = [[runner.measure(lib, "cpu", c.input_shape, settings.timing,
                                           spec.runtime_threads).median_ms
                           for c, lib in zip(candidates, libs)] for _ in range(settings.passes)]
                return [min((p for p in per_cand if p is not None), default=None) for per_cand in zip(*passes)]

            first, second, remote = measurement(local), measurement(local), measurement(rpc)
    finally:
        stop(server)
    for cand, a, b, r in zip(candidates, first, second, remote):
        entries.append({"candidate": cand.key, "input_shape": cand.shape_text, "local_ms": a, "local_again_ms": b,
                        "rpc_ms": r, "repeat_ratio": b / a, "rpc_ratio": r / a if r else None})
        print(f"{cand.key:28s} local {a:.4f} again {b:.4f} rpc {r or float('nan'):.4f}")

    within = lambda key, tol: sum(1 for e in entries if e[key] is not None and abs(e[key] - 1) <= tol)
    summary = {"space": space.name, "target": spec.name, "level": settings.level, "tvm_version": tvm_version(),
               "candidates": len(entries), "repeat_within_10pct": within("repeat_ratio", 0.10),
               "rpc_within_20pct": within("rpc_ratio", 0.20),
               "worst_repeat_ratio": max(entries, key=lambda e: abs(e["repeat_ratio"] - 1))["repeat_ratio"],
               "worst_rpc_ratio": max((e for e in entries if e["rpc_ratio"]),
                                      key=lambda e: abs(e["rpc_ratio"] - 1))["rpc_ratio"],
               "timing": vars(settings.timing), "threads": spec.runtime_threads, "passes": settings.passes,
               "command": f"python bench/measure_consistency.py --tune-trials {args.tune_trials}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "entries": entries}, indent=1) + "\n")
    lines = [f"## Measurement consistency: {space.name} on {spec.name} ({settings.level})", "",
             f"Repeat within 10%: {summary['repeat_within_10pct']}/{len(entries)}; "
             f"loopback RPC within 20% of local: {summary['rpc_within_20pct']}/{len(entries)}.", "",
             "| candidate | input | local ms | again ms | again/local | RPC ms | RPC/local |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for e in entries:
        rpc_ms = "n/a" if e["rpc_ms"] is None else f"{e['rpc_ms']:.4f}"
        rpc_ratio = "n/a" if e["rpc_ratio"] is None else f"{e['rpc_ratio']:.2f}"
        lines.append(f"| {e['candidate']} | {e['input_shape']} | {e['local_ms']:.4f} | {e['local_again_ms']:.4f} | "
                     f"{e['repeat_ratio']:.2f} | {rpc_ms} | {rpc_ratio} |")
    lines += ["", f"Command: `{summary['command']}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
