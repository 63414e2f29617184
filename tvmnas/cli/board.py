"""`tvmnas board up | status | down | run`: emulated aarch64 boards behind a TVM RPC tracker."""

from __future__ import annotations

import os
from pathlib import Path

from tvmnas.cli.common import count, output_path
from tvmnas.errors import TvmnasError


def register(verbs) -> None:
    from tvmnas.board.farm import FarmSettings
    from tvmnas.board.rootfs import default_rootfs

    d = FarmSettings()
    board = verbs.add_parser("board", help="emulated aarch64 boards (RPC servers under a tracker)")
    actions = board.add_subparsers(dest="action", required=True, metavar="ACTION")

    def rootfs_arg(p) -> None:
        p.add_argument("--rootfs", type=output_path(folder=True), default=default_rootfs(),
                       help=f"the boards' arm64 root filesystem, created when missing (default {default_rootfs()})")

    p = actions.add_parser("up", help="create the root filesystem (once), start a tracker and N RPC servers")
    p.add_argument("--emulated", choices=["aarch64"], required=True, help="the emulated architecture")
    cores = os.cpu_count() or 1
    per_core = f" (4 per core of this machine's {cores})"
    p.add_argument("--count", type=count(1, 4 * cores, per_core), default=d.count,
                   help=f"servers to start (default {d.count})")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="register with this tracker instead of starting one (one on another machine hands out the "
                        "servers at the address they connect from, so they must listen there: --host)")
    p.add_argument("--key", default=d.key, help=f"key the servers register under (default {d.key})")
    p.add_argument("--host", default=d.host,
                   help=f"address the tracker and servers listen on (default {d.host}: this machine only). They "
                        "run whatever code they are sent: anyone who can reach another address can run code here "
                        "as this user (a warning says so); prefer an SSH tunnel or a private network")
    p.add_argument("--threads", type=count(1, 4 * cores, per_core),
                   help="TVM_NUM_THREADS of each server, what meta-schedule's tuning trials run with (default: the "
                        "arm-aarch64 target's num-cores, which profile timings use too)")
    p.add_argument("--mirror", help="Debian mirror for creating the root filesystem (default mmdebstrap's)")
    rootfs_arg(p)
    p = actions.add_parser("status", help="what the tracker sees, and which started processes still run")
    rootfs_arg(p)
    p = actions.add_parser("down", help="stop every server and the tracker that `board up` started")
    rootfs_arg(p)
    p = actions.add_parser("run", help="run a bundle with the aarch64 native runner on an emulated board")
    p.add_argument("bundle", type=Path, help="bundle folder (tvmnas export --target arm-aarch64)")
    p.add_argument("--input", type=Path, help="input .npy (default the bundle's sample_input.npy)")
    p.add_argument("--runner", type=Path, default=Path("build/native-aarch64/tvmnas-run"),
                   help="the cross-built runner (make runner-aarch64; default build/native-aarch64/tvmnas-run)")
    p.add_argument("--json", action="store_true", help="the runner's JSON output")
    rootfs_arg(p)
    board.set_defaults(func=cmd_board)


def cmd_board(args) -> int:
    return {"up": _up, "status": _status, "down": _down, "run": _run}[args.action](args)


def _up(args) -> int:
    from tvmnas.board.farm import FarmSettings, up
    from tvmnas.board.rootfs import RootfsSettings, create_rootfs, ensure_emulation, is_ready
    from tvmnas.measure.runner.rpc import parse_host_port
    from tvmnas.procs import warn_exposed
    from tvmnas.targets import load_target

    tracker = parse_host_port(args.tracker, "--tracker") if args.tracker else None
    # before the minutes of creating the root filesystem, so that whoever did not mean it can stop here
    warn_exposed(args.host, "the emulated boards' RPC servers" if tracker else "the RPC tracker and the emulated "
                 "boards' RPC servers")
    threads = args.threads if args.threads is not None else load_target("arm-aarch64").runtime_threads
    if not is_ready(args.rootfs):
        print(f"creating the arm64 root filesystem at {args.rootfs} (once; several minutes)")
    rootfs = create_rootfs(args.rootfs, RootfsSettings(mirror=args.mirror), log=lambda s: print(f"  {s}"))
    ensure_emulation()
    state = up(rootfs, FarmSettings(count=args.count, key=args.key, tracker=tracker, host=args.host,
                                    threads=threads))
    host, port = state.tracker
    print(f"{len(state.server_pids)} emulated aarch64 server(s) under key {state.key!r} at tracker {host}:{port}"
          + ("" if state.tracker_pid is None else " (started here)"))
    print(f"profile through them:  tvmnas profile --space fashion-mnist --target arm-aarch64 "
          f"--tracker {host}:{port} --key {state.key}")
    print("stop them:             tvmnas board down")
    return 0


def _status(args) -> int:
    from tvmnas.board.farm import load_state, state_path
    from tvmnas.measure.runner.rpc import tracker_summary
    from tvmnas.procs import is_ours

    state = load_state(state_path(args.rootfs))
    if state is None:
        print("no farm is up (tvmnas board up --emulated aarch64)")
        return 0
    host, port = state.tracker
    running = sum(is_ours(pid, "rpc_server") for pid in state.server_pids)
    if state.tracker_pid is None:
        print(f"tracker {host}:{port}")
    else:
        print(f"tracker {host}:{port} (started here, "
              f"{'running' if is_ours(state.tracker_pid, 'rpc_tracker') else 'gone'})")
    print(f"servers started here: {running} of {len(state.server_pids)} running, key {state.key!r}")
    try:
        keys = tracker_summary(state.endpoint())
    except Exception as err:  # noqa: BLE001 - the tracker is gone: say so in one line
        raise TvmnasError(f"cannot reach the tracker at {host}:{port}: {err}".splitlines()[0]) from None
    for key, (total, free) in sorted(keys.items()) or [("(none)", (0, 0))]:
        print(f"  key {key}: {total} registered, {free} free")
    return 0


def _down(args) -> int:
    from tvmnas.board.farm import down

    servers, tracker = down(args.rootfs)
    print(f"stopped {servers} server(s)" + (" and the tracker" if tracker else ""))
    return 0


def _run(args) -> int:
    import sys

    from tvmnas.board.farm import run_native
    from tvmnas.board.rootfs import ensure_emulation, is_ready
    from tvmnas.deploy.bundle import MANIFEST, SAMPLE_FILE

    if not is_ready(args.rootfs):
        raise TvmnasError(f"no board root filesystem at {args.rootfs}: run `tvmnas board up --emulated aarch64`")
    if not args.runner.is_file():
        raise TvmnasError(f"no aarch64 runner at {args.runner}: run `make runner-aarch64`")
    if not (args.bundle / MANIFEST).is_file():
        raise TvmnasError(f"{args.bundle} is not a bundle (no {MANIFEST})")
    data = args.input or args.bundle / SAMPLE_FILE
    if not data.is_file():
        raise TvmnasError(f"no input file {data}")
    ensure_emulation()
    proc = run_native(args.rootfs, args.runner, args.bundle, data, ["--json"] if args.json else [])
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode
