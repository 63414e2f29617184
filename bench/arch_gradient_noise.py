"""How much signal does one architecture step carry? (issue 17) A finished search's supernet, its architecture
parameters reset to uniform (where the search's architecture phase starts), and many draws of the accuracy term's
alpha gradient as an architecture step computes it (`tvmnas.search.run.arch_step`: two paths per layer drawn, binary
gates), on validation batches of several sizes, each draw on a batch of its own, and at one size on a single batch
(what remains is the noise of the drawn paths alone). Per layer and path: the gradient's mean over the draws and
its SD over single draws; |mean| / SD estimates one draw's signal-to-noise ratio, but the mean of n draws of pure
noise is itself about SD / sqrt(n) off zero, so the signal is also given with that taken out. A search's
architecture step is one draw (`--arch-samples`: several, averaged); its alphas move by Adam steps normalized by
the gradient's RMS, so a path whose signal is a fraction r of the noise needs about (2 / r)^2 draws before its
direction stands out 2 standard errors from the noise. It times nothing.

    .venv/bin/python bench/arch_gradient_noise.py [--run SEARCH_RUN] [--draws 200] [--batch-sizes 16 64 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from common import REPO, RESULTS, command_line, write_results

from tvmnas.data.datasets import load_search_data
from tvmnas.data.loading import batches
from tvmnas.run_folder import SearchRun
from tvmnas.search.config import SearchConfig
from tvmnas.search.latency import LatencyTable
from tvmnas.search.run import arch_step, load_checkpoint, make_state, steps_per_epoch
from tvmnas.space import load_space

NAME = "arch_gradient_noise"


def default_run() -> Path:
    """The search of the search-vs-random study's default set with the lowest seed whose folder this machine has
    (the study's results file names the folders)."""
    study = json.loads((RESULTS / "search_vs_random_cluttered-fashion-64.json").read_text())
    runs = [REPO / e["search_run"] for e in study["entries"] if e["role"] == "searched" and e.get("search_run")]
    present = [run for run in runs if SearchRun(run).checkpoint.exists()]
    if not present:
        raise SystemExit("no search folder of the study's default set here: pass --run")
    return min(present, key=lambda run: search_config(run).seed)


def search_config(run: Path) -> SearchConfig:
    config = SearchRun(run).config
    return SearchConfig.from_json(json.loads(config.read_text()), str(config))


def gradient_draws(run: Path, draws: int, batch_size: int, same_batch: bool, seed: int
                   ) -> tuple[list[np.ndarray], int]:
    """Per layer, draws x paths: the accuracy term's alpha gradient of single architecture steps; and how many
    draws the search itself made."""
    cfg = search_config(run)
    space = load_space(cfg.space)
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    state = make_state(space, cfg, len(data.train))
    load_checkpoint(SearchRun(run).checkpoint, state, cfg)
    net = state.net
    net.train()  # as in the search: batch statistics
    with torch.no_grad():
        for alpha in net.alphas():
            alpha.zero_()
    for group in state.arch_opt.param_groups:
        group["lr"] = 0.0  # the gradient is read, the alphas stay uniform
    accuracy_only = dataclasses.replace(cfg, loss="none", entropy_weight=0.0)
    no_latency = LatencyTable(0.0, tuple(tuple(0.0 for _ in layer.choices) for layer in space.layers()))
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    fixed = rng.choice(len(data.valid), batch_size, replace=False)
    out = [np.zeros((draws, len(layer.choices))) for layer in space.layers()]
    for i in range(draws):
        index = fixed if same_batch else rng.choice(len(data.valid), batch_size, replace=False)
        batch = next(batches(data.valid, [index], torch.device("cpu")))
        arch_step(net, state.arch_opt, no_latency, accuracy_only, [batch], gen)
        for li, alpha in enumerate(net.alphas()):
            out[li][i] = alpha.grad.numpy()
    search_draws = ((cfg.epochs - cfg.warmup_epochs) * (steps_per_epoch(len(data.train), cfg) // cfg.arch_every)
                    * cfg.arch_samples)  # as `train_epoch` counts them
    return out, search_draws


def noise_stats(grads: list[np.ndarray]) -> dict:
    """Over the draws, per path: SD and |mean| / SD (pure noise gives a median of 0.674 / sqrt(n) over n draws);
    pooled over the paths, one draw's true signal-to-noise ratio: mean(m^2 / s^2) - 1 / n estimates the mean of
    (true mean / SD)^2 without bias, its square root (0 where negative) is the signal; and the share of paths whose
    mean stands more than 2 standard errors from zero (4.6% for pure noise)."""
    n = len(grads[0])
    means, sds = [g.mean(0) for g in grads], [g.std(0, ddof=1) for g in grads]
    drawn = [s > 0 for s in sds]  # SD 0: a path never drawn
    snr = np.concatenate([np.abs(m[d]) / s[d] for m, s, d in zip(means, sds, drawn)])
    signal_squared = float(np.mean(snr ** 2)) - 1 / n
    return {"median_sd": float(np.median(np.concatenate(sds))), "median_snr": float(np.median(snr)),
            "noise_floor_snr": 0.674 / math.sqrt(n), "signal_snr": math.sqrt(max(signal_squared, 0.0)),
            "paths_beyond_2se": float(np.mean(snr * math.sqrt(n) > 2)),
            "layer_median_snr": [float(np.median(np.abs(m[d]) / s[d])) for m, s, d in zip(means, sds, drawn)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished search folder (default: the study's first search)")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = args.run or default_run()
    same_at = 64 if 64 in args.batch_sizes else args.batch_sizes[0]
    entries = []
    for batch_size, same in [(b, False) for b in args.batch_sizes] + [(same_at, True)]:
        grads, search_draws = gradient_draws(run, args.draws, batch_size, same, args.seed)
        stats = noise_stats(grads)
        entries.append({"batch_size": batch_size, "same_batch": same, "draws": args.draws, **stats})
        print(f"batch {batch_size}{' (one batch)' if same else ''}: median SD {stats['median_sd']:.5f}, "
              f"|mean|/SD {stats['median_snr']:.3f} (noise alone {stats['noise_floor_snr']:.3f}), signal "
              f"{stats['signal_snr']:.3f}", flush=True)
    new = {e["batch_size"]: e for e in entries if not e["same_batch"]}
    one = next(e for e in entries if e["same_batch"])
    summary = {"run": str(run.resolve().relative_to(REPO)) if run.resolve().is_relative_to(REPO) else str(run),
               "draws": args.draws, "median_snr": {str(b): e["median_snr"] for b, e in new.items()},
               "noise_floor_snr": entries[0]["noise_floor_snr"],
               "signal_snr": {str(b): e["signal_snr"] for b, e in new.items()},
               "paths_beyond_2se": {str(b): e["paths_beyond_2se"] for b, e in new.items()},
               "median_sd": {str(b): e["median_sd"] for b, e in new.items()},
               "paths_only_sd_over_new_batches": one["median_sd"] / new[same_at]["median_sd"],
               }
    lines = ["## How much signal one architecture step carries", "",
             f"`{summary['run']}`'s supernet, alphas reset to uniform; the accuracy term's alpha gradient of "
             f"{args.draws} single draws (two paths per layer, binary gates) per row, per path over the draws: SD, "
             f"abs(mean) / SD (pure noise alone gives a median of {entries[0]['noise_floor_snr']:.3f} over "
             f"{args.draws} draws); pooled over the paths, one draw's signal-to-noise ratio with that noise of the "
             "means taken out (sqrt(max(mean of (mean / SD)^2 - 1 / draws, 0))), and the share of paths whose mean "
             "stands more than 2 standard errors from zero (pure noise: 4.6%).", "",
             "| validation batch | median SD | median abs(mean) / SD | signal / SD (pooled) | paths beyond 2 SE |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {e['batch_size']}{' (the same batch every draw: the paths drawn alone)' if e['same_batch'] else ''}"
              f" | {e['median_sd']:.5f} | {e['median_snr']:.3f} | {e['signal_snr']:.3f} | "
              f"{e['paths_beyond_2se']:.0%} |" for e in entries]
    summary["search_draws"] = search_draws
    lines += ["", f"The search itself drew {search_draws} times in all (batches of {search_config(run).batch_size}),"
              " each draw updating two of a layer's paths."]
    write_results(NAME, summary, entries, lines, command_line(), per_cpu=False)  # it times nothing


if __name__ == "__main__":
    main()
