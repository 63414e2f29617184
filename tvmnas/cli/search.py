"""`tvmnas search`: the ProxylessNAS search for a latency goal."""

from __future__ import annotations

from pathlib import Path

from tvmnas.cli.common import add_target_args, count, endpoint_from_args, number
from tvmnas.cli.progress import epoch_progress
from tvmnas.errors import TvmnasError
from tvmnas.search.config import LOSSES, SearchConfig


def register(verbs) -> None:
    p = verbs.add_parser("search", help="ProxylessNAS search for a latency goal, with latencies from the database")
    p.add_argument("--space", help="space name or path (required unless --resume)")
    add_target_args(p, measures=False)
    p.add_argument("--latency-ms", type=number(0), help="latency goal T of the searched network, in ms")
    p.add_argument("--loss", choices=LOSSES, default=SearchConfig.loss,
                   help="latency loss: add#linear CE+0.1*(E-T)/T, mul#log CE*0.2*(log E/log T)^0.3 (the goal T "
                        f"then only scales the loss), or none (default {SearchConfig.loss})")
    p.add_argument("--loss-lambda", type=number(0, inclusive=True), default=SearchConfig.loss_lambda,
                   help=f"add#linear: weight of the latency term (default {SearchConfig.loss_lambda})")
    p.add_argument("--loss-b", type=number(0, inclusive=True), default=SearchConfig.loss_b,
                   help=f"mul#log: exponent of the latency factor (default {SearchConfig.loss_b})")
    p.add_argument("--epochs", type=count(1), default=SearchConfig.epochs, help=f"default {SearchConfig.epochs}")
    p.add_argument("--warmup-epochs", type=count(0), default=SearchConfig.warmup_epochs,
                   help=f"epochs of uniform path sampling before alpha learns (default {SearchConfig.warmup_epochs})")
    p.add_argument("--images-per-epoch", type=count(0), default=SearchConfig.images_per_epoch,
                   help=f"training images sampled for each epoch, 0 = all (default {SearchConfig.images_per_epoch})")
    p.add_argument("--batch-size", type=count(1), default=SearchConfig.batch_size,
                   help=f"default {SearchConfig.batch_size}")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--data", help="Fashion-MNIST IDX folder or ImageFolder root (default: the installed "
                                  "Fashion-MNIST)")
    p.add_argument("--limit", type=count(1), help="use only the first N training images (quick trials)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<space>-<target>-<goal>ms)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the search in RUN_DIR")
    p.set_defaults(func=cmd_search)


def search_config_from_args(args) -> SearchConfig:
    """A new run's settings from the flags, or a resumed run's saved settings (flags given must agree)."""
    from tvmnas.measure.compile import level_name
    from tvmnas.registry import read_json_object
    from tvmnas.targets import load_target

    if args.resume is not None:
        cfg = SearchConfig.from_json(read_json_object(args.resume / "config.json", "search config"),
                                     str(args.resume / "config.json"))
        for flag, field in (("space", "space"), ("target", "target"), ("latency_ms", "latency_ms")):
            given = getattr(args, flag)
            if given is not None and given != getattr(cfg, field):
                raise TvmnasError(f"--{flag.replace('_', '-')} {given} differs from the resumed run's "
                                  f"{getattr(cfg, field)} ({args.resume})")
        return cfg
    missing = [f"--{n}" for n in ("space", "target", "latency-ms") if getattr(args, n.replace("-", "_")) is None]
    if missing:
        raise TvmnasError(f"a new search needs {', '.join(missing)}")
    spec = load_target(args.target)
    endpoint = endpoint_from_args(args, spec)
    return SearchConfig(space=args.space, target=args.target, latency_ms=args.latency_ms,
                        level=level_name(args.tune_trials), measured_by=endpoint.label if endpoint else "local",
                        loss=args.loss, loss_b=args.loss_b, loss_lambda=args.loss_lambda,
                        epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                        images_per_epoch=args.images_per_epoch or None, batch_size=args.batch_size,
                        seed=args.seed, data=args.data, limit=args.limit)


def cmd_search(args) -> int:
    from tvmnas.data.datasets import load_search_data
    from tvmnas.latency_db import LatencyDB
    from tvmnas.search.latency import table_from_db
    from tvmnas.search.run import run_search
    from tvmnas.space import load_space
    from tvmnas.targets import load_target
    from tvmnas.versions import tvm_version

    cfg = search_config_from_args(args)
    space, spec = load_space(cfg.space), load_target(cfg.target)
    space.check_size(cfg.batch_size)
    if not args.db.exists():
        raise TvmnasError(f"no latency database at {args.db}: run `tvmnas profile --space {cfg.space} "
                          f"--target {cfg.target}` first")
    with LatencyDB(args.db) as db:
        table = table_from_db(space, db, spec.fingerprint(cfg.measured_by), tvm_version(), cfg.level)
    if cfg.latency_ms < table.min_ms:
        raise TvmnasError(f"latency goal {cfg.latency_ms:g} ms is below the smallest reachable latency of "
                          f"{space.name} on {spec.name}: {table.min_ms:.4f} ms")
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    run_dir = args.resume or args.out or Path("runs") / f"{space.name}-{spec.name}-{cfg.latency_ms:g}ms"
    print(f"searching {space.name} for {spec.name} ({cfg.level}, {cfg.measured_by}): goal {cfg.latency_ms:g} ms, "
          f"reachable {table.min_ms:.4f}-{table.max_ms:.4f} ms; {len(data.train)} train / {len(data.valid)} valid "
          f"images; run dir {run_dir}")

    def summary(e: dict) -> str:
        return (f"epoch {e['epoch'] + 1}/{cfg.epochs}: train loss {e['train_loss']:.3f} acc {e['train_acc']:.3f}"
                f" | valid loss {e['valid_loss']:.3f} acc {e['valid_acc']:.3f} | E[LAT] "
                f"{e['expected_latency_ms']:.4f} ms, derived {e['derived_latency_ms']:.4f} ms | entropy "
                f"{e['alpha_entropy']:.3f} | {e['seconds']:.0f} s")

    with epoch_progress(summary) as (on_step, on_epoch):
        result = run_search(cfg, space, table, data, run_dir, resume=args.resume is not None,
                            on_step=on_step, on_epoch=on_epoch)
    print(f"architecture: {' '.join(result.arch_ops)}")
    print(f"predicted latency {result.predicted_latency_ms:.4f} ms (goal {cfg.latency_ms:g} ms), valid accuracy "
          f"{result.valid_acc:.3f}; results in {run_dir}")
    return 0
