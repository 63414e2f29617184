"""`tvmnas train`: train the searched network and score it once on the held-out test set."""

from __future__ import annotations

from pathlib import Path

from tvmnas.cli.common import add_device_args, add_training_args, number, world_from_args
from tvmnas.cli.progress import epoch_progress
from tvmnas.errors import TvmnasError
from tvmnas.run_folder import SearchRun, TrainRun, default_train_folder, write_json
from tvmnas.train.config import INITS, TrainConfig


def register(verbs) -> None:
    p = verbs.add_parser("train", help="train the searched network and test it on the held-out test set")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="RUN_DIR", help="a finished search (uses its arch.json)")
    src.add_argument("--arch", type=Path, metavar="ARCH_JSON", help="an architecture file")
    src.add_argument("--resume", type=Path, metavar="TRAIN_DIR", help="continue the training in TRAIN_DIR")
    p.add_argument("--init", choices=INITS, default=TrainConfig.init,
                   help="start from random weights or from the supernet's weights of the chosen paths "
                        f"(needs --run; default {TrainConfig.init})")
    add_training_args(p, TrainConfig.epochs, 0, TrainConfig.batch_size,
                      data_help="IDX folder, ImageFolder root, or registered data set (cluttered-fashion-64) "
                                "(default: the search's, else Fashion-MNIST)",
                      out_help="output folder (default RUN_DIR/train, or runs/train-<arch file>)")
    p.add_argument("--lr", type=number(0), default=TrainConfig.lr,
                   help=f"SGD learning rate (default {TrainConfig.lr})")
    add_device_args(p)
    p.set_defaults(func=cmd_train)


def train_source(args):
    """(space, arch, search checkpoint or None, data path) from --run or --arch."""
    from tvmnas.arch import load_arch
    from tvmnas.registry import read_json_object
    from tvmnas.space import load_space

    if args.run is not None:
        run = SearchRun(args.run)
        config = read_json_object(run.config, "search config")
        if not run.arch.exists():
            raise TvmnasError(f"{args.run} has no {run.arch.name}: the search has not finished (resume it with "
                              f"`tvmnas search --resume {args.run}`)")
        arch = load_arch(run.arch)
        space = load_space(config["space"])
        return space, arch, run.checkpoint if run.checkpoint.exists() else None, config.get("data")
    arch = load_arch(args.arch)
    return load_space(arch.space), arch, None, None


def resumed_training(train_dir: Path):
    """(space, arch, settings) of an interrupted training (its network file and settings)."""
    from tvmnas.registry import read_json_object
    from tvmnas.train.network_file import load_network

    files = TrainRun(train_dir)
    if not files.checkpoint.exists():
        raise TvmnasError(f"{train_dir} holds no training checkpoint to resume")
    trained = load_network(files.network)
    settings = read_json_object(files.settings, "training settings")
    return trained.space, trained.arch, TrainConfig.from_json(settings, str(files.settings))


def cmd_train(args) -> int:
    from tvmnas.dist import close_world

    world = world_from_args(args)
    try:
        return _train(args, world)
    finally:
        close_world(world)


def _train(args, world) -> int:
    from tvmnas.data.datasets import load_search_data
    from tvmnas.dist import Shards
    from tvmnas.search.run import network_from_search
    from tvmnas.train.run import train_network

    if args.resume is not None:
        space, arch, cfg = resumed_training(args.resume)
        if args.shards is not None and args.shards != cfg.shards:
            raise TvmnasError(f"--shards {args.shards} differs from the resumed training's {cfg.shards} "
                              f"({args.resume})")
        out, init = args.resume, None
    else:
        space, arch, checkpoint, search_data = train_source(args)
        space.check_arch(arch)
        if args.init == "supernet" and checkpoint is None:
            raise TvmnasError("--init supernet needs --run of a search that trained a supernet (its checkpoint holds "
                              "the weights)")
        cfg = TrainConfig(epochs=args.epochs, init=args.init, images_per_epoch=args.images_per_epoch or None,
                          batch_size=args.batch_size, shards=args.shards or world.size, lr=args.lr, seed=args.seed,
                          data=args.data or search_data, limit=args.limit)
        out = args.out or (SearchRun(args.run).train.folder if args.run else default_train_folder(args.arch))
        init = network_from_search(checkpoint, space, arch) if cfg.init == "supernet" else None
    Shards(cfg.shards, world)  # shards the processes do not divide: refused before anything is written
    space.check_size(max(1, cfg.batch_size // world.size), world.memory_bytes())
    data = load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed,
                            cfg.limit)
    say = print if world.is_main else (lambda *a, **k: None)
    if world.is_main and args.resume is None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(TrainRun(out).settings, cfg.to_json())
    say(f"training {' '.join(arch.ops)} ({space.name}, init {cfg.init}) for {cfg.epochs} epochs on "
        f"{len(data.train)} images; output {out}; {world.size} process(es) on {world.device.type}")

    def summary(e: dict) -> str:
        return (f"epoch {e['epoch'] + 1}/{cfg.epochs}: train loss {e['train_loss']:.3f} acc {e['train_acc']:.3f}"
                f" | valid loss {e['valid_loss']:.3f} acc {e['valid_acc']:.3f} | {e['seconds']:.0f} s")

    with epoch_progress(summary, enabled=world.is_main) as (on_step, on_epoch):
        result = train_network(cfg, space, arch, data, out, init, on_step, on_epoch, world, args.workers,
                               resume=args.resume is not None)
    test = "no test set" if result.test_acc is None else f"test accuracy {result.test_acc:.4f}"
    say(f"{test} (valid {result.valid_acc:.4f}); network in {TrainRun(out).network}")
    return 0
