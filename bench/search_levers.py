"""The levers tried on the search, side by side (issue 17): one row per set of searches of the search-vs-random
study (`bench/search_vs_random.py`, the default set and each `--label`ed one), from its results file and its
searches' logs: how well the supernet has learned when the architecture starts to learn (train accuracy over the
last warm-up epoch) and at the end (validation accuracy of the derived path), and what the searched networks score
when trained from scratch against the random ones. With `--rank-correlation`, also how well the first search's
supernet ranks the study's networks: each trained network's path scored on the validation split with that
supernet's weights (BatchNorm statistics measured again for the path), against its accuracy trained from scratch
(Kendall tau, as in Yu et al., "Evaluating the search phase of NAS"; a few seconds per network). A set whose search
runs are not here (results files travel to a new machine, run folders do not) keeps its supernet columns from the
last table. Last, what wins at the goal's latency: over every network of all the sets trained there (searched and
random, each once), how each stage's depth, mean kernel and mean expansion correlate with accuracy, beside the means
of the random networks and of the searched ones (where the searches lean against the data, a lever has something to
correct). It trains and times nothing.

    .venv/bin/python bench/search_levers.py [--space cluttered-fashion-64] [--rank-correlation]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics

from common import REPO, RESULTS, command_line, write_results
from search_vs_random import recorded_settings, search_settings

from tvmnas.run_folder import SearchRun, read_log

DEFAULT_SETTINGS = search_settings(())


def search_stats(run: str) -> dict:
    folder = REPO / run
    files = SearchRun(folder)
    config = json.loads(files.config.read_text())
    log = read_log(files.log)
    warm = config.get("warmup_epochs", 1)
    return {"supernet": config.get("supernet", "separate"),  # runs saved before the setting were separate
            "warmup_epochs": warm, "epochs": config["epochs"], "arch_lr": config.get("arch_lr"),
            "warmup_train_acc": log[warm - 1]["train_acc"] if warm >= 1 and len(log) >= warm else None,
            "final_valid_acc": log[-1]["valid_acc"] if log else None}


def supernet_ranking(run: str, entries: list[dict]) -> dict:
    """Kendall tau between the run's supernet's validation accuracy of each network's path and the network's mean
    test accuracy trained from scratch (every network of the study trained on two seeds or more)."""
    from scipy import stats

    from tvmnas.arch import Arch
    from tvmnas.data.datasets import load_search_data
    from tvmnas.search.config import SearchConfig
    from tvmnas.search.run import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, path_accuracy
    from tvmnas.search.supernet import Supernet
    from tvmnas.space import load_space
    from tvmnas.torch_file import load_tagged

    ckpt = load_tagged(SearchRun(REPO / run).checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
    cfg = SearchConfig.from_json(ckpt["config"], run)
    space = load_space(cfg.space)
    net = Supernet(space, cfg.supernet)
    net.load_state_dict(ckpt["supernet"])
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    scored = [(path_accuracy(net, Arch(space.name, tuple(e["ops"])), data)[1], e["mean"], e["role"])
              for e in entries if len(e["test_acc"]) >= 2]
    band = [s for s in scored if s[2] in ("searched", "random")]  # within +/-5% of the goal's latency
    tau = stats.kendalltau([s[0] for s in scored], [s[1] for s in scored])
    tau_band = stats.kendalltau([s[0] for s in band], [s[1] for s in band])
    print(f"{run}: Kendall tau {tau.statistic:+.2f} over {len(scored)} networks, {tau_band.statistic:+.2f} over "
          f"the {len(band)} at the goal's latency", flush=True)
    return {"ranking_run": run, "ranking_networks": len(scored), "kendall_tau": float(tau.statistic),
            "kendall_p": float(tau.pvalue), "band_networks": len(band), "kendall_tau_band": float(tau_band.statistic),
            "kendall_p_band": float(tau_band.pvalue)}


def flags_now(summary: dict) -> list[str]:
    """The set's search settings that differ from tvmnas's defaults now, as flags (its recorded `--search-args`
    where the results file predates `search_settings`): a set studied before the defaults changed reads right."""
    settings = recorded_settings(summary)
    if settings is None:
        return summary.get("search_args", [])
    return [f"--{key.replace('_', '-')} {value}" for key, value in settings.items()
            if value != DEFAULT_SETTINGS.get(key)]


def agreement(archs: list[list[str]]) -> float | None:
    """The share of layers two of the networks choose alike, mean over every pair: how consistently a set's
    searches choose (consistent is not the same as right: compare the accuracies)."""
    pairs = list(itertools.combinations(archs, 2))
    if not pairs:
        return None
    return statistics.mean(sum(a == b for a, b in zip(x, y)) / len(x) for x, y in pairs)


def row(result: dict, rank_correlation: bool) -> dict:
    summary = result["summary"]
    searched = [e for e in result["entries"] if e["role"] == "searched" and e.get("search_run")]
    runs = [search_stats(e["search_run"]) for e in searched if SearchRun(REPO / e["search_run"]).log.exists()]

    def mean_of(key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.mean(values) if values else None

    return {"label": summary.get("label") or "(defaults)", "search_args": summary.get("search_args", []),
            "flags": flags_now(summary),
            "supernet": sorted({r["supernet"] for r in runs}), "searches": len(runs),
            "warmup_train_acc": mean_of("warmup_train_acc"), "final_supernet_valid_acc": mean_of("final_valid_acc"),
            "searched_accs": summary.get("searched_accs", []), "searched_ms": summary.get("searched_ms", []),
            "random_networks": len(summary.get("random_accs", [])), "p_value": summary.get("p_value"),
            "searched_ranks": summary.get("searched_ranks"), "effect_over_sd": summary.get("effect_over_sd"),
            "agreement": agreement([e["ops"] for e in result["entries"] if e["role"] == "searched"]),
            **(supernet_ranking(searched[0]["search_run"], result["entries"])
               if rank_correlation and searched and SearchRun(REPO / searched[0]["search_run"]).checkpoint.exists()
               else {})}


RANKING_KEYS = ("ranking_run", "ranking_networks", "kendall_tau", "kendall_p", "band_networks", "kendall_tau_band",
                "kendall_p_band")


SUPERNET_KEYS = ("supernet", "searches", "warmup_train_acc", "final_supernet_valid_acc")


def earlier_row(space: str, label: str, keys: tuple[str, ...]) -> dict:
    """Those columns of the set's row in the last recorded table, if any."""
    path = RESULTS / f"search_levers_{space}.json"
    earlier = json.loads(path.read_text())["summary"]["rows"] if path.exists() else []
    return next(({k: r[k] for k in keys if k in r} for r in earlier if r["label"] == label), {})


def stage_features(space, ops: list[str]) -> dict[str, float]:
    """Per stage: the layers kept (not `zero`) and their mean kernel and expansion (0 where none is kept)."""
    from tvmnas.arch import parse_op

    features, start = {}, 0
    for i, stage in enumerate(space.stages, 1):
        kept = [parse_op(op) for op in ops[start:start + stage.layers] if op != "zero"]
        start += stage.layers
        features[f"stage {i} depth"] = float(len(kept))
        features[f"stage {i} kernel"] = statistics.mean(b.kernel for b in kept) if kept else 0.0
        features[f"stage {i} expansion"] = statistics.mean(b.expand for b in kept) if kept else 0.0
    return features


def band_features(space_name: str, results: list[dict]) -> list[dict]:
    """Over the networks trained at the goal's latency (every set's searched and random ones, each architecture
    once): each feature's Pearson correlation with mean test accuracy (and its p), the random and searched means."""
    from scipy import stats

    from tvmnas.space import load_space

    space, networks = load_space(space_name), {}
    for result in results:
        for e in result["entries"]:
            if e["role"] in ("searched", "random") and len(e.get("test_acc", [])) >= 2:
                networks.setdefault(tuple(e["ops"]), (e["role"], e["mean"]))
    if len(networks) < 5:
        return []
    rows = [(role, acc, stage_features(space, list(ops))) for ops, (role, acc) in networks.items()]
    table = []
    for name in rows[0][2]:
        values, accs = [r[2][name] for r in rows], [r[1] for r in rows]
        corr = stats.pearsonr(values, accs) if len(set(values)) > 1 else None
        by_role = {role: [r[2][name] for r in rows if r[0] == role] for role in ("random", "searched")}
        table.append({"feature": name, "networks": len(rows),
                      "correlation": None if corr is None else float(corr.statistic),
                      "p": None if corr is None else float(corr.pvalue),
                      **{f"{role}_mean": statistics.mean(v) if v else None for role, v in by_role.items()}})
    return table


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--rank-correlation", action="store_true",
                        help="also score the study's networks with each set's first supernet (Kendall tau)")
    args = parser.parse_args()
    files = sorted(RESULTS.glob(f"search_vs_random_{args.space}*.json"))
    results = [json.loads(path.read_text()) for path in files]
    # a set whose searched networks are not trained yet (a study under way) has nothing to compare
    rows = [row(r, args.rank_correlation) for r in results if r["summary"].get("searched_accs")]
    if not args.rank_correlation:  # keep the rankings measured before (they take minutes per set)
        rows = [{**earlier_row(args.space, r["label"], RANKING_KEYS), **r} for r in rows]
    # a set whose search logs are gone (a new machine keeps results files, not run folders), or fewer of them than
    # the last table averaged: its supernet columns as recorded before
    earlier = {r["label"]: earlier_row(args.space, r["label"], SUPERNET_KEYS) for r in rows}
    rows = [{**r, **earlier[r["label"]]} if earlier[r["label"]].get("searches", 0) > r["searches"] else r
            for r in rows]
    own = RESULTS / f"search_vs_random_{args.space}.json"
    random_agreement = agreement([e["ops"] for e in json.loads(own.read_text())["entries"]
                                  if e["role"] == "random"]) if own.exists() else None
    lines = [f"## Levers on the search: {args.space}", "",
             "Per set of searches: the supernet's train accuracy over its last warm-up epoch and its derived path's "
             "validation accuracy at the end (both mean over the set's searches whose logs they were read from: "
             "the count beside its name), then the searched networks "
             "trained from scratch (mean test accuracy per search) against the random ones at equal predicted "
             "latency (one-sided Mann-Whitney p, ranks among searched + random, effect in seed SDs); Kendall tau: "
             "how the first search's supernet ranks the study's networks against their accuracy trained from "
             "scratch: all of them (fastest, slowest and MobileNetV2-style included), and those at the goal's "
             "latency only (the set's searched networks and the random ones), where the search has to choose. Flags: "
             "the set's search settings that differ from tvmnas's defaults now. Agreement: the share of layers two "
             "of the set's searched networks choose alike, mean over pairs (the random networks of the default "
             f"set's cloud: {fmt(random_agreement)}).", "",
             "| searches | supernet | flags | warm-up train acc | final supernet valid acc | searched accs | "
             "randoms | p | ranks | effect (SD) | agreement | Kendall tau (networks) | at the goal (networks) |",
             "|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} ({r['searches']}) | {', '.join(r['supernet'])} | "
                     f"`{' '.join(r['flags']) or '-'}` | {fmt(r['warmup_train_acc'])} | "
                     f"{fmt(r['final_supernet_valid_acc'])} | {', '.join(fmt(a) for a in r['searched_accs'])} | "
                     f"{r['random_networks']} | {fmt(r['p_value'], '.4f')} | {r['searched_ranks']} | "
                     f"{fmt(r['effect_over_sd'], '+.2f')} | {fmt(r['agreement'], '.2f')} | "
                     f"{fmt(r.get('kendall_tau'), '+.2f')} ({r.get('ranking_networks', '-')}) | "
                     f"{fmt(r.get('kendall_tau_band'), '+.2f')} ({r.get('band_networks', '-')}) |")
    features = band_features(args.space, results)
    if features:
        lines += ["", f"What wins at the goal's latency ({features[0]['networks']} networks trained there, searched "
                  "and random; Pearson correlation with test accuracy):", "",
                  "| feature | correlation | p | random mean | searched mean |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {f['feature']} | {fmt(f['correlation'], '+.2f')} | {fmt(f['p'], '.3f')} | "
                  f"{fmt(f['random_mean'], '.2f')} | {fmt(f['searched_mean'], '.2f')} |" for f in features]
    write_results(f"search_levers_{args.space}", {"rows": rows, "band_features": features,
                                                   "random_agreement": random_agreement}, rows, lines,
                  command_line(), per_cpu=False)


if __name__ == "__main__":
    main()
