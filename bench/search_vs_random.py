"""Does the search beat random architectures at equal latency? The study the field asks for (issue 17).

On a task where architecture matters (default: the `cluttered-fashion-64` space and data set), every network is
trained from scratch with one recipe (`tvmnas train --arch`, the same epochs and images, each of `--seeds`) and
scored on the held-out test split:
1. signal check: the fastest and the slowest reachable networks and the MobileNetV2-style one (every layer
   `mb_k3_e6`). When fastest and slowest differ by less than 3 pooled seed SDs, the task cannot reward
   architecture and the bench says so instead of giving a verdict;
2. `--search-seeds` independent searches (`tvmnas search`, seeds differ) for one goal: `--goal-factor` x the
   MobileNetV2-style network's predicted latency;
3. `--randoms` networks drawn uniformly per layer from the space (not from a supernet), within +/-`--tolerance` of
   the searched networks' mean predicted latency (of the default set of searches, tvmnas's settings now: every
   `--label`ed set is compared with the same random networks);
4. one search more at each of `--extra-goal-factors` (a small Pareto comparison against the random cloud).
Verdict: a one-sided exact Mann-Whitney U test (searched > random) over per-network mean accuracies, the searched
networks' ranks, and the effect in pooled seed-SD units; beside it, how much there is to find at equal latency (a
one-way ANOVA over the random networks' per-seed accuracies and their own spread in seed SDs). Every search and
training lives in `--work` and is reused when the bench runs again, so the study accumulates over several sittings;
the results files are rewritten after each training (`summary.complete` says whether everything is in). A training
missing from `--work` (a new machine) is taken from the results files of earlier runs in bench/results when one of
them trained the same architecture on the same seed with the same data and recipe (on another machine or version the
same seed gives another draw of the same spread, not the same number: random-432's seed 0 scored 0.7287 on 2026-12-01
and 0.7167 retrained here on 12-04; `--retrain` turns the reuse off), and so is a search missing from `--work` when a
results file recorded one with the same settings (tvmnas's defaults with `--search-args`, as a `search_settings`
summary key), goal, seed and data, on the same pinned table (a search depends on the table, not on the machine): a
study carries across machines, and only what no results file holds runs again. A set's label is bound to its
settings: a rerun whose defaults have changed since is refused rather than written over the set's file.
It times nothing: latencies are the predictions of a latency table pinned for the study
(`search_vs_random_<space>_table.json` in bench/pinned: taken once from the database `tvmnas profile` filled, then
kept), so that the study means the same on every machine it continues on: a fresh profile here would differ from the
last (tuned-8 schedules found anew differ by up to 1.8x per network), and every band and search with it. The searches
read the pinned table from a database in `--work`; `--repin` takes the table from `--db` again (a new study).

    .venv/bin/python bench/search_vs_random.py                # the whole study (hours here; resumable)
    .venv/bin/python bench/search_vs_random.py --stop-after signal
    .venv/bin/tvmnas profile --space S --target T && .venv/bin/python bench/search_vs_random.py --space S \
        --target T --repin                                    # a new study, priced by this machine's profile
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from common import DEFAULT_DB, REPO, RESULTS, command_line, write_results

from tvmnas.arch import Arch, load_arch, save_arch
from tvmnas.latency_db import LatencyDB, LatencyRow, now_utc
from tvmnas.measure.level import level_name
from tvmnas.measure.method import latency_scope
from tvmnas.run_folder import SearchRun, TrainRun
from tvmnas.search.config import EARLIER_DEFAULTS, SearchConfig
from tvmnas.search.latency import LatencyTable, load_table, table_from_db
from tvmnas.space import SearchSpace, load_space
from tvmnas.targets import load_target

TVMNAS = [sys.executable, "-m", "tvmnas.cli"]
STAGES = ("signal", "search", "random", "extra")


@dataclass
class Net:
    name: str
    role: str  # fastest, slowest, mobilenetv2-style, searched, random, extra
    arch: Arch
    predicted_ms: float
    accs: list[float] = field(default_factory=list)  # test accuracy per seed trained so far
    search_run: str | None = None  # searched networks: the search's run folder (relative to the repository)
    recorded: int = 0  # how many of `accs` come from earlier results files, not from a training in --work

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.accs) if self.accs else None

    def entry(self) -> dict:
        return {"name": self.name, "role": self.role, "ops": list(self.arch.ops), "predicted_ms": self.predicted_ms,
                "test_acc": self.accs, "mean": self.mean, "search_run": self.search_run,
                "seeds_from_earlier_results": self.recorded}


def choice_indices(space: SearchSpace, ops: tuple[str, ...]) -> list[int]:
    return [layer.choices.index(op) for layer, op in zip(space.layers(), ops)]


def extreme_arch(space: SearchSpace, table: LatencyTable, pick) -> Arch:
    """Per layer the choice of `pick` (min or max) latency: the fastest or the slowest reachable network."""
    ops = []
    for layer, latencies in zip(space.layers(), table.layer_ms):
        ops.append(layer.choices[pick(range(len(latencies)), key=latencies.__getitem__)])
    return Arch(space.name, tuple(ops))


def random_archs(space: SearchSpace, table: LatencyTable, centre_ms: float, tolerance: float, count: int,
                 seed: int, exclude: set[tuple[str, ...]], tries: int = 500_000) -> list[tuple[int, Arch, float]]:
    """`count` distinct architectures, each layer's choice drawn uniformly, whose predicted latency lies within
    +/-tolerance of centre_ms (rejection sampling with a seeded generator: uniform over the space restricted to
    that latency band), each with the index of its draw. The draws do not depend on the band, so searches that
    land a little elsewhere keep most of the random networks already trained (they are named by draw)."""
    rng = np.random.default_rng(seed)
    layers = space.layers()
    found: dict[tuple[str, ...], tuple[int, float]] = {}
    for draw in range(tries):
        picks = [int(rng.integers(len(layer.choices))) for layer in layers]
        ops = tuple(layer.choices[i] for layer, i in zip(layers, picks))
        latency_ms = table.arch_ms(picks)
        if abs(latency_ms / centre_ms - 1) <= tolerance and ops not in exclude and ops not in found:
            found[ops] = (draw, latency_ms)
            if len(found) == count:
                break
    if len(found) < count:
        raise SystemExit(f"only {len(found)} random architectures within +/-{tolerance:.0%} of {centre_ms:.4f} ms")
    return [(draw, Arch(space.name, ops), ms) for ops, (draw, ms) in found.items()]


@dataclass(frozen=True)
class Recipe:
    """How every network is trained, and how every search runs."""

    data: str
    epochs: int
    images_per_epoch: int
    seeds: tuple[int, ...]
    search_args: tuple[str, ...]


def table_file(space: str) -> Path:
    return REPO / "bench" / "pinned" / f"search_vs_random_{space}_table.json"


def pinned_table(space: SearchSpace, target: str, level: str, db: Path, work: Path, repin: bool
                 ) -> tuple[LatencyTable, Path]:
    """The study's latency table and a database in `work` holding it (for the searches): the pinned file's, or,
    the first time (or with `repin`), `db`'s, pinned then."""
    scope = latency_scope(load_target(target), "local", level)
    path = table_file(space.name)
    if repin or not path.exists():
        load_table(db, space, scope)  # one clear line when there is no database or it lacks a candidate
        with LatencyDB(db) as source:
            rows = [{"block_key": c.key, "input_shape": c.shape_text,
                     "latency_ms": source.get(scope, c.key, c.shape_text).latency_ms} for c in space.candidates()]
        path.write_text(json.dumps({"space": space.name, "target": target, "level": level, "made": now_utc(),
                                    "source": f"the latency database {db}", "rows": rows}, indent=1) + "\n")
    pinned = json.loads(path.read_text())
    if (pinned["space"], pinned["target"], pinned["level"]) != (space.name, target, level):
        raise SystemExit(f"{path.name} pins the table of {pinned['target']} at {pinned['level']}, not {target} at "
                         f"{level}: pass --target {pinned['target']} --tune-trials {pinned['level'][6:]}, or "
                         "--repin to start a study with this machine's table")
    study_db = work / "latency.db"
    study_db.unlink(missing_ok=True)
    with LatencyDB(study_db) as out:
        for row in pinned["rows"]:
            out.put(LatencyRow.measured(scope, row["block_key"], row["input_shape"], target_name=target,
                                        device="local", latency_ms=row["latency_ms"], raw_ms=row["latency_ms"],
                                        dispersion=None, windows=0, dropped_windows=0, speed=None,
                                        compile_s=0.0, tune_s=0.0, tasks_tuned=0, error=None))
        return table_from_db(space, out, scope), study_db


def random_centre(space: str, goal_factor: float, data: str, own_ms: list[float]) -> float:
    """The latency the study's random networks are drawn around: the mean predicted latency of the default set's
    searched networks (tvmnas's settings now, recorded in the study's own results file), which every labelled set
    is compared at as well; `own_ms`, this set's searched networks, for the default set itself or before it has
    run (or when it ran with defaults that have changed since)."""
    path = RESULTS / f"search_vs_random_{space}.json"
    if path.exists():
        s = json.loads(path.read_text())["summary"]
        if (recorded_settings(s), s.get("goal_factor"), s.get("data")) == (
                search_settings(()), goal_factor, data) and s.get("searched_ms"):
            return statistics.mean(s["searched_ms"])
    return statistics.mean(own_ms)


def results_files(space: str) -> list[Path]:
    """This study's results files in bench/results: the default set of searches and every labelled set."""
    own = RESULTS / f"search_vs_random_{space}.json"
    return ([own] if own.exists() else []) + sorted(RESULTS.glob(f"search_vs_random_{space}_*.json"))


def same_recipe(summary: dict, recipe: Recipe) -> bool:
    """Whether a results file's networks were trained with the recipe's data, epochs and images per epoch."""
    return (summary.get("data"), summary.get("train_epochs"), summary.get("train_images_per_epoch")) == (
        recipe.data, recipe.epochs, recipe.images_per_epoch)


def recipe_results(space: str, recipe: Recipe) -> list[tuple[Path, dict]]:
    """This study's results files (see `results_files`) whose networks were trained with the recipe, read."""
    read = [(path, json.loads(path.read_text())) for path in results_files(space)]
    return [(path, results) for path, results in read if same_recipe(results["summary"], recipe)]


def recorded_trainings(space: str, recipe: Recipe) -> dict[tuple[tuple[str, ...], int], float]:
    """(architecture's ops, seed) -> test accuracy, from the results files of earlier runs trained with the same
    data, epochs and images per epoch."""
    found = {}
    for _, results in recipe_results(space, recipe):
        for entry in results["entries"]:
            for seed, acc in zip(results["summary"]["seeds"], entry["test_acc"]):
                found.setdefault((tuple(entry["ops"]), seed), acc)
    return found


SET_PER_SEARCH = ("space", "target", "latency_ms", "seed", "data", "limit", "level", "measured_by")


def search_settings(search_args: tuple[str, ...]) -> dict:
    """How a search of the study runs: `tvmnas search`'s settings from `search_args` on top of its defaults now,
    less those the study sets per search (space, target, goal, seed, data). Results files record them, so that a
    change of tvmnas's defaults does not pass earlier searches off as searches with the new ones."""
    from tvmnas.cli import build_parser
    from tvmnas.cli.search import search_config_from_args

    args = build_parser().parse_args(["search", "--space", "-", "--target", "x86-cpu", "--latency-ms", "1",
                                      *search_args])
    return {k: v for k, v in search_config_from_args(args).to_json().items() if k not in SET_PER_SEARCH}


def recorded_settings(summary: dict) -> dict | None:
    """A results file's `search_settings`, a setting tvmnas gained since at the value its searches ran with."""
    recorded = summary.get("search_settings")
    if recorded is None:
        return None
    return {**{k: v for k, v in EARLIER_DEFAULTS.items() if k not in SET_PER_SEARCH}, **recorded}


def search_key(name: str) -> str:
    """What a searched network's name says about its search: `seed<N>` or `goal<F>` (names end with it)."""
    return name.rsplit("-", 1)[1]


def recorded_searches(space: str, settings: dict, recipe: Recipe, goal_factor: float, arch_ms
                      ) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """Search key (`search_key`) -> (ops, search run folder) of the searches that earlier runs of the study recorded
    in any of its results files with the same search settings, goal factor and data, on the same latency table: the
    table prices the file's MobileNetV2-style network and each searched network exactly as recorded (a search
    depends on the table, not on the machine)."""
    found: dict[str, tuple[tuple[str, ...], str | None]] = {}
    for path in results_files(space):
        results = json.loads(path.read_text())
        s = results["summary"]
        if (s.get("goal_factor"), s.get("data"), recorded_settings(s)) != (goal_factor, recipe.data, settings):
            continue

        def priced_alike(entry: dict) -> bool:
            return math.isclose(arch_ms(Arch(space, tuple(entry["ops"]))), entry["predicted_ms"], rel_tol=1e-9)

        if not all(priced_alike(e) for e in results["entries"] if e["role"] == "mobilenetv2-style"):
            continue
        for e in results["entries"]:
            if e["role"] in ("searched", "extra") and priced_alike(e):
                found.setdefault(search_key(e["name"]), (tuple(e["ops"]), e.get("search_run")))
    return found


def settings_differ(recorded: dict, settings: dict) -> str:
    """Where recorded search settings differ from `settings` (this run's), for a refusal's one line."""
    return ", ".join(f"{k} {recorded.get(k)!r} (now {v!r})" for k, v in settings.items() if recorded.get(k) != v)


def check_settings(run: Path, settings: dict) -> None:
    """Refuse a search folder (finished or cut short) whose search runs with other settings than `settings`: a
    study's run folders are named by its set of searches, not by their flags."""
    config = SearchRun(run).config
    if not config.exists():
        return
    saved = SearchConfig.from_json(json.loads(config.read_text()), str(config)).to_json()
    if any(saved.get(k) != v for k, v in settings.items()):
        raise SystemExit(f"{run} holds a search with other settings: {settings_differ(saved, settings)}; move it "
                         "away or pick another --label")


def check_label(space: str, label: str, settings: dict) -> None:
    """Refuse to write a set's results over a file of the same label whose searches ran with other settings (a
    lever studied before tvmnas's defaults changed, say): each set keeps its own file."""
    path = RESULTS / (f"search_vs_random_{space}" + (f"_{label}" if label else "") + ".json")
    if path.exists():
        recorded = recorded_settings(json.loads(path.read_text())["summary"])
        if recorded is not None and recorded != settings:
            raise SystemExit(f"{path.name} holds searches with other settings: {settings_differ(recorded, settings)};"
                             " pass --search-args that give its settings, or another --label")


def train(net: Net, recipe: Recipe, work: Path, recorded: dict) -> None:
    """Train the network on each seed not yet done (a finished training of the same settings in `work` is reused,
    else one in `recorded`)."""
    arch_file = work / f"{net.name}.json"
    save_arch(net.arch, arch_file)
    net.accs, net.recorded = [], 0
    for seed in recipe.seeds:
        out = work / f"{net.name}-seed{seed}"
        done = TrainRun(out).summary
        trained_here = done.exists() and json.loads(done.read_text()).get("arch") == list(net.arch.ops)
        if not trained_here and (net.arch.ops, seed) in recorded:
            net.accs.append(recorded[(net.arch.ops, seed)])
            net.recorded += 1
            continue
        if not trained_here:
            subprocess.run([*TVMNAS, "train", "--arch", str(arch_file), "--data", recipe.data, "--epochs",
                            str(recipe.epochs), "--images-per-epoch", str(recipe.images_per_epoch), "--seed",
                            str(seed), "--out", str(out)], check=True, cwd=REPO)
        net.accs.append(json.loads(done.read_text())["test_acc"])
    print(f"{net.name}: {' '.join(net.arch.ops)} {net.predicted_ms:.4f} ms, test acc {net.accs}"
          + (f" ({net.recorded} from earlier results)" if net.recorded else ""), flush=True)


def search(space: SearchSpace, target: str, goal_ms: float, seed: int, recipe: Recipe, settings: dict,
           db: Path, run: Path, recorded: tuple[tuple[str, ...], str | None] | None) -> tuple[Arch, str | None]:
    """A finished search's architecture and run folder: the run's in `run`, else the one an earlier results file
    `recorded`, else searched now (also when the run was cut short)."""
    files = SearchRun(run)
    check_settings(run, settings)
    if not files.arch.exists() and recorded and not files.checkpoint.exists():
        return Arch(space.name, recorded[0]), recorded[1]
    if not files.arch.exists():
        where = ["--resume", str(run)] if files.checkpoint.exists() else [
            "--out", str(run), "--space", space.name, "--target", target, "--latency-ms", f"{goal_ms:.6f}",
            "--data", recipe.data, "--seed", str(seed), *recipe.search_args]
        subprocess.run([*TVMNAS, "search", "--db", str(db), *where], check=True, cwd=REPO)
    return load_arch(files.arch), relative(run)


def relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def pooled_sd(nets: list[Net]) -> float | None:
    """The seed-to-seed standard deviation pooled over every network trained on two seeds or more."""
    variances = [statistics.variance(n.accs) for n in nets if len(n.accs) >= 2]
    return float(np.sqrt(statistics.mean(variances))) if variances else None


def band_signal(randoms: list[Net]) -> dict:
    """How much architecture matters at equal latency: a one-way ANOVA over the random networks' per-seed
    accuracies (all drawn within the band), and the networks' own spread beyond seed noise (the between-network
    variance less the seed variance over the number of seeds), and how well one training ranks them: the
    correlation of their first two seeds' accuracies. The signal check compares the fastest and the slowest
    networks; this bounds what any search, or any choice by a training, can gain within the band."""
    groups = [n.accs for n in randoms if len(n.accs) >= 2]
    sd = pooled_sd(randoms)
    if len(groups) < 2 or not sd:
        return {}
    seed_var = sd ** 2
    seeds = statistics.mean(len(g) for g in groups)
    net_var = statistics.variance([statistics.mean(g) for g in groups]) - seed_var / seeds
    anova = stats.f_oneway(*groups)
    return {"band_anova_f": float(anova.statistic), "band_anova_p": float(anova.pvalue),
            "band_network_sd": float(np.sqrt(max(net_var, 0.0))),
            "band_network_sd_over_seed_sd": float(np.sqrt(max(net_var, 0.0) / seed_var)),
            "band_seed_r": float(np.corrcoef([g[0] for g in groups], [g[1] for g in groups])[0, 1])}


def verdict(nets: list[Net], goal_factor: float) -> dict:
    """The summary the issue asks for, from whatever is trained so far."""
    by_role = {role: [n for n in nets if n.role == role and n.accs] for role in
               ("fastest", "slowest", "mobilenetv2-style", "searched", "random", "extra")}
    sd = pooled_sd(nets)
    out: dict = {"pooled_seed_sd": sd}
    if by_role["fastest"] and by_role["slowest"] and sd:
        gap = abs(by_role["slowest"][0].mean - by_role["fastest"][0].mean)
        out["signal_gap_over_sd"] = gap / sd
        out["task_rewards_architecture"] = gap / sd >= 3
    mbv2 = next((n for n in nets if n.role == "mobilenetv2-style"), None)
    if mbv2 is not None:
        out["mobilenetv2_style_ms"] = mbv2.predicted_ms
        out["mobilenetv2_style_acc"] = mbv2.mean
    searched, randoms = by_role["searched"], by_role["random"]
    out["searched_accs"] = [n.mean for n in searched]
    out["searched_ms"] = [n.predicted_ms for n in searched]
    out["random_accs"] = [n.mean for n in randoms]
    out["random_ms"] = [n.predicted_ms for n in randoms]
    out["extra_goal_accs"] = [n.mean for n in by_role["extra"]]
    out["extra_goal_ms"] = [n.predicted_ms for n in by_role["extra"]]
    if searched and randoms:
        s, r = out["searched_accs"], out["random_accs"]
        out["p_value"] = float(stats.mannwhitneyu(s, r, alternative="greater", method="exact").pvalue)
        everyone = sorted(s + r, reverse=True)
        out["searched_ranks"] = [everyone.index(a) + 1 for a in s]  # 1 = the best of all searched and random
        out["random_p75"] = float(np.percentile(r, 75))
        out["searched_above_random_p75"] = statistics.mean(s) > out["random_p75"]
        if sd:
            out["effect_over_sd"] = (statistics.mean(s) - statistics.mean(r)) / sd
        if mbv2 is not None and mbv2.accs:
            out["searched_within_goal_factor"] = all(ms <= goal_factor * mbv2.predicted_ms * (1 + 1e-9)
                                                     for ms in out["searched_ms"])
            out["searched_at_or_above_mobilenetv2_style"] = statistics.mean(s) >= mbv2.mean
            out["searched_minus_mobilenetv2_style"] = statistics.mean(s) - mbv2.mean
            if sd and len(s) >= 2:  # the searches' spread over their count, the reference's seed noise over its seeds
                out["searched_minus_mobilenetv2_style_se"] = float(np.sqrt(statistics.variance(s) / len(s)
                                                                           + sd ** 2 / len(mbv2.accs)))
    out.update(band_signal(randoms))
    return out


def plot(nets: list[Net], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"random": ("o", "tab:grey", "random (uniform from the space)"),
              "searched": ("*", "tab:red", "searched"), "extra": ("*", "tab:orange", "searched, other goals"),
              "mobilenetv2-style": ("s", "tab:blue", "MobileNetV2-style"),
              "fastest": ("v", "black", "fastest / slowest"), "slowest": ("^", "black", None)}
    fig, ax = plt.subplots(figsize=(6, 4))
    for role, (marker, colour, label) in styles.items():
        pts = [(n.predicted_ms, n.mean) for n in nets if n.role == role and n.accs]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, c=colour, s=90 if marker == "*" else 35, label=label, zorder=3)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def not_reached(nets: list[Net], path: Path, recipe_keys: dict, band: tuple[float, float] | None) -> list[Net]:
    """The networks an earlier run recorded in the results file at `path` (same recipe) that this run has not
    reached yet: a run stopped early, or still on its way, never drops from the file what another one recorded.
    Once this run has drawn its random networks, those recorded outside their latency `band` (centre ms,
    tolerance) are dropped: drawn around another centre (the default searches', before the defaults changed)."""
    if not path.exists():
        return []
    results = json.loads(path.read_text())
    if any(results["summary"].get(k) != v for k, v in recipe_keys.items()):
        return []
    names = {n.name for n in nets}

    def in_band(entry: dict) -> bool:
        return band is None or entry["role"] != "random" or abs(entry["predicted_ms"] / band[0] - 1) <= band[1]

    return [Net(e["name"], e["role"], Arch(results["summary"]["space"], tuple(e["ops"])), e["predicted_ms"],
                list(e["test_acc"]), e.get("search_run"), len(e["test_acc"]))
            for e in results["entries"] if e["name"] not in names and e["test_acc"] and in_band(e)]


def report(nets: list[Net], args, space: SearchSpace, level: str, settings: dict, complete: bool,
           band: tuple[float, float] | None = None) -> None:
    name = f"search_vs_random_{space.name}" + (f"_{args.label}" if args.label else "")
    if not args.repin:
        nets = nets + not_reached(nets, RESULTS / f"{name}.json", {
            "space": space.name, "data": args.data, "level": level, "goal_factor": args.goal_factor,
            "seeds": args.seeds, "train_epochs": args.epochs, "train_images_per_epoch": args.images_per_epoch}, band)
    summary = verdict(nets, args.goal_factor)
    summary.update({"complete": complete, "space": space.name, "data": args.data, "level": level,
                    "goal_factor": args.goal_factor, "tolerance": args.tolerance, "seeds": args.seeds,
                    "train_epochs": args.epochs, "train_images_per_epoch": args.images_per_epoch,
                    "label": args.label, "search_args": args.search_args,
                    "search_settings": settings,
                    "networks_trained": sum(1 for n in nets if n.accs),
                    "trainings_from_earlier_results": sum(n.recorded for n in nets)})
    plot(nets, RESULTS / f"{name}.png")
    sd = summary.get("pooled_seed_sd")
    lines = [f"## Searched vs random at equal predicted latency: {space.name} ({level})", "",
             f"Each network trained from scratch: {args.epochs} epochs of {args.images_per_epoch} images of "
             f"`{args.data}`, seeds {args.seeds}; test accuracy on the held-out test split; pooled seed SD "
             f"{sd:.4f}." if sd else "Pooled seed SD: not yet known.", "",
             "| network | role | predicted ms | test acc (mean) | per seed | architecture |",
             "|---|---|---:|---:|---|---|"]
    lines += [f"| {n.name} | {n.role} | {n.predicted_ms:.4f} | {n.mean:.4f} | "
              f"{', '.join(f'{a:.4f}' for a in n.accs)} | `{' '.join(n.arch.ops)}` |" for n in nets if n.accs]
    lines.append("")
    if "signal_gap_over_sd" in summary:
        rewards = summary["task_rewards_architecture"]
        lines.append(f"Signal: fastest vs slowest differ by {summary['signal_gap_over_sd']:.1f} seed SDs ("
                     + ("the task rewards architecture" if rewards else
                        "below 3: this task cannot reward architecture, so no verdict") + ").")
    if "p_value" in summary and summary.get("task_rewards_architecture"):
        lines.append(f"Verdict ({len(summary['searched_accs'])} searched vs {len(summary['random_accs'])} random): "
                     f"one-sided Mann-Whitney p = {summary['p_value']:.4f}; searched ranks "
                     f"{summary['searched_ranks']}; effect {summary.get('effect_over_sd', float('nan')):+.2f} "
                     f"seed SDs; mean searched above the random 75th percentile: "
                     f"{summary['searched_above_random_p75']}.")
        if "searched_minus_mobilenetv2_style_se" in summary:
            lines.append(f"Against the MobileNetV2-style network: mean searched minus its accuracy "
                         f"{summary['searched_minus_mobilenetv2_style']:+.4f}, standard error "
                         f"{summary['searched_minus_mobilenetv2_style_se']:.4f} (the searches' spread over their "
                         f"count and the reference's seed noise over its {len(args.seeds)} seeds).")
    if "band_anova_f" in summary:
        lines.append(f"At equal latency (the random networks, all within the band): one-way ANOVA F = "
                     f"{summary['band_anova_f']:.2f} (p = {summary['band_anova_p']:.3f}); the networks' own spread "
                     f"beyond seed noise {summary['band_network_sd']:.4f} "
                     f"({summary['band_network_sd_over_seed_sd']:.2f} seed SDs): what a search can gain here; one "
                     f"training ranks them poorly: their two seeds' accuracies correlate at r = "
                     f"{summary['band_seed_r']:.2f}.")
    if summary["trainings_from_earlier_results"]:
        lines.append(f"{summary['trainings_from_earlier_results']} of {sum(len(n.accs) for n in nets)} trainings "
                     "are taken from earlier results files (the same architecture, seed, data and recipe).")
    if not complete:
        lines.append("Incomplete: rerun the same command to continue the study.")
    lines.append(f"Figure: `{name}.png` (latency on x, accuracy on y).")
    write_results(name, summary, [n.entry() for n in nets], lines, command_line(), per_cpu=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cluttered-fashion-64")
    parser.add_argument("--data", default="cluttered-fashion-64", help="a data-set name or folder (--data of tvmnas)")
    parser.add_argument("--target", help="default: the pinned table's target, else x86-cpu")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help="where the latency table is taken from the first time (or with --repin)")
    parser.add_argument("--tune-trials", type=int, default=8, help="the profile's level (tuned-N)")
    parser.add_argument("--goal-factor", type=float, default=0.67,
                        help="the searches' goal, as a fraction of the MobileNetV2-style network's predicted ms")
    parser.add_argument("--extra-goal-factors", type=float, nargs="*", default=[0.5, 0.85])
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--randoms", type=int, default=16)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of every network")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of every network")
    parser.add_argument("--images-per-epoch", type=int, default=12800)
    parser.add_argument("--search-args", nargs=argparse.REMAINDER, default=[],
                        help="further flags for every `tvmnas search` (last on the line)")
    parser.add_argument("--stop-after", choices=STAGES, default="extra")
    parser.add_argument("--work", type=Path, help="where searches and trainings live (default runs/svr-<space>)")
    parser.add_argument("--retrain", action="store_true",
                        help="train (and search) everything missing from --work, even where earlier results files "
                             "have it")
    parser.add_argument("--repin", action="store_true",
                        help="take the study's latency table from --db again (and pin it): a new study")
    parser.add_argument("--label", default="",
                        help="names this set of searches (a lever under study, with its --search-args): its runs "
                             "and results are kept apart, the signal and random networks are shared")
    args = parser.parse_args()

    space = load_space(args.space)
    if args.target is None:  # the pinned table's, else x86-cpu
        pinned = table_file(space.name)
        args.target = json.loads(pinned.read_text())["target"] if pinned.exists() and not args.repin else "x86-cpu"
    level = level_name(args.tune_trials)
    work = args.work or REPO / "runs" / f"svr-{space.name}"
    work.mkdir(parents=True, exist_ok=True)
    table, study_db = pinned_table(space, args.target, level, args.db, work, args.repin)
    recipe = Recipe(args.data, args.epochs, args.images_per_epoch, tuple(args.seeds), tuple(args.search_args))
    recorded = {} if args.retrain else recorded_trainings(space.name, recipe)
    settings = search_settings(tuple(args.search_args))

    def arch_ms(arch: Arch) -> float:
        return table.arch_ms(choice_indices(space, arch.ops))

    mbv2 = Arch(space.name, space.mobilenetv2_ops)
    nets = [Net("fastest", "fastest", extreme_arch(space, table, min), table.min_ms),
            Net("slowest", "slowest", extreme_arch(space, table, max), table.max_ms),
            Net("mobilenetv2-style", "mobilenetv2-style", mbv2, arch_ms(mbv2))]
    goal_ms = args.goal_factor * nets[2].predicted_ms

    band: list[tuple[float, float]] = []  # the random networks' (centre ms, tolerance), once drawn

    def step(net: Net | None = None) -> None:
        """Train one network more (or the signal networks), then rewrite the results."""
        for each in [net] if net else list(nets):
            if each not in nets:
                nets.append(each)
            train(each, recipe, work, recorded)
            report(nets, args, space, level, settings, complete=False, band=band[0] if band else None)

    searches = f"search-{args.label}" if args.label else "search"  # run folders of this set of searches
    searched_name = f"searched-{args.label}" if args.label else "searched"
    check_label(space.name, args.label, settings)
    earlier = {} if args.retrain else recorded_searches(space.name, settings, recipe, args.goal_factor, arch_ms)
    step()
    if args.stop_after != "signal":
        for seed in args.search_seeds:
            arch, run = search(space, args.target, goal_ms, seed, recipe, settings, study_db,
                               work / f"{searches}-seed{seed}", earlier.get(f"seed{seed}"))
            step(Net(f"{searched_name}-seed{seed}", "searched", arch, arch_ms(arch), search_run=run))
    if args.stop_after not in ("signal", "search"):
        own_ms = [n.predicted_ms for n in nets if n.role == "searched"]
        centre_ms = statistics.mean(own_ms) if not args.label else random_centre(
            space.name, args.goal_factor, args.data, own_ms)
        band.append((centre_ms, args.tolerance))
        taken = {n.arch.ops for n in nets}
        for draw, arch, ms in random_archs(space, table, centre_ms, args.tolerance, args.randoms, 0, taken):
            step(Net(f"random-{draw}", "random", arch, ms))
    if args.stop_after == "extra":
        for factor in args.extra_goal_factors:
            name = f"{searched_name}-goal{factor:g}"
            arch, run = search(space, args.target, factor * nets[2].predicted_ms, 0, recipe, settings, study_db,
                               work / f"{searches}-goal{factor:g}", earlier.get(f"goal{factor:g}"))
            step(Net(name, "extra", arch, arch_ms(arch), search_run=run))
    report(nets, args, space, level, settings, complete=args.stop_after == "extra", band=band[0] if band else None)


if __name__ == "__main__":
    main()
