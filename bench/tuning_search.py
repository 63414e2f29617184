"""How much evolutionary search a profile's few trials per kernel need (issue 18: the demo's profile is mostly
tuning). Every candidate of a space is tuned at one level (default tuned-8) under each setting of meta-schedule's
evolutionary search (population, genetic iterations), each setting from nothing (its own tuning folder and cost
model, as in a fresh `make demo`); the settings take turns per candidate, so a slow phase of the machine hits them
alike. Then every setting's candidate libraries are timed together, interleaved with the reference module, under
the profile's protocol. Reported per setting: tuning seconds per candidate, and the candidates' latency against the
first setting (geometric mean of the ratios, how many are 10% slower or faster). Run it on an idle machine.

    .venv/bin/python bench/tuning_search.py [--space fashion-mnist] [--settings 64x4 32x2 16x2 32x2-unsized]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import command_line, write_results

from tvmnas.measure.build import BuiltModule
from tvmnas.measure.compile import compile_fused, export_library, fuse, import_torch
from tvmnas.measure.layout import input_shape
from tvmnas.measure.level import DEFAULT_TUNE_TRIALS, level_name
from tvmnas.measure.protocol import PROFILE
from tvmnas.measure.reference import REFERENCE_FILE, build_reference
from tvmnas.measure.runner.base import Batch
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning import TuneSettings, tune_fused
from tvmnas.measure.tuning_records import tuning_store
from tvmnas.model.blocks import candidate_module, fold_batchnorm
from tvmnas.space import Candidate, load_space
from tvmnas.targets import TargetSpec, load_target


UNSIZED = "-unsized"


def parse_setting(text: str) -> tuple[str, dict]:
    """'POPULATIONxITERATIONS[-unsized]' -> (the text, TuneSettings fields): population, genetic iterations, and
    with `-unsized` every kernel asked for the level's trials whatever its design space holds (as before 2026-12)."""
    population, _, iters = text.removesuffix(UNSIZED).partition("x")
    try:
        return text, {"population": int(population), "genetic_iters": int(iters),
                      "space_sized": not text.endswith(UNSIZED)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected POPULATIONxITERATIONS[{UNSIZED}] such as 32x2, got {text!r}"
                                         ) from None


def build(cand: Candidate, spec: TargetSpec, settings: TuneSettings, tune_dir: Path, runner: LocalRunner,
          lib_path: Path) -> BuiltModule:
    """One candidate tuned with `settings` into `tune_dir`'s database and compiled (as `tvmnas profile` does)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = fold_batchnorm(candidate_module(cand))
    target = spec.tvm()
    fused = fuse(import_torch(module, cand.input_shape), target, spec.layout, True)
    with tuning_store(tune_dir).session() as store:
        report = tune_fused(fused, spec, target, store.database, tune_dir, settings,
                            lambda: runner.meta_schedule_runner(spec.device, spec.runtime_threads),
                            in_memory=runner.tunes_in_process)
        database = store.budget(settings.trials_per_task)
    lib = export_library(compile_fused(fused, target, database), lib_path, spec)
    return BuiltModule(lib, time.perf_counter() - start - report.seconds, report.seconds, report.tasks_tuned,
                       report.tasks_total, input_shape(fused))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion-mnist")
    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS)
    parser.add_argument("--settings", type=parse_setting, nargs="+",
                        default=[parse_setting(t) for t in ("64x4", "32x2", "16x2")],
                        help=f"evolutionary search settings, POPULATIONxITERATIONS, with {UNSIZED}: every kernel asked "
                             "for the level's trials even where its design space holds fewer; the first is the "
                             "baseline")
    args = parser.parse_args()
    space, spec, runner = load_space(args.space), load_target(args.target), LocalRunner()
    names = [name for name, _ in args.settings]
    candidates = space.candidates()
    built: dict[str, list[BuiltModule]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="tvmnas-tuning-search-") as tmp:
        for i, cand in enumerate(candidates):
            turn = i % len(names)
            for name, fields in args.settings[turn:] + args.settings[:turn]:
                settings = TuneSettings(args.tune_trials, **fields)
                (Path(tmp) / name).mkdir(exist_ok=True)
                built[name].append(build(cand, spec, settings, Path(tmp) / f"tune-{name}", runner,
                                         Path(tmp) / name / f"{cand.ident}.so"))
            print(f"{i + 1}/{len(candidates)} {cand.key}: tuning s "
                  + ", ".join(f"{name} {built[name][-1].tune_s:.1f}" for name in names), flush=True)
        modules = [m for name in names for m in built[name]]
        batch = Batch(tuple(m.lib_path for m in modules), tuple(m.input_shape for m in modules), spec.device,
                      spec.runtime_threads, build_reference(spec, Path(tmp) / REFERENCE_FILE))
        timed = runner.measure(batch, PROFILE)
    n = len(candidates)
    latency = {name: [e.latency_ms for e in timed.estimates[k * n:(k + 1) * n]] for k, name in enumerate(names)}
    base = latency[names[0]]

    def ratios(name: str) -> list[float]:
        return [b / a for a, b in zip(base, latency[name]) if a and b]

    summary = {
        "space": args.space, "target": args.target, "level": level_name(args.tune_trials), "candidates": n,
        "baseline": names[0],
        "tune_s_per_candidate": {name: statistics.mean(m.tune_s for m in built[name]) for name in names},
        "tune_s_total": {name: sum(m.tune_s for m in built[name]) for name in names},
        "latency_geomean_over_baseline": {name: math.exp(statistics.mean(math.log(r) for r in ratios(name)))
                                          for name in names},
        "slower_10pct": {name: sum(r > 1.1 for r in ratios(name)) for name in names},
        "faster_10pct": {name: sum(r < 0.9 for r in ratios(name)) for name in names},
        "flagged": {name: sum(1 for e in timed.estimates[k * n:(k + 1) * n] if e.flag) for k, name in
                    enumerate(names)},
    }
    entries = [{"candidate": f"{cand.key} {cand.shape_text}",
                **{f"{name}_tune_s": built[name][j].tune_s for name in names},
                **{f"{name}_ms": latency[name][j] for name in names}} for j, cand in enumerate(candidates)]
    lines = [f"## Evolutionary search settings at {summary['level']}: {args.space} on {args.target}", "",
             f"{n} candidates, each tuned from nothing under every setting (population x genetic iterations; "
             f"{UNSIZED}: every kernel asked for the level's trials even where its design space holds fewer; the "
             "settings take turns), then all timed together, interleaved.", "",
             f"| setting | tuning s per candidate | latency vs {names[0]} (geomean) | 10% slower | 10% faster |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {summary['tune_s_per_candidate'][name]:.2f} | "
              f"{summary['latency_geomean_over_baseline'][name]:.3f} | {summary['slower_10pct'][name]} | "
              f"{summary['faster_10pct'][name]} |" for name in names]
    write_results("tuning_search", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
