"""How good can a network at the study's goal latency get? The best ones found, trained again on new seeds (issue 17).

The search-vs-random study (`bench/search_vs_random.py`) asks the searched networks to match the MobileNetV2-style
network's accuracy at `--goal-factor` x its latency. This bench asks whether any network the study trained at that
latency does: it takes the `--top` most accurate networks within the goal (searched or random, every set of searches
in the study's results files, the same recipe; ranked by their mean over the study's seeds) and the
MobileNetV2-style network, and trains each again on `--seeds` (seeds the study did not use). Picked for being best on
the study's seeds, the top networks carry those seeds' luck (the winner's curse); their accuracy on the new seeds
does not, so the verdict compares new seeds with new seeds. Resumable like the study: every training lives in
`--work` and is reused, and the results file is rewritten after each.

    .venv/bin/python bench/ceiling_probe.py                   # 6 networks x 2 seeds (about 30 min here)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path

from common import DEFAULT_DB, REPO, RESULTS, command_line, write_results
from search_vs_random import (Net, Recipe, choice_indices, pinned_table, pooled_sd, recipe_results,
                              recorded_trainings, same_recipe, table_file, train)

from tvmnas.arch import Arch
from tvmnas.errors import TvmnasError
from tvmnas.space import load_space


def study_networks(space: str, recipe: Recipe) -> list[dict]:
    """Every network the study's results files trained with this recipe on all of their seeds, once each (by
    architecture), with the mean over those seeds."""
    found: dict[tuple[str, ...], dict] = {}
    for path, results in recipe_results(space, recipe):
        s = results["summary"]
        for e in results["entries"]:
            if len(e["test_acc"]) == len(s["seeds"]) and tuple(e["ops"]) not in found:
                found[tuple(e["ops"])] = {"role": e["role"], "predicted_ms": e["predicted_ms"],
                                          "study_accs": list(e["test_acc"]), "study_seeds": list(s["seeds"]),
                                          "study_mean": e["mean"], "set": path.stem}
    return [{"ops": list(ops), **info} for ops, info in found.items()]


def probe_name(ops: list[str]) -> str:
    return "probe-" + hashlib.sha1(" ".join(ops).encode()).hexdigest()[:10]


def earlier_probe(name: str, recipe: Recipe) -> dict[tuple[tuple[str, ...], int], float]:
    """(ops, seed) -> accuracy from this bench's earlier results file (the same recipe): a probe carries across
    machines like the study."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    results = json.loads(path.read_text())
    s = results["summary"]
    if not same_recipe(s, recipe):
        return {}
    return {(tuple(e["ops"]), seed): acc for e in results["entries"] for seed, acc in zip(s["seeds"], e["new_accs"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--data", default="cluttered-fashion-64")
    parser.add_argument("--goal-factor", type=float, default=0.67,
                        help="the study's goal, as a fraction of the MobileNetV2-style network's predicted ms")
    parser.add_argument("--top", type=int, default=5, help="networks within the goal to train again")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3], help="new training seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images-per-epoch", type=int, default=12800)
    parser.add_argument("--archs", nargs="+", default=[], metavar="OPS",
                        help="networks proposed from outside the study (each one quoted string of op names, "
                             "e.g. 'mb_k3_e6 zero ...'), trained on the study's seeds and the new ones")
    parser.add_argument("--work", type=Path, help="where the trainings live (default runs/svr-<space>)")
    args = parser.parse_args()

    name = f"ceiling_probe_{args.space}"
    recipe = Recipe(args.data, args.epochs, args.images_per_epoch, tuple(args.seeds), ())
    study = study_networks(args.space, recipe)
    mbv2 = next((n for n in study if n["role"] == "mobilenetv2-style"), None)
    if mbv2 is None:
        raise SystemExit(f"no results file of the study on {args.space} holds the MobileNetV2-style network")
    goal_ms = args.goal_factor * mbv2["predicted_ms"]
    at_goal = sorted((n for n in study if n["role"] in ("searched", "random", "extra")
                      and n["predicted_ms"] <= goal_ms * (1 + 1e-9)), key=lambda n: -n["study_mean"])
    work = args.work or REPO / "runs" / f"svr-{args.space}"
    work.mkdir(parents=True, exist_ok=True)
    study_recipe = Recipe(args.data, args.epochs, args.images_per_epoch, tuple(mbv2["study_seeds"]), ())
    proposed = [proposed_network(args.space, ops, work, study_recipe) for ops in args.archs]
    picked = [mbv2] + at_goal[:args.top] + proposed
    recorded = {**recorded_trainings(args.space, recipe), **earlier_probe(name, recipe)}
    nets = [Net("mobilenetv2-style" if n is mbv2 else probe_name(n["ops"]), n["role"],
                Arch(args.space, tuple(n["ops"])), n["predicted_ms"]) for n in picked]
    for i, (info, net) in enumerate(zip(picked, nets)):
        if info["role"] == "proposed" and not info["study_accs"]:
            on_study_seeds = Net(net.name, net.role, net.arch, net.predicted_ms)
            train(on_study_seeds, study_recipe, work, recorded_trainings(args.space, study_recipe))
            info.update(study_accs=on_study_seeds.accs, study_mean=on_study_seeds.mean)
        train(net, recipe, work, recorded)
        report(args, name, goal_ms, picked, nets, complete=i == len(nets) - 1)


def proposed_network(space_name: str, text: str, work: Path, recipe: Recipe) -> dict:
    """A network proposed with `--archs`: its predicted latency from the study's pinned table (no study accuracy
    yet: trained on the study's seeds by `main`)."""
    space = load_space(space_name)
    ops = tuple(text.split())
    try:
        arch = Arch(space.name, ops)
        space.check_arch(arch)
    except TvmnasError as err:
        raise SystemExit(f"--archs {text!r}: {err}") from None
    pinned = json.loads(table_file(space.name).read_text())
    table, _ = pinned_table(space, pinned["target"], pinned["level"], DEFAULT_DB, work, repin=False)
    return {"ops": list(arch.ops), "role": "proposed", "predicted_ms": table.arch_ms(choice_indices(space, ops)),
            "study_accs": [], "study_seeds": list(recipe.seeds), "study_mean": None, "set": "--archs"}


def report(args, name: str, goal_ms: float, picked: list[dict], nets: list[Net], complete: bool) -> None:
    rows = [{**info, "name": net.name, "new_accs": net.accs, "new_mean": net.mean,
             "all_mean": statistics.mean(info["study_accs"] + net.accs) if info["study_accs"] + net.accs else None}
            for info, net in zip(picked, nets)]
    mbv2 = rows[0]
    top = [r for r in rows[1:] if r["new_accs"] and r["role"] != "proposed"]
    proposed = [r for r in rows if r["role"] == "proposed"]
    sd = pooled_sd([n for n in nets if n.accs])
    summary = {"space": args.space, "data": args.data, "goal_factor": args.goal_factor, "goal_ms": goal_ms,
               "seeds": args.seeds, "train_epochs": args.epochs, "train_images_per_epoch": args.images_per_epoch,
               "complete": complete, "new_seed_sd": sd, "mobilenetv2_style_ms": mbv2["predicted_ms"],
               "mobilenetv2_style_study_acc": mbv2["study_mean"], "mobilenetv2_style_new_acc": mbv2["new_mean"],
               "mobilenetv2_style_all_acc": mbv2["all_mean"]}
    if top and mbv2["new_mean"] is not None:
        best = max(top, key=lambda r: r["new_mean"])
        summary.update({"best_at_goal_new_acc": best["new_mean"], "best_at_goal_ops": best["ops"],
                        "best_at_goal_study_acc": best["study_mean"],
                        "top_at_goal_new_acc_mean": statistics.mean(r["new_mean"] for r in top),
                        "top_at_goal_study_acc_mean": statistics.mean(r["study_mean"] for r in top),
                        "any_at_goal_reaches_mobilenetv2_style": best["new_mean"] >= mbv2["new_mean"]})
    def accs(values: list[float]) -> str:
        return ", ".join(f"{a:.4f}" for a in values) or "-"

    def within(r: dict) -> bool:
        return r["predicted_ms"] <= goal_ms * (1 + 1e-9)

    if proposed:  # on every seed, against the MobileNetV2-style network's mean over the same seeds
        summary["proposed"] = [{"ops": r["ops"], "predicted_ms": r["predicted_ms"], "within_goal": within(r),
                                "all_acc": r["all_mean"], "seeds_trained": len(r["study_accs"]) + len(r["new_accs"])}
                               for r in proposed]
    lines = [f"## The best networks at the goal's latency, trained again: {args.space}", "",
             f"Goal {goal_ms:.4f} ms = {args.goal_factor} x the MobileNetV2-style network's {mbv2['predicted_ms']:.4f} "
             f"ms. The {len(picked) - 1 - len(proposed)} networks within it that scored best in the search-vs-random "
             f"study (mean over its seeds {picked[0]['study_seeds']}), and the MobileNetV2-style one, trained again on "
             f"seeds {args.seeds} ({args.epochs} epochs of {args.images_per_epoch} images of `{args.data}`)"
             + (f"; {len(proposed)} networks proposed from outside the study (`--archs`), trained on both sets of "
                "seeds." if proposed else "."), "",
             "| network | role | from | predicted ms | study seeds | new seeds | new mean | all seeds |",
             "|---|---|---|---:|---|---|---:|---:|"]
    for r in rows:
        study = f"{r['study_mean']:.4f}" if r["role"] != "proposed" else accs(r["study_accs"])
        lines.append(f"| `{' '.join(r['ops'])}` | {r['role']} | {r['set'].removeprefix('search_vs_random_')} | "
                     f"{r['predicted_ms']:.4f} | {study} | {accs(r['new_accs'])} | "
                     + (f"{r['new_mean']:.4f} | " if r["new_accs"] else "- | ")
                     + (f"{r['all_mean']:.4f} |" if r["all_mean"] is not None else "- |"))
    if "best_at_goal_new_acc" in summary:
        lines += ["", f"On the new seeds (seed SD {sd:.4f}): the best network within the goal "
                      f"{summary['best_at_goal_new_acc']:.4f} (it scored {summary['best_at_goal_study_acc']:.4f} on "
                      f"the study's seeds), the top {len(top)} on average {summary['top_at_goal_new_acc_mean']:.4f} "
                      f"(study seeds {summary['top_at_goal_study_acc_mean']:.4f}); MobileNetV2-style "
                      f"{summary['mobilenetv2_style_new_acc']:.4f} (study seeds "
                      f"{summary['mobilenetv2_style_study_acc']:.4f}). Any network found at the goal reaches it: "
                      f"{summary['any_at_goal_reaches_mobilenetv2_style']}."]
    for r in proposed:
        if r["all_mean"] is not None and mbv2["all_mean"] is not None:
            lines += ["", f"Proposed `{' '.join(r['ops'])}` ({r['predicted_ms']:.4f} ms, "
                          f"{'within' if within(r) else 'beyond'} the goal): "
                          f"{r['all_mean']:.4f} over {len(r['study_accs']) + len(r['new_accs'])} seeds against the "
                          f"MobileNetV2-style network's {mbv2['all_mean']:.4f} over all of its seeds."]
    if not complete:
        lines += ["", "Incomplete: rerun the same command to continue."]
    write_results(name, summary, rows, lines, command_line(), per_cpu=False)


if __name__ == "__main__":
    main()
