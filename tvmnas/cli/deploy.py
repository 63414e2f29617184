"""`tvmnas train | export | bench-model | report`: from a search result to a measured, deployable module."""

from __future__ import annotations

import json
from pathlib import Path

from tvmnas.cli.progress import epoch_progress
from tvmnas.errors import TvmnasError
from tvmnas.train.config import INITS, TrainConfig


def add_parsers(verbs, add_target_args) -> None:
    p = verbs.add_parser("train", help="train the searched network and test it on the held-out test set")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="RUN_DIR", help="a finished search (uses its arch.json)")
    src.add_argument("--arch", type=Path, metavar="ARCH_JSON", help="an architecture file")
    p.add_argument("--init", choices=INITS, default=TrainConfig.init,
                   help="start from random weights or from the supernet's weights of the chosen paths "
                        f"(needs --run; default {TrainConfig.init})")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"default {TrainConfig.epochs}")
    p.add_argument("--images-per-epoch", type=int, default=0,
                   help="training images sampled for each epoch, 0 = all (default 0)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"SGD learning rate (default {TrainConfig.lr})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="IDX folder or ImageFolder root (default: the search's, else Fashion-MNIST)")
    p.add_argument("--limit", type=int, help="use only the first N training images (quick trials)")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/train, or runs/train-<arch file>)")

    p = verbs.add_parser("export", help="write a deploy bundle: ONNX, the tuned TVM module, manifest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="RUN_DIR", help="a search run whose network was trained")
    src.add_argument("--network", type=Path, help="a trained network file (network.pt)")
    add_target_args(p)
    p.add_argument("--compile-only", action="store_true",
                   help="no device here: compile at TVM's default schedules only, neither check nor time the "
                        "module (run the bundle on the device with tvmnas-run)")
    p.add_argument("--out", type=Path, help="bundle folder (default RUN_DIR/bundle-<target>, or beside the "
                                            "network file)")

    p = verbs.add_parser("bench-model", help="compile and time any ONNX model on a target")
    p.add_argument("model", type=Path, help="ONNX file")
    add_target_args(p)
    p.add_argument("--input-shape", help="input shape such as 1x3x224x224 (default: from the model)")
    p.add_argument("--json", type=Path, help="also write the result to this JSON file")

    p = verbs.add_parser("report", help="summarize a run: blocks, accuracy, predicted and measured latency")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")


def train_source(args):
    """(space, arch, search checkpoint or None, data path) from --run or --arch."""
    from tvmnas.arch import load_arch
    from tvmnas.registry import read_json_object
    from tvmnas.space import load_space

    if args.run is not None:
        config = read_json_object(args.run / "config.json", "search config")
        if not (args.run / "arch.json").exists():
            raise TvmnasError(f"{args.run} has no arch.json: the search has not finished (resume it with "
                              f"`tvmnas search --resume {args.run}`)")
        arch = load_arch(args.run / "arch.json")
        space = load_space(config["space"])
        return space, arch, args.run / "checkpoint.pt", config.get("data")
    arch = load_arch(args.arch)
    return load_space(arch.space), arch, None, None


def cmd_train(args) -> int:
    from tvmnas.data.datasets import load_search_data
    from tvmnas.train.run import network_from_search, train_network

    space, arch, checkpoint, search_data = train_source(args)
    space.check_arch(arch)
    if args.init == "supernet" and checkpoint is None:
        raise TvmnasError("--init supernet needs --run (the search's checkpoint holds the weights)")
    cfg = TrainConfig(epochs=args.epochs, init=args.init, images_per_epoch=args.images_per_epoch or None,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, data=args.data or search_data,
                      limit=args.limit)
    out = args.out or (args.run / "train" if args.run else Path("runs") / f"train-{args.arch.stem}")
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    init = network_from_search(checkpoint, space, arch) if cfg.init == "supernet" else None
    print(f"training {' '.join(arch.ops)} ({space.name}, init {cfg.init}) for {cfg.epochs} epochs on "
          f"{len(data.train)} images; output {out}")
    def summary(e: dict) -> str:
        return (f"epoch {e['epoch'] + 1}/{cfg.epochs}: train loss {e['train_loss']:.3f} acc {e['train_acc']:.3f}"
                f" | valid loss {e['valid_loss']:.3f} acc {e['valid_acc']:.3f} | {e['seconds']:.0f} s")

    with epoch_progress(summary) as (on_step, on_epoch):
        result = train_network(cfg, space, arch, data, out, init, on_step, on_epoch)
    test = "no test set" if result.test_acc is None else f"test accuracy {result.test_acc:.4f}"
    print(f"{test} (valid {result.valid_acc:.4f}); network in {out / 'network.pt'}")
    return 0


def _sample_input(info: dict, space):
    """The first test image of the network's data, preprocessed (the bundle's example input), if readable."""
    import numpy as np

    from tvmnas.data.datasets import load_search_data, normalize

    try:
        data = load_search_data(info.get("train_config", {}).get("data"), space.input_channels, space.input_size,
                                0.5, 0, limit=2)
    except TvmnasError:
        return None
    return None if data.test is None else normalize(data.test.images[:1]).astype(np.float32)


def cmd_export(args) -> int:
    from tvmnas.cli import make_runner
    from tvmnas.deploy.export import ExportSettings, export_bundle
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.compile import level_name
    from tvmnas.measure.profile import tuning_dir, tvm_version
    from tvmnas.search.latency import predicted_latency_ms
    from tvmnas.targets import load_target
    from tvmnas.train.network_file import load_network

    network_file = args.network or args.run / "train" / "network.pt"
    if args.run is not None and not network_file.exists():
        raise TvmnasError(f"{args.run} has no trained network: run `tvmnas train --run {args.run}` first")
    trained = load_network(network_file)
    spec = load_target(args.target)
    tune_trials = 0 if args.compile_only else args.tune_trials
    runner = None if args.compile_only else make_runner(args, spec)
    label = runner.device_label if runner else "nothing (compile only)"
    out = args.out or (args.run / f"bundle-{spec.name}" if args.run else network_file.parent / f"bundle-{spec.name}")
    predicted = None
    if runner is not None and args.db.exists():
        with LatencyDB(args.db) as db:
            predicted = predicted_latency_ms(trained.space, trained.arch.ops, db,
                                             spec.fingerprint(runner.device_label), tvm_version(),
                                             level_name(tune_trials))
    print(f"exporting {' '.join(trained.arch.ops)} for {spec.name} ({level_name(tune_trials)}, measured by "
          f"{label}) to {out}")
    try:
        manifest = export_bundle(trained, network_file, spec, runner,
                                 tuning_dir(args.db, spec, runner.device_label if runner else "local"), out,
                                 ExportSettings(tune_trials=tune_trials), _sample_input(trained.info, trained.space),
                                 predicted)
    finally:
        if runner is not None:
            runner.close()
    lat, sec, checks = manifest["latency"], manifest["seconds"], manifest["checks"]
    if runner is None:
        print(f"compiled in {sec['compile']:.0f} s, not run (ONNX matches PyTorch, max diff "
              f"{checks['onnx_max_abs_diff']:.2g}); run it on the device: tvmnas-run {out} "
              f"{out / manifest['sample_input']} (expect top class {manifest['expected_output']['top_class']})")
        return 0
    pred = "n/a (profile the space first)" if lat["predicted_ms"] is None else f"{lat['predicted_ms']:.4f} ms"
    print(f"measured {lat['measured_ms']:.4f} ms (predicted {pred}); {sec['kernels']} kernels, "
          f"{sec['kernels_tuned']} tuned now ({sec['tune']:.0f} s), compile {sec['compile']:.0f} s; "
          f"outputs match PyTorch (TVM max diff {checks['tvm_max_abs_diff']:.2g}, ONNX "
          f"{checks['onnx_max_abs_diff']:.2g}); bundle {out}")
    return 0


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise TvmnasError(f"--input-shape must look like 1x3x224x224, not {text!r}")
    return shape


def cmd_bench_model(args) -> int:
    from tvmnas.cli import make_runner
    from tvmnas.measure.model_bench import bench_onnx
    from tvmnas.measure.profile import tuning_dir
    from tvmnas.targets import load_target

    spec = load_target(args.target)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    runner = make_runner(args, spec)
    try:
        result = bench_onnx(args.model, spec, runner, tuning_dir(args.db, spec, runner.device_label),
                            args.tune_trials, shape)
    finally:
        runner.close()
    print(f"{args.model}: {result['input_shape']} on {spec.name} ({result['level']}, {runner.device_label}): "
          f"median {result['median_ms']:.4f} ms (stdev {result['stdev_ms']:.4f}); {result['kernels']} kernels, "
          f"{result['kernels_tuned']} tuned now in {result['tune_s']:.0f} s; compile {result['compile_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_report(args) -> int:
    from tvmnas.deploy.report import run_report

    print(run_report(args.run))
    return 0


COMMANDS = {"train": cmd_train, "export": cmd_export, "bench-model": cmd_bench_model, "report": cmd_report}
