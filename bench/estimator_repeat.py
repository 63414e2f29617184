"""Which estimate of a single network's latency repeats best between two measurements (issue 19)?

Two exports of the same network agree only at Kendall tau 0.5-0.66 here (`latency_truth_*.json`, `again`), which
caps any prediction's tau far below the goal's 0.9. This bench looks at the estimator, not the prediction: networks
sampled from a space (random weights) are built at the profile's level, then each is timed alone with the
reference module under the export's single-network protocol (`--measure-s` seconds), one after the other, twice
over (as `latency_truth.py --again` does), and every window of the module and of the reference is kept. From the
same windows each estimator gives a latency per network and pass:
- `protocol`: what the export records (the 5% quantile of the kept windows, scaled by the reference's speed
  against the database's anchor); `protocol_raw`: the same unscaled;
- `qQ_raw`: the Q quantile of all the module's windows; `qQ_scaled`: over the same quantile of the reference's;
- `paired_qQ`: the Q quantile of each module window over the mean of its neighbouring reference windows (the
  protocol alternates them), which cancels a speed phase at the moment it happens;
- `netref_qQ` and `netref_paired_qQ`: the same against a network-sized reference instead of the one-kernel module:
  the space's MobileNetV2-style network (every layer `mb_k3_e6`), timed in turn with each network in the same run
  (a slow phase was seen to slow the networks 1.5x and the one-kernel reference 1.25x:
  `estimator_repeat_fashion-mnist_kernel-reference.md`).
Reported per estimator: Kendall tau between the two passes, and the median relative difference between them.
Needs a profile of the space in `--db` (its anchor and tuning records). Run it on an idle machine.

    .venv/bin/python bench/estimator_repeat.py [--space fashion-mnist --networks 20 --measure-s 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from common import DEFAULT_DB, command_line, write_results
from latency_truth import sample_archs
from timers import network_timer, reference_timer

from tvmnas.latency_db import LatencyDB
from tvmnas.measure.level import level_name
from tvmnas.measure.method import latency_scope
from tvmnas.measure.protocol import measure_interleaved, quantile, single_protocol
from tvmnas.measure.reference import read_anchor
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.space import load_space
from tvmnas.targets import load_target

QUANTILES = (0.05, 0.25, 0.5)


class Recording:
    """A WindowTimer that logs each window's value (the median of its samples, as the protocol takes it)."""

    def __init__(self, timer, tag: str, log: list[tuple[str, float]]) -> None:
        self._timer, self._tag, self._log = timer, tag, log

    def warm_up(self, warmup_ms: float) -> float:
        return self._timer.warm_up(warmup_ms)

    def window(self, calls: int, samples: int) -> list[float]:
        values = self._timer.window(calls, samples)
        self._log.append((self._tag, quantile(values, 0.5)))
        return values


def neighbours(log: list[tuple[str, float]], k: int, tag: str) -> list[float]:
    """The windows tagged `tag` nearest before and after log position k."""
    out = []
    for step in (-1, 1):
        j = k + step
        while 0 <= j < len(log) and log[j][0] != tag:
            j += step
        if 0 <= j < len(log):
            out.append(log[j][1])
    return out


def estimators(log: list[tuple[str, float]]) -> dict[str, float]:
    """Every offline estimator over one measurement's windows (in time order: "module", "reference" and
    "netref")."""
    windows = {tag: [v for t, v in log if t == tag] for tag in ("module", "reference", "netref")}
    paired = {tag: [] for tag in ("reference", "netref")}
    for k, (tag, value) in enumerate(log):
        if tag == "module":
            for ref in paired:
                if near := neighbours(log, k, ref):
                    paired[ref].append(value / statistics.mean(near))
    out = {}
    for q in QUANTILES:
        module = quantile(windows["module"], q)
        out[f"q{q:g}_raw"] = module
        out[f"q{q:g}_scaled"] = module / quantile(windows["reference"], q)
        out[f"paired_q{q:g}"] = quantile(paired["reference"], q)
        out[f"netref_q{q:g}"] = module / quantile(windows["netref"], q)
        out[f"netref_paired_q{q:g}"] = quantile(paired["netref"], q)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11, help="not latency_truth's 2026: other networks")
    parser.add_argument("--measure-s", type=float, default=10.0)
    parser.add_argument("--tune-trials", type=int, default=8)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    args = parser.parse_args()

    space, spec, runner = load_space(args.space), load_target("x86-cpu"), LocalRunner()
    scope = latency_scope(spec, runner.device_label, level_name(args.tune_trials))
    tune_dir = tuning_dir(args.db, spec, runner.device_label)
    protocol = single_protocol(args.measure_s)
    set_threads(spec.runtime_threads)
    entries = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-estimators-") as tmp, LatencyDB(args.db) as db:
        anchor = read_anchor(db, scope)
        if anchor is None:
            raise SystemExit(f"{args.db} has no profile of {spec.name} at {scope}: run `tvmnas profile --space "
                             f"{args.space} --target {spec.name}` first")
        timers = []
        for i, ops in enumerate(sample_archs(space, args.networks, args.seed)):
            timers.append(network_timer(space, ops, args.seed + i, spec, args.tune_trials, tune_dir, runner,
                                        Path(tmp) / f"net{i}.so")[0])
            entries.append({"arch": list(ops), "passes": []})
        reference = reference_timer(spec, Path(tmp))
        netref = network_timer(space, space.mobilenetv2_ops, args.seed, spec, args.tune_trials, tune_dir, runner,
                               Path(tmp) / "netref.so")[0]
        for p in range(2):
            for i, (timer, entry) in enumerate(zip(timers, entries)):
                log: list[tuple[str, float]] = []
                run = measure_interleaved([Recording(timer, "module", log), Recording(netref, "netref", log)],
                                          Recording(reference, "reference", log), protocol, anchor)
                est = run.estimates[0]
                entry["passes"].append({"protocol": est.latency_ms, "protocol_raw": est.raw_ms, "flag": est.flag,
                                        **estimators(log), "windows": [[tag[0], round(v, 6)] for tag, v in log]})
                print(f"pass {p + 1}, network {i + 1}/{len(timers)}: {est.latency_ms:.5f} ms", flush=True)
    names = [k for k, v in entries[0]["passes"][0].items() if isinstance(v, float)]
    tau, diff = {}, {}
    for name in names:
        first, second = ([e["passes"][p][name] for e in entries] for p in range(2))
        tau[name] = round(float(stats.kendalltau(first, second).statistic), 4)
        diff[name] = round(float(np.median([abs(b / a - 1) for a, b in zip(first, second)])), 4)
    best = max(names, key=tau.__getitem__)
    summary = {"space": args.space, "networks": len(entries), "measure_s": args.measure_s,
               "level": level_name(args.tune_trials), "tau_between_passes": tau, "median_rel_diff": diff,
               "best": best, "best_over_protocol_tau": round(tau[best] - tau["protocol"], 4)}
    lines = [f"## Single-network estimators, two passes: {args.space}, {len(entries)} networks, "
             f"{args.measure_s:g} s each", "",
             "| estimator | tau between passes | median difference |", "|---|---:|---:|"]
    lines += [f"| {name} | {tau[name]:.3f} | {diff[name]:.1%} |" for name in names]
    lines += ["", f"Best: `{best}` ({summary['best_over_protocol_tau']:+.3f} tau over the protocol's estimate)."]
    write_results(f"estimator_repeat_{args.space}", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
