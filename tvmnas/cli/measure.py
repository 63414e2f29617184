"""`tvmnas profile | bench-kernels | bench-model`: compile and measure on a target."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvmnas.cli.common import (
    add_farm_args, add_measure_s_arg, add_target_args, check_tools, count, farm_policy, output_path, parse_shape,
    runner_from_args,
)
from tvmnas.cli.progress import phase_progress
from tvmnas.errors import TvmnasError
from tvmnas.latency_db import MIN_CALIBRATION_NETWORKS

MAX_CALIBRATION_NETWORKS = 64  # each one is compiled whole and timed


def calibration_count(text: str) -> int:
    """An argparse type: 0, or a count of networks within the bounds above."""
    value = count(0, MAX_CALIBRATION_NETWORKS, " (each network is compiled and timed)")(text)
    if 0 < value < MIN_CALIBRATION_NETWORKS:
        raise argparse.ArgumentTypeError(f"must be 0 or >= {MIN_CALIBRATION_NETWORKS} (the fit has three terms), "
                                         f"not {value}")
    return value


def register(verbs) -> None:
    p = verbs.add_parser("profile", help="compile and measure every unique candidate of a space on a target")
    p.add_argument("--space", required=True, help="space name (see `tvmnas spaces`) or path to a space JSON")
    add_target_args(p)
    p.add_argument("--force", action="store_true", help="measure again what the database already holds")
    p.add_argument("--remeasure-flagged", action="store_true",
                   help="measure again the rows the protocol flagged as noisy (a quieter moment may settle them)")
    p.add_argument("--calibrate", type=calibration_count, default=0, metavar="N",
                   help="then time N whole networks of the space (the fastest, the slowest, the rest sampled) and "
                        "fit how its blocks add up inside a network; predictions and searches include the fit "
                        "(at 224x224 a network takes ~20%% more than the sum of its blocks). At least "
                        f"{MIN_CALIBRATION_NETWORKS}; 0: none (default)")
    add_farm_args(p)
    p.set_defaults(func=cmd_profile)

    p = verbs.add_parser("bench-kernels",
                         help="latency of every candidate by stage, default vs tuned; writes JSON, Markdown, PNG")
    p.add_argument("--space", default="fashion-mnist", help="space to take the candidates from")
    add_target_args(p)
    p.add_argument("--out", type=output_path(folder=False),
                   help="output prefix (default bench/results/kernel_choices_<target>)")
    add_farm_args(p)
    p.set_defaults(func=cmd_bench_kernels)

    p = verbs.add_parser("bench-model", help="compile and time any ONNX model on a target")
    p.add_argument("model", type=Path, help="ONNX file")
    add_target_args(p)
    p.add_argument("--input-shape", type=parse_shape, help="input shape such as 1x3x224x224 (default: from the model)")
    add_measure_s_arg(p)
    p.add_argument("--json", type=output_path(folder=False), help="also write the result to this JSON file")
    p.set_defaults(func=cmd_bench_model)


def _profile(args, space, spec, tune_trials: int, label: str, network_anchor: bool = False):
    """Profile the space's candidates at one level with progress bars; returns the report and the settings. With
    `network_anchor`, the space's reference network too, where the database lacks its anchor at the level."""
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.tuning_records import tuning_dir
    from tvmnas.profile import ProfileSettings, profile_candidates

    check_tools(spec)
    policy = farm_policy(args)
    space.check_size()
    runner = runner_from_args(args, spec)
    settings = ProfileSettings(tune_trials=tune_trials, force=getattr(args, "force", False),
                               remeasure_flagged=getattr(args, "remeasure_flagged", False))
    farm = policy if getattr(runner, "endpoint", None) is not None and runner.endpoint.via_tracker else None
    try:
        with LatencyDB(args.db) as db, phase_progress(f"{label} {settings.level}") as progress:
            report = profile_candidates(space.candidates(), spec, runner, db, settings,
                                        tuning_dir(args.db, spec, runner.device_label), progress, farm,
                                        space if network_anchor else None)
    finally:
        runner.close()
    return report, settings


def cmd_profile(args) -> int:
    from tvmnas.latency_db import LatencyDB
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    space, spec = load_space(args.space), load_target(args.target)
    report, settings = _profile(args, space, spec, args.tune_trials, "profile", network_anchor=True)
    outcomes = report.outcomes
    new = [o for o in outcomes if not o.cached]
    failed = [o for o in outcomes if not o.row.ok]
    flagged = [o for o in new if o.row.ok and o.row.flag]
    print(f"{space.name} on {spec.name} ({settings.level}, measured by {outcomes[0].row.device if outcomes else '-'}):"
          f" {len(outcomes)} candidates, {len(new)} measured now, {len(outcomes) - len(new)} from the database,"
          f" {len(failed)} failed, {len(flagged)} flagged noisy")
    if new:
        tune_s = sum(o.row.tune_s for o in new) / len(new)
        compile_s = sum(o.row.compile_s for o in new) / len(new)
        print(f"cost per measured candidate: {tune_s:.1f} s tuning + {compile_s:.1f} s compiling + "
              f"{report.measure_s / len(new):.1f} s timing; {sum(o.row.tasks_tuned for o in new)} kernels tuned; "
              f"device speed {report.speed:.2f}x of its anchor")
    for o in flagged:
        print(f"flagged: {o.candidate.key} {o.candidate.shape_text}: {o.row.flag}", file=sys.stderr)
    still = [o for o in outcomes if o.cached and o.row.flag]
    if flagged or still:
        print(f"{len(flagged) + len(still)} rows carry a noise flag: `tvmnas profile ... --remeasure-flagged` "
              "measures them again", file=sys.stderr)
    for o in failed:
        print(f"failed: {o.candidate.key} {o.candidate.shape_text}: {o.row.error}", file=sys.stderr)
    if outcomes:
        with LatencyDB(args.db) as db:
            foreign = db.count_foreign(outcomes[0].row.scope)
        if foreign:
            print(f"note: {foreign} other rows in the database (other targets, measuring devices, TVM versions or "
                  "measuring methods) are kept and not used here")
    if args.calibrate and not failed:
        _calibrate(args, space, spec, settings)
    elif new and outcomes:
        from tvmnas.search.latency import composition_key

        with LatencyDB(args.db) as db:  # a fitted composition (the reference network's ratio follows the rows)
            if db.get_composition(outcomes[0].row.scope, *composition_key(space)) is not None:
                print(f"note: the composition of {space.name} was fitted to the rows before this run: "
                      f"`tvmnas profile ... --calibrate N` fits it again")
    print(f"database: {args.db}")
    return 1 if failed else 0


def _calibrate(args, space, spec, settings) -> None:
    from tvmnas.calibrate import calibrate
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.tuning_records import tuning_dir

    runner = runner_from_args(args, spec)
    try:
        with LatencyDB(args.db) as db, phase_progress(f"calibrate {settings.level}") as progress:
            result = calibrate(space, spec, runner, db, settings.tune_trials,
                               tuning_dir(args.db, spec, runner.device_label), args.calibrate, settings.seed,
                               progress=progress)
    finally:
        runner.close()
    c = result.composition
    print(f"composition ({c.networks} of {len(result.networks)} networks, {result.seconds:.0f} s): a network takes "
          f"{c.intercept_ms:.4f} ms + {c.scale:.3f} x its blocks + {c.ms_per_weight_mb:.4f} ms per MB of weights; "
          f"each network left out of the fit is predicted within {c.loo_mean_abs_error:.1%} on average")
    for n in result.networks:
        if n.flag:
            print(f"left out of the fit: {' '.join(n.ops)}: {n.flag}", file=sys.stderr)


def cmd_bench_kernels(args) -> int:
    from tvmnas.measure.kernel_bench import bench_meta, kernel_table, markdown_table, write_results
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    space, spec = load_space(args.space), load_target(args.target)
    if args.tune_trials <= 0:
        raise TvmnasError("bench-kernels compares default with tuned schedules: --tune-trials must be > 0")
    by_level, levels = {}, []
    for trials in (0, args.tune_trials):
        report, settings = _profile(args, space, spec, trials, "bench")
        by_level[settings.level] = {(o.candidate.key, o.candidate.shape_text): o.row for o in report.outcomes}
        levels.append(settings.level)
    entries = kernel_table(space, by_level, *levels)
    print(markdown_table(entries, f"Kernel choices: {space.name} on {spec.name}"))
    meta = bench_meta(space, spec, by_level, levels,
                      f"tvmnas bench-kernels --target {args.target} --space {args.space} "
                      f"--tune-trials {args.tune_trials}")
    for path in write_results(entries, meta, args.out or Path("bench/results") / f"kernel_choices_{spec.name}"):
        print(f"wrote {path}")
    return 0


def cmd_bench_model(args) -> int:
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.level import DEFAULT_LEVEL
    from tvmnas.measure.method import latency_scope
    from tvmnas.measure.model_bench import bench_onnx
    from tvmnas.measure.protocol import single_protocol
    from tvmnas.measure.reference import read_anchor
    from tvmnas.measure.tuning_records import tuning_dir
    from tvmnas.targets import load_target

    spec = load_target(args.target)
    check_tools(spec)
    runner = runner_from_args(args, spec)
    try:
        with LatencyDB(args.db) as db:
            anchor = read_anchor(db, latency_scope(spec, runner.device_label, DEFAULT_LEVEL))
        with phase_progress("bench-model") as progress:
            result = bench_onnx(args.model, spec, runner, tuning_dir(args.db, spec, runner.device_label),
                                args.tune_trials, args.input_shape, anchor_ms=anchor, progress=progress,
                                protocol=single_protocol(args.measure_s))
    finally:
        runner.close()
    lat = result["latency"]
    print(f"{args.model}: {result['input_shape']} on {spec.name} ({result['level']}, {runner.device_label}): "
          f"{lat['measured_ms']:.4f} ms (+/-{lat['measured_dispersion']:.0%} between quarters of the run, "
          f"{lat['windows']} windows{'; ' + lat['flag'] if lat['flag'] else ''}); {result['kernels']} kernels, "
          f"{result['kernels_tuned']} tuned now in {result['tune_s']:.0f} s; compile {result['compile_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
