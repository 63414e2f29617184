"""What one network costs a training-free search (`tvmnas search --method naswot`), and that its score is NASWOT's.

Networks drawn uniformly per layer from the space (seeded) are scored as the search scores them
(`tvmnas.search.run.naswot_scorer`'s batch and initializations, `tvmnas.search.zero_cost.naswot_score`), and, on
the same networks, initializations and images, by NASWOT's kernel written out directly (Mellor et al. 2021:
K = c c^T + (1 - c)(1 - c)^T over every ReLU unit's 0/1 pattern c, in float64; how tvmnas computed it until
naswot_score accumulated one product per layer). The two are timed interleaved, alternating which goes first, so
that the machine's slow phases fall on both; the scores must be equal to the bit. Reported: seconds per network
(median), their ratio, and what a search of 500 networks costs at the product's median.

    .venv/bin/python bench/naswot_speed.py               # about 2 minutes here
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from common import command_line, write_results

from tvmnas.arch import Arch
from tvmnas.data.datasets import load_search_data
from tvmnas.data.loading import first_images
from tvmnas.search.config import SearchConfig
from tvmnas.search.run import initialized_network, naswot_batch
from tvmnas.search.zero_cost import INITS, naswot_score
from tvmnas.space import load_space


def direct_score(net, images) -> float:
    """NASWOT as written: every unit's pattern concatenated, K = c c^T + (1 - c)(1 - c)^T in float64."""
    import torch

    codes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: codes.append((out.detach() > 0).flatten(1).double()))
             for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))]
    net.train()
    with torch.no_grad():
        net(images)
    for hook in hooks:
        hook.remove()
    c = torch.cat(codes, 1)
    sign, logdet = torch.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T)
    return float(logdet) if sign > 0 else -math.inf


def timed_score(score, space, arch: Arch, images, seed: int) -> tuple[float, float]:
    """The search's score of `arch` (the mean over its initializations) by `score`, and the seconds it took,
    building the networks included."""
    started = time.perf_counter()
    value = float(np.mean([score(initialized_network(space, arch, seed, init), images) for init in range(INITS)]))
    return value, time.perf_counter() - started


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--data", default="cluttered-fashion-64")
    parser.add_argument("--networks", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the study ran one search per core)")
    parser.add_argument("--seed", type=int, default=0, help="the networks' draw, the batch and initializations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    data = load_search_data(args.data, space.input_channels, space.input_size, SearchConfig.valid_fraction,
                            args.seed)
    images = torch.from_numpy(first_images(data.train, naswot_batch(data, SearchConfig.batch_size, args.seed)))
    rng = np.random.default_rng(args.seed)
    archs = [Arch(space.name, tuple(layer.choices[rng.integers(len(layer.choices))] for layer in space.layers()))
             for _ in range(args.networks)]
    timed_score(naswot_score, space, archs[0], images, args.seed)  # warm-up: first calls allocate
    rows = []
    for i, arch in enumerate(archs):
        order = [("product", naswot_score), ("direct", direct_score)]
        results = {name: timed_score(f, space, arch, images, args.seed)
                   for name, f in (order if i % 2 == 0 else order[::-1])}
        rows.append({"ops": list(arch.ops), **{f"{k}_score": v[0] for k, v in results.items()},
                     **{f"{k}_s": v[1] for k, v in results.items()}})
        print(f"{i + 1}/{len(archs)} product {results['product'][1]:.3f} s, direct {results['direct'][1]:.3f} s, "
              f"equal {results['product'][0] == results['direct'][0]}", flush=True)
    product_s = statistics.median(r["product_s"] for r in rows)
    direct_s = statistics.median(r["direct_s"] for r in rows)
    equal = sum(r["product_score"] == r["direct_score"] for r in rows)
    summary = {"space": args.space, "data": args.data, "networks": len(rows), "threads": args.threads,
               "batch_images": SearchConfig.batch_size, "inits": INITS, "product_s_per_network": product_s,
               "direct_s_per_network": direct_s, "speedup": direct_s / product_s,
               "speedup_median_per_network": statistics.median(r["direct_s"] / r["product_s"] for r in rows),
               "scores_equal": equal, "search_500_s": 500 * product_s}
    lines = [f"## NASWOT scoring cost: {args.space}", "",
             f"{len(rows)} networks drawn uniformly per layer, each scored as `tvmnas search --method naswot` scores "
             f"it ({SearchConfig.batch_size} images, {INITS} initializations, networks built included), "
             f"{args.threads} torch thread(s), timed interleaved with NASWOT's kernel written out directly.", "",
             "| scoring | seconds per network (median) |", "|---|---:|",
             f"| tvmnas (one product per ReLU layer, float32) | {product_s:.3f} |",
             f"| direct (c c^T + (1 - c)(1 - c)^T, float64) | {direct_s:.3f} |", "",
             f"Speedup {summary['speedup']:.2f}x (median of per-network ratios "
             f"{summary['speedup_median_per_network']:.2f}x); scores equal to the bit on {equal} of {len(rows)} "
             f"networks; a search of 500 networks at this rate: {summary['search_500_s'] / 60:.1f} min."]
    write_results(f"naswot_speed_{args.space}", summary, rows, lines, command_line())


if __name__ == "__main__":
    main()
