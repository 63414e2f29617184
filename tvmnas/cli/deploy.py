"""`tvmnas export | report`: from a trained network to a measured, deployable bundle, and the run's summary."""

from __future__ import annotations

from pathlib import Path

from tvmnas.cli.common import add_measure_s_arg, add_target_args, check_tools, output_path, runner_from_args
from tvmnas.cli.progress import phase_progress
from tvmnas.errors import TvmnasError
from tvmnas.run_folder import SearchRun, bundle_folder


def register(verbs) -> None:
    p = verbs.add_parser("export", help="write a deploy bundle: ONNX, the tuned TVM module, manifest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="RUN_DIR", help="a search run whose network was trained")
    src.add_argument("--network", type=Path, help="a trained network file (network.pt)")
    add_target_args(p)
    p.add_argument("--compile-only", action="store_true",
                   help="no device here: compile at TVM's default schedules only, neither check nor time the "
                        "module (run the bundle on the device with tvmnas-run)")
    add_measure_s_arg(p)
    p.add_argument("--out", type=output_path(folder=True),
                   help="bundle folder (default RUN_DIR/bundle-<target>, or beside the network file)")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("report", help="summarize a run: blocks, accuracy, predicted and measured latency")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)


def cmd_export(args) -> int:
    from tvmnas.deploy.export import ExportSettings, export_bundle, sample_input
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.level import level_name
    from tvmnas.measure.method import latency_scope
    from tvmnas.measure.protocol import single_protocol
    from tvmnas.measure.reference import read_anchor
    from tvmnas.measure.tuning_records import tuning_dir
    from tvmnas.reference_network import read_network_anchor
    from tvmnas.search.latency import predict
    from tvmnas.targets import load_target
    from tvmnas.train.network_file import load_network

    run = SearchRun(args.run) if args.run is not None else None
    network_file = args.network or run.train.network
    if args.run is not None and not network_file.exists():
        raise TvmnasError(f"{args.run} has no trained network: run `tvmnas train --run {args.run}` first")
    trained = load_network(network_file)
    spec = load_target(args.target)
    check_tools(spec)
    tune_trials = 0 if args.compile_only else args.tune_trials
    runner = None if args.compile_only else runner_from_args(args, spec)
    label = runner.device_label if runner else "local"
    out = args.out or (run.bundle(spec.name) if run else bundle_folder(network_file.parent, spec.name))
    predicted, anchor, network_anchor = None, None, None
    if runner is not None and args.db.exists():
        module_level = level_name(tune_trials)
        with LatencyDB(args.db) as db:
            scope = latency_scope(spec, label, module_level)
            # the prediction the search worked with: its table's level (tuned-8, say) even when the winner is
            # tuned deeper now, so the manifest shows what the deeper tuning changed
            table_level = _search_level(run, spec.name) or module_level
            predicted = predict(trained.space, trained.arch.ops, db, scope.at_level(table_level))
            anchor = read_anchor(db, scope)
            network_anchor = read_network_anchor(db, scope, trained.space)
    print(f"exporting {' '.join(trained.arch.ops)} for {spec.name} ({level_name(tune_trials)}, measured by "
          f"{runner.device_label if runner else 'nothing (compile only)'}) to {out}")
    try:
        with phase_progress("export") as progress:
            manifest = export_bundle(trained, network_file, spec, runner, tuning_dir(args.db, spec, label), out,
                                     ExportSettings(tune_trials, single_protocol(args.measure_s)),
                                     sample_input(trained), predicted, anchor,
                                     lambda done, total: progress("measure", done, total, ""), network_anchor)
    finally:
        if runner is not None:
            runner.close()
    lat, sec, checks = manifest["latency"], manifest["seconds"], manifest["checks"]
    if runner is None:
        print(f"compiled in {sec['compile']:.0f} s, not run (ONNX matches PyTorch, max diff "
              f"{checks['onnx_max_abs_diff']:.2g}); run it on the device: tvmnas-run {out} "
              f"{out / manifest['sample_input']} (expect top class {manifest['expected_output']['top_class']})")
        return 0
    print(f"measured {lat['measured_ms']:.4f} ms (+/-{lat['measured_dispersion']:.0%} between quarters of "
          f"{lat['seconds']:.0f} s; predicted {_predicted_text(lat)}); {sec['kernels']} kernels, "
          f"{sec['kernels_tuned']} tuned now ({sec['tune']:.0f} s), compile {sec['compile']:.0f} s; outputs match "
          f"PyTorch (TVM max diff {checks['tvm_max_abs_diff']:.2g}, ONNX {checks['onnx_max_abs_diff']:.2g}); "
          f"bundle {out}")
    if lat["flag"]:
        print(f"note: the measurement is flagged: {lat['flag']}")
    return 0


def _search_level(run: SearchRun | None, target_name: str) -> str | None:
    """The level of the latency table a run's search used, when it searched for this target."""
    from tvmnas.registry import read_json_object
    from tvmnas.search.config import SearchConfig

    if run is None or not run.config.exists():
        return None
    config = SearchConfig.from_json(read_json_object(run.config, "search config"), str(run.config))
    return config.level if config.target == target_name else None


def _predicted_text(lat: dict) -> str:
    from tvmnas.deploy.report import agreement_text

    if lat["predicted_ms"] is None:
        return "n/a: profile the space first"
    return f"{lat['predicted_ms']:.4f} ms, {agreement_text(lat['agreement'])}"


def cmd_report(args) -> int:
    from tvmnas.deploy.report import run_report

    print(run_report(args.run))
    return 0
