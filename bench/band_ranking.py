"""Can a supernet pick the better network among those at the goal's latency? (issue 17: the lever "derive by
supernet evaluation": score many networks within the goal's band with the search's supernet and keep the best.)

Every network of the search-vs-random study that lies within the band (`role` searched or random, trained from
scratch on two seeds or more, from every set of searches) is scored on the validation split by each given search's
supernet (its path, BatchNorm statistics measured again for it) and by their mean (an ensemble). Reported: Kendall
tau between score and accuracy trained from scratch, per supernet and for the ensemble, and the true accuracy rank
of the networks the ensemble scores highest: what a derivation that keeps the best-scored network would get. It
trains and times nothing (a few seconds per network and supernet).

    .venv/bin/python bench/band_ranking.py --runs runs/svr-cluttered-fashion-64/search-depth-seed{0,1,2}
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import REPO, RESULTS, command_line, write_results


def band_networks(space: str) -> dict[tuple[str, ...], dict]:
    """Per architecture, its mean test accuracy, predicted latency and role, from every results file of the study."""
    nets = {}
    for path in sorted(RESULTS.glob(f"search_vs_random_{space}*.json")):
        for e in json.loads(path.read_text())["entries"]:
            if len(e["test_acc"]) >= 2 and e["role"] in ("searched", "random"):
                nets[tuple(e["ops"])] = {"acc": e["mean"], "ms": e["predicted_ms"], "role": e["role"]}
    return nets


def scores_of(run: Path, archs: list[tuple[str, ...]]) -> list[float]:
    from tvmnas.arch import Arch
    from tvmnas.data.datasets import load_search_data
    from tvmnas.search.finished import load_run
    from tvmnas.search.run import path_accuracy

    finished = load_run(run)
    cfg, space = finished.cfg, finished.space
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    return [path_accuracy(finished.state.net, Arch(space.name, ops), data)[1] for ops in archs]


def main() -> None:
    from scipy import stats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished searches of the space")
    parser.add_argument("--top", type=int, default=5, help="best-scored networks to report")
    args = parser.parse_args()

    nets = band_networks(args.space)
    archs = list(nets)
    accs = [nets[a]["acc"] for a in archs]
    per_run = {}
    for run in args.runs:
        per_run[str(run.resolve().relative_to(REPO))] = scores_of(run, archs)
        print(f"{run}: Kendall tau {stats.kendalltau(list(per_run.values())[-1], accs).statistic:+.3f}", flush=True)
    ensemble = [statistics.mean(s[i] for s in per_run.values()) for i in range(len(archs))]
    by_acc = sorted(accs, reverse=True)
    top = sorted(range(len(archs)), key=lambda i: -ensemble[i])[:args.top]
    taus = {run: float(stats.kendalltau(s, accs).statistic) for run, s in per_run.items()}
    ensemble_tau = stats.kendalltau(ensemble, accs)
    summary = {"networks": len(archs), "kendall_tau_per_supernet": taus,
               "kendall_tau_ensemble": float(ensemble_tau.statistic), "kendall_p_ensemble": float(ensemble_tau.pvalue),
               "top_scored_true_ranks": [by_acc.index(accs[i]) + 1 for i in top],
               "top_scored_accs": [accs[i] for i in top], "band_acc_mean": statistics.mean(accs),
               "band_acc_sd": statistics.stdev(accs)}
    entries = [{"ops": list(a), **nets[a], "scores": [s[i] for s in per_run.values()], "ensemble": ensemble[i]}
               for i, a in enumerate(archs)]
    lines = [f"## Supernet scores against accuracy trained from scratch, at the goal's latency: {args.space}", "",
             f"{len(archs)} networks of the search-vs-random study within the goal's band (every set of searches and "
             f"the random ones); accuracy mean {summary['band_acc_mean']:.4f}, SD {summary['band_acc_sd']:.4f}.", "",
             "| supernet | Kendall tau |", "|---|---:|"]
    lines += [f"| `{run}` | {tau:+.3f} |" for run, tau in taus.items()]
    lines += [f"| mean of the {len(taus)} (ensemble) | {summary['kendall_tau_ensemble']:+.3f} "
              f"(p {summary['kendall_p_ensemble']:.2f}) |", "",
              f"The {args.top} networks the ensemble scores highest rank {summary['top_scored_true_ranks']} of "
              f"{len(archs)} by accuracy trained from scratch."]
    write_results(f"band_ranking_{args.space}", summary, entries, lines, command_line(), per_cpu=False)


if __name__ == "__main__":
    main()
