"""What several verbs share: one-line argument errors, checked numeric flags, the target/endpoint flags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tvmnas.errors import TvmnasError
from tvmnas.files import default_db, why_not_writable
from tvmnas.measure.level import DEFAULT_TUNE_TRIALS
from tvmnas.measure.farm import FarmPolicy
from tvmnas.measure.protocol import SINGLE

DEFAULT_DB = default_db()


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `tvmnas: error: ...` line and exit 2 (via TvmnasError), like any other
    bad input; `--help` still prints the usage."""

    def error(self, message: str):
        verb = self.prog.removeprefix("tvmnas").strip()
        raise TvmnasError(f"{verb}: {message}" if verb else message)


def count(minimum: int, maximum: int | None = None, why: str = ""):
    """An argparse type: an integer >= minimum (and <= maximum; `why` says where that bound comes from)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}{why}, not {value}")
        return value
    return parse


MAX_WAIT_S = 86400.0  # a day: any longer wait is a typo (and overflows the socket layer's timeouts)


def number(minimum: float = 0.0, maximum: float | None = None, inclusive: bool = False):
    """An argparse type: a finite number above minimum (or at it, when inclusive) and not above maximum."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        low_ok = value >= minimum if inclusive else value > minimum
        if not low_ok or value != value or value in (float("inf"), float("-inf")) or \
                (maximum is not None and value > maximum):
            bounds = f"{'>=' if inclusive else '>'} {minimum:g}" + ("" if maximum is None else f" and <= {maximum:g}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value
    return parse


def output_path(folder: bool):
    """An argparse type: a path this process can write as a file (or create as a folder, when `folder`); a path
    under a file, a folder where a file belongs, or no permission is refused before anything is written."""
    def parse(text: str) -> Path:
        problem = why_not_writable(Path(text), folder)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return Path(text)
    return parse


def add_training_args(p: argparse.ArgumentParser, epochs: int, images_per_epoch: int, batch_size: int,
                      data_help: str, out_help: str) -> None:
    """What a search and a training both take: how long, on which data, with which seed, into which folder."""
    p.add_argument("--epochs", type=count(1), default=epochs, help=f"default {epochs}")
    p.add_argument("--images-per-epoch", type=count(0), default=images_per_epoch,
                   help=f"training images sampled for each epoch, 0 = all (default {images_per_epoch})")
    p.add_argument("--batch-size", type=count(1), default=batch_size, help=f"default {batch_size}")
    p.add_argument("--shards", type=count(1),
                   help="compute each batch as this many equal shards, each with its own BatchNorm statistics, "
                        "their gradients summed in order: the same number in 1 or N processes (torchrun) gives the "
                        "same result, bit for bit; with more than one, every shard runs on one thread (default: "
                        "the number of processes)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--data", help=data_help)
    p.add_argument("--limit", type=count(1), help="use only the first N training images (quick trials)")
    p.add_argument("--out", type=output_path(folder=True), help=out_help)


def add_target_args(p: argparse.ArgumentParser, measures: bool = True) -> None:
    """--target, --db, --tune-trials and the endpoint flags; for `search` they pick which measurements to use."""
    verb = "measure" if measures else "use latencies measured"
    p.add_argument("--target", required=measures,
                   help="target name (see `tvmnas targets`) or path to a target JSON")
    p.add_argument("--db", type=Path, default=DEFAULT_DB,
                   help=f"latency database (SQLite); tuning records live beside it (default {DEFAULT_DB})")
    p.add_argument("--tune-trials", type=count(0), default=DEFAULT_TUNE_TRIALS,
                   help=f"{verb} with meta-schedule tuning of this many trials per fused kernel; 0 = TVM's "
                        f"default schedules (default {DEFAULT_TUNE_TRIALS})")
    remote = p.add_mutually_exclusive_group()
    remote.add_argument("--rpc", metavar="HOST:PORT", help=f"{verb} on a TVM RPC server")
    remote.add_argument("--tracker", metavar="HOST:PORT", help=f"{verb} through a TVM RPC tracker")
    p.add_argument("--key", help="RPC key to request from the tracker (default: the target's rpc_key)")
    p.add_argument("--rpc-timeout", type=number(0, MAX_WAIT_S), default=10.0, metavar="S",
                   help="seconds to wait for an RPC endpoint to answer (default 10)")


def add_measure_s_arg(p: argparse.ArgumentParser) -> None:
    """--measure-s: how long a single network is timed (`tvmnas.measure.protocol.single_protocol`)."""
    p.add_argument("--measure-s", type=number(0, MAX_WAIT_S), default=SINGLE.min_span_s, metavar="S",
                   help=f"time the module over at least S seconds, interleaved with the reference (default "
                        f"{SINGLE.min_span_s:g}); longer gives a steadier figure where the device's speed changes "
                        f"in phases")


def add_farm_args(p: argparse.ArgumentParser) -> None:
    """How `profile --tracker` spreads timing over the servers under the key, and survives their faults."""
    d = FarmPolicy()
    p.add_argument("--max-attempts", type=count(1), default=d.max_attempts,
                   help=f"with --tracker: tries of one candidate's timing before it is stored as failed; each try "
                        f"asks the tracker for a server again (default {d.max_attempts})")
    p.add_argument("--measure-timeout", type=number(0, MAX_WAIT_S), default=d.measure_timeout_s, metavar="S",
                   help=f"with --tracker: seconds one timing may take before its server counts as hung "
                        f"(default {d.measure_timeout_s:g})")
    p.add_argument("--request-timeout", type=number(0, MAX_WAIT_S), default=d.request_timeout_s, metavar="S",
                   help=f"with --tracker: seconds to wait for the tracker to hand out a server before a worker "
                        f"gives up (default {d.request_timeout_s:g})")


def farm_policy(args) -> FarmPolicy:
    return FarmPolicy(max_attempts=args.max_attempts, measure_timeout_s=args.measure_timeout,
                      request_timeout_s=args.request_timeout)


def endpoint_from_args(args, spec):
    """The RPC endpoint that --rpc / --tracker / --key name, or None for this machine."""
    from tvmnas.measure.runner.rpc import RpcEndpoint, parse_host_port

    if not (args.rpc or args.tracker):
        return None
    host, port = parse_host_port(args.rpc or args.tracker, "--rpc" if args.rpc else "--tracker")
    key = (args.key or spec.rpc_key or spec.name) if args.tracker else None
    return RpcEndpoint(host, port, key, args.rpc_timeout)


def runner_from_args(args, spec):
    """The runner for the target and the endpoint flags (checked reachable)."""
    from tvmnas.measure.runner.select import make_runner

    return make_runner(spec, endpoint_from_args(args, spec))


def check_tools(spec) -> None:
    missing = spec.missing_tools()
    if missing:
        raise TvmnasError(f"target {spec.name!r} needs {', '.join(missing)}, which is not installed")


def parse_shape(text: str) -> tuple[int, ...]:
    """An argparse type: a shape such as 1x3x224x224."""
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"must look like 1x3x224x224, not {text!r}")
    return shape


def add_device_args(p: argparse.ArgumentParser) -> None:
    """Where a search or a training runs (launch with `torchrun --nproc-per-node N tvmnas ...` for N processes)."""
    from tvmnas.targets import RUN_DEVICES

    p.add_argument("--device", choices=RUN_DEVICES, default="auto",
                   help="cpu, cuda, or auto: cuda where PyTorch sees a GPU, else cpu (default auto)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision: bfloat16 autocast in forward passes")
    cores = os.cpu_count() or 1
    p.add_argument("--workers", type=count(0, 4 * cores, f" (4 per core of this machine's {cores})"), default=0,
                   help="DataLoader processes decoding images streamed from files (ImageFolder data of 64 px and "
                        "more); 0 = in this process (default 0)")


def world_from_args(args):
    """This process's world (device, rank among torchrun's processes)."""
    from tvmnas.dist import init_world

    return init_world(args.device, args.amp)
