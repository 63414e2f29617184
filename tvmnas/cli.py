"""`tvmnas <verb>`: a thin command-line layer over the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tvmnas.errors import TvmnasError

DEFAULT_DB = Path(os.environ.get("TVMNAS_DB", Path.home() / ".cache" / "tvmnas" / "latency.db"))
DEFAULT_TUNE_TRIALS = 8


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="target name (see `tvmnas targets`) or path to a target JSON")
    p.add_argument("--db", type=Path, default=DEFAULT_DB,
                   help=f"latency database (SQLite); tuning records live beside it (default {DEFAULT_DB})")
    p.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS,
                   help="meta-schedule trials per fused kernel; 0 = TVM's default schedules "
                        f"(default {DEFAULT_TUNE_TRIALS})")
    remote = p.add_mutually_exclusive_group()
    remote.add_argument("--rpc", metavar="HOST:PORT", help="measure on a TVM RPC server")
    remote.add_argument("--tracker", metavar="HOST:PORT", help="measure through a TVM RPC tracker")
    p.add_argument("--key", help="RPC key to request from the tracker (default: the target's rpc_key)")
    p.add_argument("--rpc-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for an RPC endpoint to answer (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmnas", description="Hardware-aware NAS with latencies measured by TVM.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("targets", help="list the known targets and what each needs")
    verbs.add_parser("spaces", help="list the known search spaces")

    p = verbs.add_parser("profile", help="compile and measure every unique candidate of a space on a target")
    p.add_argument("--space", required=True, help="space name (see `tvmnas spaces`) or path to a space JSON")
    _add_target_args(p)
    p.add_argument("--force", action="store_true", help="measure again what the database already holds")

    p = verbs.add_parser("bench-kernels",
                         help="latency of every candidate by stage, default vs tuned; writes JSON, Markdown, PNG")
    p.add_argument("--space", default="fashion-mnist", help="space to take the candidates from")
    _add_target_args(p)
    p.add_argument("--out", type=Path, help="output prefix (default bench/results/kernel_choices_<target>)")

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


def make_runner(args, spec):
    from tvmnas.measure.runner.local import LocalRunner, local_device
    from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner, check_reachable, parse_host_port

    if args.rpc or args.tracker:
        host, port = parse_host_port(args.rpc or args.tracker, "--rpc" if args.rpc else "--tracker")
        key = (args.key or spec.rpc_key or spec.name) if args.tracker else None
        endpoint = RpcEndpoint(host, port, key, args.rpc_timeout)
        check_reachable(endpoint)
        return RpcRunner(endpoint)
    if spec.rpc_key:
        raise TvmnasError(f"target {spec.name!r} runs on a remote device: give --tracker HOST:PORT "
                          f"(key {spec.rpc_key!r}) or --rpc HOST:PORT")
    if spec.device == "cuda" and not local_device("cuda").exist:
        raise TvmnasError(f"target {spec.name!r} needs a CUDA GPU and this machine has none: "
                          "measure through --rpc or --tracker")
    return LocalRunner()


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
    runner = make_runner(args, spec)
    settings = ProfileSettings(tune_trials=tune_trials, force=getattr(args, "force", False))
    candidates = space.candidates()
    with LatencyDB(args.db) as db:
        bar = tqdm(total=len(candidates), desc=f"{label} {settings.level}", unit="cand", file=sys.stderr)

        def step(outcome) -> None:
            bar.set_postfix_str(outcome.candidate.key, refresh=False)
            bar.update(1)

        try:
            outcomes = profile_candidates(candidates, spec, runner, db, settings,
                                          tuning_dir(args.db, spec, runner.device_label), step)
        finally:
            bar.close()
            runner.close()
    return outcomes, settings


def cmd_profile(args) -> int:
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


COMMANDS = {"targets": cmd_targets, "spaces": cmd_spaces, "profile": cmd_profile,
            "bench-kernels": cmd_bench_kernels, "db-export": cmd_db_export}


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


if __name__ == "__main__":
    sys.exit(main())
