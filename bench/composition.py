"""How do sampled networks compose from their blocks? Many whole networks timed in one interleaved run.

Issue 19: at 224x224 the export measured networks ~22% over their predictions (the sum of the blocks' hot latencies)
and ranked them poorly (Kendall tau 0.33 over 20 networks, each exported and timed at its own time). Here sampled
networks (random weights, built as `tvmnas export` builds them, from the database's tuning records) are timed
together with the reference in one interleaved run (scaled to the database's anchor), `--rounds` times, so their
ranking is free of the machine's phases; the rounds' agreement (tau between rounds) is the ceiling of any
prediction. Then, leaving each network out in turn, models of the network's latency are fitted on the others: a
scale of the sum of the blocks, and the sum plus the network's weight megabytes (weights that are hot when a block
is timed alone come from memory inside a network). Run it on an idle machine.

    .venv/bin/python bench/composition.py --space proxyless-imagenet --networks 16 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from common import DEFAULT_DB, command_line, write_results
from latency_truth import kendall_tau, sample_archs
from timers import network_timer, reference_timer

from tvmnas.latency_db import LatencyDB
from tvmnas.measure.method import latency_scope
from tvmnas.measure.level import level_name
from tvmnas.measure.protocol import Protocol, measure_interleaved
from tvmnas.measure.reference import read_anchor
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.space import load_space
from tvmnas.targets import load_target

ROUND = Protocol(windows=40, reference_every=6)


def loo_fit(features: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions of a least-squares fit measured ~ features."""
    out = np.empty(len(measured))
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        coef, *_ = np.linalg.lstsq(features[keep], measured[keep], rcond=None)
        out[i] = features[i] @ coef
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="proxyless-imagenet")
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7, help="not latency_truth's 2026: other networks")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    args = parser.parse_args()

    space, spec, runner = load_space(args.space), load_target("x86-cpu"), LocalRunner()
    scope = latency_scope(spec, runner.device_label, level_name(args.tune_trials))
    archs = sample_archs(space, args.networks, args.seed)
    tune_dir = tuning_dir(args.db, spec, runner.device_label)
    set_threads(spec.runtime_threads)
    entries = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-compose-") as tmp, LatencyDB(args.db) as db:
        timers = []
        for i, ops in enumerate(archs):
            timer, built = network_timer(space, ops, args.seed + i, spec, args.tune_trials, tune_dir, runner,
                                         Path(tmp) / f"net{i}.so")
            rows = [db.get(scope, c.key, c.shape_text) for c in space.blocks(ops)]
            if any(row is None or not row.ok for row in rows):
                raise SystemExit(f"the database lacks blocks of network {i}: profile {space.name} first")
            # the plain sum of the blocks' rows, whatever composition the database holds: this bench fits that
            entries.append({"arch": list(ops), "predicted_ms": sum(row.latency_ms for row in rows),
                            "weight_mb": sum(c.weight_mb for c in space.blocks(ops)),
                            "tasks_tuned": built.tasks_tuned, "measured_ms_rounds": []})
            timers.append(timer)
            print(f"built {i + 1}/{len(archs)} ({built.compile_s:.0f} s, {built.tasks_tuned} tasks tuned)", flush=True)
        reference = reference_timer(spec, Path(tmp))
        anchor, speeds = read_anchor(db, scope), []
        for r in range(args.rounds):
            run = measure_interleaved(timers, reference, ROUND, anchor)
            speeds.append(run.reference.raw_ms)
            for e, est in zip(entries, run.estimates):
                e["measured_ms_rounds"].append(est.latency_ms)
            print(f"round {r + 1}: reference {run.reference.raw_ms:.5f} ms", flush=True)

    rounds = np.array([e["measured_ms_rounds"] for e in entries])  # networks x rounds
    measured = np.median(rounds, axis=1)
    predicted = np.array([e["predicted_ms"] for e in entries])
    weights = np.array([e["weight_mb"] for e in entries])
    ones = np.ones(len(entries))
    models = {"sum of blocks": predicted,
              "a + b x sum": loo_fit(np.column_stack([ones, predicted]), measured),
              "b x sum + c x weight MB": loo_fit(np.column_stack([predicted, weights]), measured),
              "a + b x sum + c x weight MB": loo_fit(np.column_stack([ones, predicted, weights]), measured)}
    for e, m in zip(entries, measured):
        e["measured_ms"] = float(m)
    fits = {}
    for name, pred in models.items():
        err = pred / measured - 1
        fits[name] = {"kendall_tau": round(float(kendall_tau(list(pred), list(measured))), 4),
                      "within_10pct": int(np.sum(np.abs(err) <= 0.10)), "mean_abs_error": float(np.mean(np.abs(err)))}
    full, *_ = np.linalg.lstsq(np.column_stack([predicted, weights]), measured, rcond=None)
    between = [kendall_tau(list(rounds[:, a]), list(rounds[:, b]))
               for a in range(args.rounds) for b in range(a + 1, args.rounds)]
    summary = {"space": space.name, "networks": len(entries), "rounds": args.rounds,
               "tau_between_rounds": round(float(statistics.mean(between)), 4) if between else None,
               "median_measured_over_sum": float(np.median(measured / predicted)),
               "fit_b_sum_c_weight_mb": {"b": float(full[0]), "c_ms_per_mb": float(full[1])},
               "fits_leave_one_out": fits, "reference_raw_ms": speeds}
    lines = [f"## {len(entries)} sampled {space.name} networks timed together ({args.rounds} interleaved rounds, "
             f"{scope.level})", "",
             f"Kendall tau between rounds: **{summary['tau_between_rounds']}**; measured / sum of blocks (median) "
             f"{summary['median_measured_over_sum']:.3f}.", "",
             "| model (leave one out) | Kendall tau | within +/-10% | mean abs error |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {f['kendall_tau']:.3f} | {f['within_10pct']}/{len(entries)} | "
              f"{f['mean_abs_error']:.1%} |" for name, f in fits.items()]
    lines += ["", f"All networks: measured = {full[0]:.3f} x sum + {full[1]:.4f} ms x weight MB.", "",
              "| architecture | sum of blocks ms | weight MB | measured ms (rounds) |", "|---|---:|---:|---|"]
    lines += [f"| {' '.join(e['arch'])} | {e['predicted_ms']:.3f} | {e['weight_mb']:.2f} | "
              f"{', '.join(f'{m:.3f}' for m in e['measured_ms_rounds'])} |" for e in entries]
    write_results(f"composition_{space.name}", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
