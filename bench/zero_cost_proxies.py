"""Do training-free scores rank the study's networks like their accuracy trained from scratch? (issue 17)

Every network the search-vs-random study trained (`bench/search_vs_random.py`'s results files, one recipe, the
study's seeds) is scored at initialization, without training: NASWOT as `tvmnas search --method naswot` scores it
(`tvmnas.search.run.naswot_scorer`: one batch of 64 training images, the mean of 2 seeded initializations), and, for
comparison, the zero-cost proxies of Abdelfattah et al. (ICLR 2021) on the same batch and initializations (grad-norm,
snip, synflow) and the plain counts (FLOPs, parameters). Reported: each score's Kendall tau against the networks'
mean test accuracy over all of them, over those within +/-5% of the study's goal (where a search has to choose), and
over the study's random networks alone (drawn uniformly at one latency: no search's preference in them); the
networks proposed from outside the study (`bench/ceiling_probe.py --archs`) are ranked among those at the goal but
left out of every tau (they were proposed with the test accuracies in view). Times nothing.

    .venv/bin/python bench/zero_cost_proxies.py               # a few minutes here
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import numpy as np
from scipy import stats

from ceiling_probe import study_networks
from common import RESULTS, command_line, write_results
from search_vs_random import Recipe

from tvmnas.arch import Arch
from tvmnas.data.datasets import load_search_data
from tvmnas.search.config import SearchConfig
from tvmnas.search.run import initialized_network, naswot_batch, naswot_scorer
from tvmnas.search.zero_cost import INITS
from tvmnas.space import load_space

PROXIES = ("naswot", "flops", "params", "grad_norm", "snip", "synflow")


def counts(net, images) -> tuple[float, float]:
    """Multiply-adds of one image's forward pass and the parameter count."""
    import torch

    total = [0]

    def hook(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            total[0] += output[0].numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(hook) for m in net.modules()]
    net.eval()
    with torch.no_grad():
        net(images[:1])
    for h in hooks:
        h.remove()
    return float(total[0]), float(sum(p.numel() for p in net.parameters()))


def gradient_scores(net, images, labels) -> tuple[float, float]:
    """grad-norm (the norm of the loss's gradient) and snip (sum |w * dL/dw| over conv and linear weights)."""
    import torch

    net.train()
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(images), labels).backward()
    weights = [p for p in net.parameters() if p.grad is not None]
    grad_norm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in weights))
    snip = sum(float((p.grad * p).abs().sum()) for p in weights if p.dim() > 1)
    return grad_norm, snip


def synflow(net, shape) -> float:
    """log of sum |w * dR/dw|, R the output of the network with |weights| on an input of ones (float64)."""
    import torch

    net = net.double().eval()
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    net.zero_grad()
    net(torch.ones(1, *shape, dtype=torch.float64)).sum().backward()
    return math.log(sum(float((p.grad * p).abs().sum()) for p in net.parameters()
                        if p.grad is not None and p.dim() > 1) + 1e-300)


def proxies(space, arch: Arch, naswot, images, labels, seed: int) -> dict:
    from tvmnas.model.network import Network

    scores = {"naswot": naswot(arch)}
    per_init = []
    for init in range(INITS):  # naswot_scorer's initializations
        per_init.append((*gradient_scores(initialized_network(space, arch, seed, init), images, labels),
                         synflow(initialized_network(space, arch, seed, init), images.shape[1:])))
    scores["grad_norm"], scores["snip"], scores["synflow"] = (float(np.mean(v)) for v in zip(*per_init))
    scores["flops"], scores["params"] = counts(Network(space, arch), images)
    return scores


def tau(rows: list[dict], proxy: str) -> tuple[float, float, int]:
    t, p = stats.kendalltau([r[proxy] for r in rows], [r["acc"] for r in rows])
    return float(t), float(p), len(rows)


def main() -> None:
    import torch

    from tvmnas.data.loading import batches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--data", default="cluttered-fashion-64")
    parser.add_argument("--epochs", type=int, default=3, help="the study's recipe")
    parser.add_argument("--images-per-epoch", type=int, default=12800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="the study's seeds")
    parser.add_argument("--goal-factor", type=float, default=0.67)
    parser.add_argument("--seed", type=int, default=0, help="the scores' batch and initializations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = load_space(args.space)
    recipe = Recipe(args.data, args.epochs, args.images_per_epoch, tuple(args.seeds), ())
    nets = study_networks(args.space, recipe)
    mbv2 = next(n for n in nets if n["role"] == "mobilenetv2-style")
    goal_ms = args.goal_factor * mbv2["predicted_ms"]
    probe = RESULTS / f"ceiling_probe_{args.space}.json"
    proposed = [e for e in json.loads(probe.read_text())["entries"] if e["role"] == "proposed"] \
        if probe.exists() else []
    data = load_search_data(args.data, space.input_channels, space.input_size, SearchConfig.valid_fraction,
                            args.seed)
    batch = SearchConfig.batch_size
    naswot = naswot_scorer(space, data, batch, args.seed)
    images, labels = next(batches(data.train, [naswot_batch(data, batch, args.seed)], torch.device("cpu")))
    rows = []
    for n in nets + [{"ops": e["ops"], "role": "proposed", "predicted_ms": e["predicted_ms"],
                      "study_accs": e["study_accs"]} for e in proposed]:
        arch = Arch(args.space, tuple(n["ops"]))
        row = {"ops": n["ops"], "role": n["role"], "predicted_ms": n["predicted_ms"],
               "acc": statistics.mean(n["study_accs"]),
               "at_goal": abs(n["predicted_ms"] / goal_ms - 1) <= 0.05 or n["role"] == "proposed",
               **proxies(space, arch, naswot, images, labels, args.seed)}
        rows.append(row)
        print(f"{len(rows)}/{len(nets) + len(proposed)} {n['role']} {row['acc']:.4f} naswot {row['naswot']:.1f}",
              flush=True)
    sets = {"all": [r for r in rows if r["role"] != "proposed"],
            "at_goal": [r for r in rows if r["at_goal"] and r["role"] != "proposed"],
            "random": [r for r in rows if r["role"] == "random"]}
    table = {proxy: {name: tau(rs, proxy) for name, rs in sets.items()} for proxy in PROXIES}
    at_goal = [r for r in rows if r["at_goal"]]
    ranks = {proxy: {" ".join(r["ops"]): 1 + sorted(at_goal, key=lambda q: -q[proxy]).index(r)
                     for r in at_goal if r["role"] == "proposed"} for proxy in PROXIES}
    summary = {"space": args.space, "data": args.data, "seeds": args.seeds, "goal_ms": goal_ms,
               "networks": len(sets["all"]), "at_goal": len(sets["at_goal"]), "random": len(sets["random"]),
               "inits": INITS, "batch_images": batch,
               "kendall_tau": {p: {k: v[0] for k, v in t.items()} for p, t in table.items()},
               "p_value": {p: {k: v[1] for k, v in t.items()} for p, t in table.items()},
               "proposed_rank_at_goal": ranks}
    lines = [f"## Training-free scores against accuracy trained from scratch: {args.space}", "",
             f"The {len(sets['all'])} networks the search-vs-random study trained ({args.epochs} epochs of "
             f"{args.images_per_epoch} images, seeds {args.seeds}, mean test accuracy), each scored untrained on one "
             f"batch of {batch} training images, the mean of {INITS} initializations. Kendall tau (p) against the "
             f"accuracy: over all; over the {len(sets['at_goal'])} within +/-5% of the goal ({goal_ms:.4f} ms); over "
             f"the {len(sets['random'])} random networks alone (one latency band, no search's preference). The "
             "supernet of a default search ranks the networks at the goal at tau +0.09 to +0.30 "
             "(`search_levers_cluttered-fashion-64.md`). Proposed: the ranks at the goal (of "
             f"{len(at_goal)}) of the networks `ceiling_probe` proposed (left out of every tau).", "",
             "| score | all | at the goal | random | proposed: rank at the goal |", "|---|---:|---:|---:|---|"]
    for proxy in PROXIES:
        cells = " | ".join(f"{t:+.2f} ({p:.3f})" for t, p, _ in table[proxy].values())
        lines.append(f"| {proxy} | {cells} | {', '.join(str(r) for r in ranks[proxy].values()) or '-'} |")
    write_results(f"zero_cost_proxies_{args.space}", summary, rows, lines, command_line())


if __name__ == "__main__":
    main()
