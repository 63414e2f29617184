"""`tvmnas search`: the search for a latency goal (ProxylessNAS, or training-free with `--method naswot`)."""

from __future__ import annotations

from pathlib import Path

from tvmnas.cli.common import (
    add_device_args, add_target_args, add_training_args, count, endpoint_from_args, number, output_path,
    world_from_args,
)
from tvmnas.cli.progress import epoch_progress, phase_progress
from tvmnas.errors import TvmnasError
from tvmnas.run_folder import SearchRun, default_search_folder, write_json
from tvmnas.search.config import (
    ARCH_LR_SCHEDULES,
    DERIVATIONS,
    LOSSES,
    METHODS,
    SUPERNET_WEIGHTS,
    WEIGHT_PATHS,
    SearchConfig,
)


def register(verbs) -> None:
    p = verbs.add_parser("search", help="search for a latency goal (ProxylessNAS, or training-free), with "
                                        "latencies from the database")
    p.add_argument("--space", help="space name or path (required unless --resume)")
    p.add_argument("--method", choices=METHODS, default=SearchConfig.method,
                   help="proxyless = train a supernet whose path probabilities learn from accuracy and latency (the "
                        "flags below); naswot = train nothing: the network within the goal whose untrained ReLUs "
                        "tell one batch of training images apart best (NASWOT score, mean of 2 initializations), "
                        "found by regularized evolution over --evaluations networks; on cluttered-fashion-64 its "
                        "networks beat random ones of the goal's latency by more than the proxyless search's and "
                        "match the MobileNetV2-style network's accuracy at 0.67x its latency "
                        f"(default {SearchConfig.method})")
    p.add_argument("--evaluations", type=count(1), default=SearchConfig.evaluations,
                   help=f"naswot: networks scored (default {SearchConfig.evaluations})")
    add_target_args(p, measures=False)
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--latency-ms", type=number(0), help="latency goal T of the searched network, in ms")
    goal.add_argument("--latency-share", type=number(0, 1), metavar="F",
                      help="latency goal as a share of the profiled range: T = fastest + F x (slowest - fastest) "
                           "reachable network of the space on the target (a new search; the run records T in ms)")
    p.add_argument("--loss", choices=LOSSES, default=SearchConfig.loss,
                   help="latency loss: add#abs CE+lambda*|E/T-1| (pulls E[LAT] to the goal), add#linear "
                        "CE+lambda*(E-T)/T (pushes it down), mul#log CE*0.2*(log E/log T)^0.3 (the goal T then only "
                        f"scales the loss), or none (default {SearchConfig.loss})")
    p.add_argument("--loss-lambda", type=number(0, inclusive=True), default=SearchConfig.loss_lambda,
                   help=f"add#abs, add#linear: weight of the latency term (default {SearchConfig.loss_lambda})")
    p.add_argument("--loss-b", type=number(0, inclusive=True), default=SearchConfig.loss_b,
                   help=f"mul#log: exponent of the latency factor (default {SearchConfig.loss_b})")
    add_training_args(p, SearchConfig.epochs, SearchConfig.images_per_epoch, SearchConfig.batch_size,
                      data_help="Fashion-MNIST IDX folder, ImageFolder root, or registered data set, generated once "
                                "into the cache (cluttered-fashion-64) (default: the installed Fashion-MNIST)",
                      out_help="run directory (default runs/<space>-<target>-<goal>ms)")
    p.add_argument("--warmup-epochs", type=count(0), default=SearchConfig.warmup_epochs,
                   help=f"epochs of uniform path sampling before alpha learns (default {SearchConfig.warmup_epochs})")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the search in RUN_DIR")
    p.add_argument("--derive", choices=DERIVATIONS, default=SearchConfig.derive,
                   help="the network kept: budget = the most probable one within the goal (exact dynamic "
                        "programming over the layers), argmax = each layer's most probable path (ProxylessNAS) "
                        f"(default {SearchConfig.derive})")
    p.add_argument("--entropy-weight", type=number(0, inclusive=True), default=SearchConfig.entropy_weight,
                   help="weight of the path entropy in the architecture loss, ramped up over the search so it "
                        f"ends decided; 0 = off (default {SearchConfig.entropy_weight})")
    p.add_argument("--supernet", choices=SUPERNET_WEIGHTS, default=SearchConfig.supernet,
                   help="candidate weights: shared = a layer's candidates slice one set of conv weights (kernels "
                        "centred in the largest, expansions as leading channels; each keeps its BatchNorms), so "
                        "every step trains them all; separate = one block per candidate (ProxylessNAS) "
                        f"(default {SearchConfig.supernet})")
    p.add_argument("--weight-paths", choices=WEIGHT_PATHS, default=SearchConfig.weight_paths,
                   help="paths the weight steps train after the warm-up: alpha = drawn from softmax(alpha) "
                        "(ProxylessNAS), uniform = all alike, so the paths the search favours are not trained "
                        "more than the others, sandwich = uniform plus each layer's slowest path in the same step "
                        "(BigNAS; twice the work), depth = from the first step, a layer that may be skipped is "
                        "skipped in half the steps, else a uniform block (elastic depth: shallow networks train as "
                        "often as deep ones), stage-depth = from the first step, a stage keeps its first d layers, "
                        "d alike from 1 to all (Once-for-All's elastic depth) "
                        f"(default {SearchConfig.weight_paths})")
    p.add_argument("--arch-lr", type=number(0), default=SearchConfig.arch_lr,
                   help=f"Adam learning rate of the architecture parameters (default {SearchConfig.arch_lr})")
    p.add_argument("--arch-lr-schedule", choices=ARCH_LR_SCHEDULES, default=SearchConfig.arch_lr_schedule,
                   help="constant, or cosine: decays from --arch-lr to 0 over the search after the warm-up "
                        f"(default {SearchConfig.arch_lr_schedule})")
    p.add_argument("--arch-samples", type=count(1), default=SearchConfig.arch_samples,
                   help="validation batches per architecture step, two paths drawn for each, their gradients "
                        "averaged before the update: less noise per step, each batch one more forward and backward "
                        f"(default {SearchConfig.arch_samples})")
    p.add_argument("--rerank", type=count(0), default=SearchConfig.rerank, metavar="K",
                   help="after the search, train its K most probable networks within the goal from scratch and "
                        "keep the one with the best validation accuracy (each training in RUN_DIR/rerank/<i>; "
                        f"0 = keep the most probable; default {SearchConfig.rerank})")
    p.add_argument("--rerank-epochs", type=count(1), default=SearchConfig.rerank_epochs, metavar="E",
                   help="epochs of each --rerank training, each of --images-per-epoch images "
                        f"(default {SearchConfig.rerank_epochs})")
    add_device_args(p)
    p.set_defaults(func=cmd_search)
    register_derivations(verbs)


def search_config_from_args(args, processes: int = 1, on_main=lambda fn: fn()) -> SearchConfig:
    """A new run's settings from the flags (shards: default one per process), or a resumed run's saved settings
    (flags given must agree). `--latency-share` is turned into the goal in ms from the latency table, read by
    `on_main` (a distributed world's rank 0)."""
    from tvmnas.measure.level import level_name
    from tvmnas.registry import read_json_object
    from tvmnas.targets import load_target

    if args.resume is not None:
        config = SearchRun(args.resume).config
        cfg = SearchConfig.from_json(read_json_object(config, "search config"), str(config))
        for flag, field in (("space", "space"), ("target", "target"), ("latency_ms", "latency_ms"),
                            ("shards", "shards")):
            given = getattr(args, flag)
            if given is not None and given != getattr(cfg, field):
                raise TvmnasError(f"--{flag.replace('_', '-')} {given} differs from the resumed run's "
                                  f"{getattr(cfg, field)} ({args.resume})")
        if args.latency_share is not None:
            raise TvmnasError(f"--latency-share sets a new search's goal; {args.resume} keeps its "
                              f"{cfg.latency_ms:g} ms")
        return cfg
    missing = [f"--{n}" for n in ("space", "target") if getattr(args, n) is None]
    if args.latency_ms is None and args.latency_share is None:
        missing.append("--latency-ms (or --latency-share)")
    if missing:
        raise TvmnasError(f"a new search needs {', '.join(missing)}")
    spec = load_target(args.target)
    endpoint = endpoint_from_args(args, spec)
    measured_by, level = endpoint.label if endpoint else "local", level_name(args.tune_trials)
    latency_ms = args.latency_ms
    if latency_ms is None:
        latency_ms = on_main(lambda: goal_from_share(args.db, args.space, spec, measured_by, level,
                                                     args.latency_share))
    return SearchConfig(space=args.space, target=args.target, latency_ms=latency_ms,
                        level=level, measured_by=measured_by, method=args.method, evaluations=args.evaluations,
                        loss=args.loss, loss_b=args.loss_b, loss_lambda=args.loss_lambda, derive=args.derive,
                        entropy_weight=args.entropy_weight, supernet=args.supernet, arch_lr=args.arch_lr,
                        arch_lr_schedule=args.arch_lr_schedule, arch_samples=args.arch_samples,
                        rerank=args.rerank, rerank_epochs=args.rerank_epochs,
                        weight_paths=args.weight_paths,
                        epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                        images_per_epoch=args.images_per_epoch or None, batch_size=args.batch_size,
                        shards=args.shards or processes, seed=args.seed, data=args.data, limit=args.limit)


def goal_from_share(db_path: Path, space_name: str, spec, measured_by: str, level: str, share: float) -> float:
    """The goal `share` of the way from the fastest to the slowest network the space reaches in the table."""
    from tvmnas.measure.method import latency_scope
    from tvmnas.search.latency import load_table
    from tvmnas.space import load_space

    table = load_table(db_path, load_space(space_name), latency_scope(spec, measured_by, level))
    return table.min_ms + share * (table.max_ms - table.min_ms)


def cmd_search(args) -> int:
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    from tvmnas.dist import close_world

    world = world_from_args(args)
    try:
        cfg = search_config_from_args(args, world.size, world.on_main)
        space, spec = load_space(cfg.space), load_target(cfg.target)
        return _search(args, cfg, space, spec, world)
    finally:
        close_world(world)


def _search(args, cfg, space, spec, world) -> int:
    from tvmnas.data.datasets import load_search_data
    from tvmnas.dist import Shards
    from tvmnas.measure.method import latency_scope
    from tvmnas.search.latency import load_table
    from tvmnas.search.run import run_search, run_zero_cost_search
    from tvmnas.search.derive import check_reachable

    if cfg.method != "proxyless" and args.resume is not None:
        raise TvmnasError(f"{args.resume} holds a {cfg.method} search, which trains nothing to resume: run it again")
    if cfg.method != "proxyless" and world.size > 1:
        raise TvmnasError(f"a {cfg.method} search trains nothing to share among processes: run it in one")
    Shards(cfg.shards, world)  # shards the processes do not divide: refused before anything is read or written
    space.check_size(max(1, cfg.batch_size // world.size), world.memory_bytes())

    def read_table():  # on rank 0 (the other ranks need not see the database)
        found = load_table(args.db, space, latency_scope(spec, cfg.measured_by, cfg.level))
        check_reachable(found, cfg.latency_ms, f" of {space.name} on {spec.name}")
        return found

    table = world.on_main(read_table)
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    run_dir = args.resume or args.out or default_search_folder(space.name, spec.name, cfg.latency_ms)
    say = print if world.is_main else (lambda *a, **k: None)
    share = "" if args.latency_share is None else f" ({args.latency_share:g} of the reachable range)"
    say(f"searching {space.name} for {spec.name} ({cfg.level}, {cfg.measured_by}): goal {cfg.latency_ms:g} ms{share}, "
        f"reachable {table.min_ms:.4f}-{table.max_ms:.4f} ms; {len(data.train)} train / {len(data.valid)} valid "
        f"images; run dir {run_dir}; {world.size} process(es) on {world.device.type}")
    if table.flagged:
        say(f"note: {len(table.flagged)} of the {len(space.candidates())} latencies used carry a noise flag (first: "
            f"{table.flagged[0]}); `tvmnas profile --remeasure-flagged` measures them again")

    if cfg.method != "proxyless":
        with phase_progress("search") as progress:
            result = run_zero_cost_search(cfg, space, table, data, Path(run_dir), lambda done, total, s: progress(
                "score", done, total, f"{s.latency_ms:.4f} ms, score {s.score:.1f}"))
        say(f"architecture: {' '.join(result.arch_ops)}")
        say(f"predicted latency {result.predicted_latency_ms:.4f} ms "
            f"({result.predicted_latency_ms / cfg.latency_ms:.0%} of the goal {cfg.latency_ms:g} ms): the best "
            f"{cfg.method} score of the networks scored ({SearchRun(run_dir).zero_cost}); results in {run_dir}")
        return 0

    def summary(e: dict) -> str:
        return (f"epoch {e['epoch'] + 1}/{cfg.epochs}: train loss {e['train_loss']:.3f} acc {e['train_acc']:.3f}"
                f" | valid loss {e['valid_loss']:.3f} acc {e['valid_acc']:.3f} | E[LAT] "
                f"{e['expected_latency_ms']:.4f} ms, derived {e['derived_latency_ms']:.4f} ms | entropy "
                f"{e['alpha_entropy']:.3f} | {e['seconds']:.0f} s")

    def on_rerank(i: int, n: int, arch) -> None:
        say(f"rerank {i + 1}/{n}: training {' '.join(arch.ops)} for {cfg.rerank_epochs} epoch(s)", flush=True)

    with epoch_progress(summary, enabled=world.is_main) as (on_step, on_epoch):
        result = run_search(cfg, space, table, data, run_dir, resume=args.resume is not None,
                            on_step=on_step, on_epoch=on_epoch, world=world, workers=args.workers,
                            on_rerank=on_rerank)
    say(f"architecture: {' '.join(result.arch_ops)}")
    say(f"predicted latency {result.predicted_latency_ms:.4f} ms ({result.predicted_latency_ms / cfg.latency_ms:.0%} "
        f"of the goal {cfg.latency_ms:g} ms), valid accuracy {result.valid_acc:.3f}; results in {run_dir}")
    return 0


def register_derivations(verbs) -> None:
    p = verbs.add_parser("derive", help="derive a network for a new latency goal (or target) without searching again")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--latency-ms", type=number(0), required=True, help="the latency goal, in ms")
    add_target_args(p, measures=False)
    p.set_defaults(tune_trials=None)
    p.add_argument("--derive", choices=DERIVATIONS, default="budget",
                   help="budget: the most probable network within the goal; argmax: each layer's most probable "
                        "path (default budget)")
    p.add_argument("--out", type=output_path(folder=True),
                   help="output folder (default RUN_DIR/derived/<target>-<goal>ms)")
    p.set_defaults(func=cmd_derive)

    p = verbs.add_parser("pareto", help="networks for a sweep of budgets, scored with the supernet: the front")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--points", type=count(2, 1000), default=12, help="budgets across the reachable range (default 12)")
    add_target_args(p, measures=False)
    p.set_defaults(tune_trials=None, func=cmd_pareto)

    p = verbs.add_parser("specialize", help="reuse a trained supernet for another target: alpha-only phase, derive")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--latency-ms", type=number(0), required=True, help="the latency goal on the new target, in ms")
    add_target_args(p, measures=False)
    p.set_defaults(tune_trials=None)
    p.add_argument("--steps", type=count(1), default=200,
                   help="architecture steps of the alpha-only phase, each of the run's --arch-samples validation "
                        "batches (default 200)")
    p.add_argument("--out", type=output_path(folder=True),
                   help="output run folder (default RUN_DIR/specialized/<target>-<goal>ms)")
    p.set_defaults(func=cmd_specialize)


def _table_for(args, run):
    """The latency table of the run's space for --target (default the run's) at the run's level (or
    --tune-trials), from the database (one line when it has none)."""
    from tvmnas.measure.level import level_name
    from tvmnas.measure.method import latency_scope
    from tvmnas.search.latency import load_table
    from tvmnas.targets import load_target

    target = args.target or run.cfg.target
    spec = load_target(target)
    endpoint = endpoint_from_args(args, spec)
    measured_by = endpoint.label if endpoint else ("local" if args.target else run.cfg.measured_by)
    level = run.cfg.level if args.tune_trials is None else level_name(args.tune_trials)
    return spec, load_table(args.db, run.space, latency_scope(spec, measured_by, level)), level, measured_by


def _run_data(run):
    from tvmnas.data.datasets import load_search_data

    cfg = run.cfg
    return load_search_data(cfg.data, run.space.input_channels, run.space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)


def cmd_derive(args) -> int:
    from tvmnas.search.derive import derive
    from tvmnas.search.finished import derivation_summary, load_run, write_derivation
    from tvmnas.search.run import log_probabilities

    run = load_run(args.run)
    spec, table, level, _ = _table_for(args, run)
    derived = derive(log_probabilities(run.state.net), table, args.latency_ms, args.derive)
    arch = run.state.net.arch_of(derived.choices)
    out = args.out or SearchRun(args.run).derived(spec.name, args.latency_ms)
    summary = derivation_summary(arch, derived, args.latency_ms, spec.name, args.derive, level=level,
                                 reachable_ms=[table.min_ms, table.max_ms])
    write_derivation(out, arch, summary)
    print(f"architecture: {' '.join(arch.ops)}")
    print(f"goal {args.latency_ms:g} ms on {spec.name}: predicted {derived.latency_ms:.4f} ms "
          f"({summary['goal_share']:.0%} of the goal); written to {out} (train it: tvmnas train --arch "
          f"{SearchRun(out).arch})")
    return 0


def cmd_pareto(args) -> int:
    from tvmnas.cli.progress import phase_progress
    from tvmnas.search.figures import pareto_figure
    from tvmnas.search.finished import load_run
    from tvmnas.search.pareto import sweep, to_json

    run = load_run(args.run)
    spec, table, _, _ = _table_for(args, run)
    with phase_progress("pareto") as progress:
        points = sweep(run.state.net, table, _run_data(run), args.points,
                       lambda done, total: progress("score", done, total, ""))
    result = {"target": spec.name, **to_json(points, table)}
    files = SearchRun(args.run)
    write_json(files.pareto, result)
    files.report.mkdir(exist_ok=True)
    png = pareto_figure(result, files.report / "pareto.png")
    for p in result["front"]:
        print(f"{p['latency_ms']:.4f} ms  valid {p['valid_acc']:.4f}  {' '.join(p['arch'])}")
    print(f"{len(result['front'])} networks on the front of {len(points)}; {files.pareto}, {png}")
    return 0


def cmd_specialize(args) -> int:
    from tvmnas.search.finished import load_run
    from tvmnas.search.specialize import specialize

    if args.target is None:
        raise TvmnasError("specialize needs --target: the device to specialize for")
    run = load_run(args.run)
    spec, table, level, measured_by = _table_for(args, run)
    out = args.out or SearchRun(args.run).specialized(spec.name, args.latency_ms)
    with epoch_progress(lambda e: "") as (on_step, _):
        summary = specialize(run, spec.name, args.latency_ms, table, _run_data(run), out, args.steps, level,
                             measured_by, on_step)
    print(f"architecture: {' '.join(summary['arch'])}")
    print(f"goal {args.latency_ms:g} ms on {spec.name}: predicted {summary['predicted_latency_ms']:.4f} ms "
          f"({summary['goal_share']:.0%} of the goal), valid accuracy {summary['valid_acc']:.4f} with the "
          f"supernet's weights; {args.steps} architecture steps in {summary['specialize_seconds']:.0f} s, no "
          f"weight trained; run folder {out} (tvmnas train --run {out})")
    return 0
