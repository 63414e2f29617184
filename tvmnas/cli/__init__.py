"""`tvmnas <verb>`: a thin command-line layer over the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tvmnas.cli import board, deploy
from tvmnas.cli.progress import epoch_progress
from tvmnas.errors import TvmnasError
from tvmnas.measure.farm import FarmPolicy
from tvmnas.search.config import LOSSES, SearchConfig

DEFAULT_DB = Path(os.environ.get("TVMNAS_DB", Path.home() / ".cache" / "tvmnas" / "latency.db"))
DEFAULT_TUNE_TRIALS = 8


def _add_target_args(p: argparse.ArgumentParser, measures: bool = True) -> None:
    """--target, --db, --tune-trials and the endpoint flags; for `search` they pick which measurements to use."""
    verb = "measure" if measures else "use latencies measured"
    p.add_argument("--target", required=measures,
                   help="target name (see `tvmnas targets`) or path to a target JSON")
    p.add_argument("--db", type=Path, default=DEFAULT_DB,
                   help=f"latency database (SQLite); tuning records live beside it (default {DEFAULT_DB})")
    p.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS,
                   help=f"{verb} with meta-schedule tuning of this many trials per fused kernel; 0 = TVM's "
                        f"default schedules (default {DEFAULT_TUNE_TRIALS})")
    remote = p.add_mutually_exclusive_group()
    remote.add_argument("--rpc", metavar="HOST:PORT", help=f"{verb} on a TVM RPC server")
    remote.add_argument("--tracker", metavar="HOST:PORT", help=f"{verb} through a TVM RPC tracker")
    p.add_argument("--key", help="RPC key to request from the tracker (default: the target's rpc_key)")
    p.add_argument("--rpc-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for an RPC endpoint to answer (default 10)")


def _add_farm_args(p: argparse.ArgumentParser) -> None:
    """How `profile --tracker` spreads timing over the servers under the key, and survives their faults."""
    d = FarmPolicy()
    p.add_argument("--max-attempts", type=int, default=d.max_attempts,
                   help=f"with --tracker: tries of one candidate's timing before it is stored as failed; each try "
                        f"asks the tracker for a server again (default {d.max_attempts})")
    p.add_argument("--measure-timeout", type=float, default=d.measure_timeout_s, metavar="S",
                   help=f"with --tracker: seconds one timing may take before its server counts as hung "
                        f"(default {d.measure_timeout_s:g})")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout_s, metavar="S",
                   help=f"with --tracker: seconds to wait for the tracker to hand out a server before a worker "
                        f"gives up (default {d.request_timeout_s:g})")
    p.add_argument("--max-spread", type=float, default=d.max_spread,
                   help="with --tracker: a timing whose samples' stdev exceeds this share of the median is "
                        f"measured again, and flagged when it still does (default {d.max_spread:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmnas", description="Hardware-aware NAS with latencies measured by TVM.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("targets", help="list the known targets and what each needs")
    verbs.add_parser("spaces", help="list the known search spaces")

    p = verbs.add_parser("profile", help="compile and measure every unique candidate of a space on a target")
    p.add_argument("--space", required=True, help="space name (see `tvmnas spaces`) or path to a space JSON")
    _add_target_args(p)
    p.add_argument("--force", action="store_true", help="measure again what the database already holds")
    _add_farm_args(p)

    p = verbs.add_parser("bench-kernels",
                         help="latency of every candidate by stage, default vs tuned; writes JSON, Markdown, PNG")
    p.add_argument("--space", default="fashion-mnist", help="space to take the candidates from")
    _add_target_args(p)
    p.add_argument("--out", type=Path, help="output prefix (default bench/results/kernel_choices_<target>)")
    _add_farm_args(p)

    p = verbs.add_parser("search", help="ProxylessNAS search for a latency goal, with latencies from the database")
    p.add_argument("--space", help="space name or path (required unless --resume)")
    _add_target_args(p, measures=False)
    p.add_argument("--latency-ms", type=float, help="latency goal T of the searched network, in ms")
    p.add_argument("--loss", choices=LOSSES, default=SearchConfig.loss,
                   help="latency loss: add#linear CE+0.1*(E-T)/T, mul#log CE*0.2*(log E/log T)^0.3 (the goal T "
                        f"then only scales the loss), or none (default {SearchConfig.loss})")
    p.add_argument("--loss-lambda", type=float, default=SearchConfig.loss_lambda,
                   help=f"add#linear: weight of the latency term (default {SearchConfig.loss_lambda})")
    p.add_argument("--loss-b", type=float, default=SearchConfig.loss_b,
                   help=f"mul#log: exponent of the latency factor (default {SearchConfig.loss_b})")
    p.add_argument("--epochs", type=int, default=SearchConfig.epochs, help=f"default {SearchConfig.epochs}")
    p.add_argument("--warmup-epochs", type=int, default=SearchConfig.warmup_epochs,
                   help=f"epochs of uniform path sampling before alpha learns (default {SearchConfig.warmup_epochs})")
    p.add_argument("--images-per-epoch", type=int, default=SearchConfig.images_per_epoch,
                   help=f"training images sampled for each epoch, 0 = all (default {SearchConfig.images_per_epoch})")
    p.add_argument("--batch-size", type=int, default=SearchConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="Fashion-MNIST IDX folder or ImageFolder root (default: the installed "
                                  "Fashion-MNIST)")
    p.add_argument("--limit", type=int, help="use only the first N training images (quick trials)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<space>-<target>-<goal>ms)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the search in RUN_DIR")

    deploy.add_parsers(verbs, _add_target_args)
    board.add_parsers(verbs)

    p = verbs.add_parser("db-export", help="write the latency database as JSON or CSV")
    p.add_argument("out", type=Path, help="output file, .json or .csv")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"latency database (default {DEFAULT_DB})")
    return parser


def cmd_targets(_args) -> None:
    from tvmnas.targets import list_targets, load_target

    for name in list_targets():
        spec = load_target(name)
        missing = spec.missing_tools()
        print(f"{name}: {spec.description}")
        print(f"    device {spec.device}, TVM target {spec.tvm_target}"
              + (f", RPC key {spec.rpc_key}" if spec.rpc_key else ""))
        for need in spec.needs:
            print(f"    needs: {need}")
        if missing:
            print(f"    missing here: {', '.join(missing)}")


def cmd_spaces(_args) -> None:
    from tvmnas.space import list_spaces, load_space

    for name in list_spaces():
        space = load_space(name)
        print(f"{name}: {len(space.layers())} searchable layers, {len(space.candidates())} unique candidates "
              f"to measure - {space.description}")


def endpoint_from_args(args, spec):
    """The RPC endpoint that --rpc / --tracker / --key name, or None for this machine."""
    from tvmnas.measure.runner.rpc import RpcEndpoint, parse_host_port

    if not (args.rpc or args.tracker):
        return None
    host, port = parse_host_port(args.rpc or args.tracker, "--rpc" if args.rpc else "--tracker")
    key = (args.key or spec.rpc_key or spec.name) if args.tracker else None
    return RpcEndpoint(host, port, key, args.rpc_timeout)


def make_runner(args, spec):
    from tvmnas.measure.runner.local import LocalRunner, local_device
    from tvmnas.measure.runner.rpc import RpcRunner, check_reachable

    endpoint = endpoint_from_args(args, spec)
    if endpoint is not None:
        check_reachable(endpoint)
        return RpcRunner(endpoint)
    if spec.rpc_key:
        raise TvmnasError(f"target {spec.name!r} runs on a remote device: give --tracker HOST:PORT "
                          f"(key {spec.rpc_key!r}) or --rpc HOST:PORT")
    if spec.device == "cuda" and not local_device("cuda").exist:
        raise TvmnasError(f"target {spec.name!r} needs a CUDA GPU and this machine has none: "
                          "measure through --rpc or --tracker")
    return LocalRunner()


def farm_policy(args) -> FarmPolicy:
    policy = FarmPolicy(max_attempts=args.max_attempts, measure_timeout_s=args.measure_timeout,
                        request_timeout_s=args.request_timeout, max_spread=args.max_spread)
    if policy.max_attempts < 1 or min(policy.measure_timeout_s, policy.request_timeout_s, policy.max_spread) <= 0:
        raise TvmnasError("--max-attempts must be >= 1 and --measure-timeout, --request-timeout and --max-spread "
                          "above 0")
    return policy


def _profile(args, space, spec, tune_trials: int, label: str):
    """Profile the space's candidates at one level with a progress bar; returns the outcomes."""
    from tqdm import tqdm

    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.profile import ProfileSettings, profile_candidates, tuning_dir

    if tune_trials < 0:
        raise TvmnasError(f"--tune-trials must be >= 0, not {tune_trials}")
    missing = spec.missing_tools()
    if missing:
        raise TvmnasError(f"target {spec.name!r} needs {', '.join(missing)}, which is not installed")
    policy = farm_policy(args)  # checked before any endpoint is contacted
    runner = make_runner(args, spec)
    settings = ProfileSettings(tune_trials=tune_trials, force=getattr(args, "force", False))
    farm = policy if getattr(runner, "endpoint", None) is not None and runner.endpoint.via_tracker else None
    candidates = space.candidates()
    with LatencyDB(args.db) as db:
        bar = tqdm(total=len(candidates), desc=f"{label} {settings.level}", unit="cand", file=sys.stderr)

        def step(outcome) -> None:
            bar.set_postfix_str(outcome.candidate.key, refresh=False)
            bar.update(1)

        try:
            outcomes = profile_candidates(candidates, spec, runner, db, settings,
                                          tuning_dir(args.db, spec, runner.device_label), step, farm)
        finally:
            bar.close()
            runner.close()
    return outcomes, settings


def cmd_profile(args) -> int:
    from tvmnas.latency_db import LatencyDB
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    space, spec = load_space(args.space), load_target(args.target)
    outcomes, settings = _profile(args, space, spec, args.tune_trials, "profile")
    new = [o for o in outcomes if not o.cached]
    failed = [o for o in outcomes if not o.row.ok]
    print(f"{space.name} on {spec.name} ({settings.level}, measured by {outcomes[0].row.device if outcomes else '-'}):"
          f" {len(outcomes)} candidates, {len(new)} measured now, {len(outcomes) - len(new)} from the database,"
          f" {len(failed)} failed")
    if new:
        tune_s = sum(o.row.tune_s for o in new) / len(new)
        compile_s = sum(o.row.compile_s for o in new) / len(new)
        print(f"cost per measured candidate: {tune_s:.1f} s tuning + {compile_s:.1f} s compiling; "
              f"{sum(o.row.tasks_tuned for o in new)} kernels tuned")
    for o in failed:
        print(f"failed: {o.candidate.key} {o.candidate.shape_text}: {o.row.error}", file=sys.stderr)
    if outcomes:
        with LatencyDB(args.db) as db:
            foreign = db.count_foreign(outcomes[0].row.target_fp, outcomes[0].row.tvm_version)
        if foreign:
            print(f"note: {foreign} other rows in the database (other targets, measuring devices or TVM "
                  "versions) are kept and not used here")
    print(f"database: {args.db}")
    return 1 if failed else 0


def cmd_bench_kernels(args) -> int:
    from tvmnas.kernel_bench import kernel_table, markdown_table, write_results
    from tvmnas.measure.profile import tvm_version
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    space, spec = load_space(args.space), load_target(args.target)
    if args.tune_trials <= 0:
        raise TvmnasError("bench-kernels compares default with tuned schedules: --tune-trials must be > 0")
    by_level, levels = {}, []
    for trials in (0, args.tune_trials):
        outcomes, settings = _profile(args, space, spec, trials, "bench")
        by_level[settings.level] = {(o.candidate.key, o.candidate.shape_text): o.row for o in outcomes}
        levels.append(settings.level)
    entries = kernel_table(space, by_level, *levels)
    cost = {level: {f"mean_{k}": round(sum(getattr(r, k) for r in rows.values()) / len(rows), 2)
                    for k in ("compile_s", "tune_s")} for level, rows in by_level.items()}
    print(markdown_table(entries, f"Kernel choices: {space.name} on {spec.name}"))
    out = args.out or Path("bench/results") / f"kernel_choices_{spec.name}"
    meta = {"target": spec.name, "tvm_target": spec.resolved(), "space": space.name, "tvm_version": tvm_version(),
            "default_level": levels[0], "tuned_level": levels[1],
            "seconds_per_candidate_when_measured": cost,
            "command": f"tvmnas bench-kernels --target {args.target} --space {args.space} "
                       f"--tune-trials {args.tune_trials}"}
    for path in write_results(entries, meta, out):
        print(f"wrote {path}")
    return 0


def cmd_db_export(args) -> int:
    from tvmnas.latency_db import LatencyDB, export_rows

    if not args.db.exists():
        raise TvmnasError(f"no latency database at {args.db}")
    with LatencyDB(args.db) as db:
        rows = db.rows()
    export_rows(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


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
    from tvmnas.measure.profile import tvm_version
    from tvmnas.search.latency import table_from_db
    from tvmnas.search.run import run_search
    from tvmnas.space import load_space
    from tvmnas.targets import load_target

    cfg = search_config_from_args(args)
    space, spec = load_space(cfg.space), load_target(cfg.target)
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


COMMANDS = {"targets": cmd_targets, "spaces": cmd_spaces, "profile": cmd_profile,
            "bench-kernels": cmd_bench_kernels, "search": cmd_search, "db-export": cmd_db_export,
            "board": board.cmd_board, **deploy.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args) or 0
    except TvmnasError as err:
        print(f"tvmnas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tvmnas: interrupted; every measurement written so far is kept", file=sys.stderr)
        return 130
