"""`tvmnas <verb>`: a thin command-line layer over the library. Each module of this package registers the verbs of
one group (`register(subparsers)`, each verb's parser with `set_defaults(func=...)`)."""

from __future__ import annotations

import sys

from tvmnas.cli import board, deploy, info, measure, search, train
from tvmnas.cli.common import ArgumentParser
from tvmnas.errors import TvmnasError

GROUPS = (info, measure, search, train, deploy, board)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tvmnas", description="Hardware-aware NAS with latencies measured by TVM.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail on stderr: -v the libraries' info logs (meta-schedule's tuning among them), "
                             "-vv debug logs")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="the log level itself (overrides -v)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for group in GROUPS:
        group.register(verbs)
    return parser


LOG_LEVELS = ("WARNING", "INFO", "DEBUG")


def configure_logging(level: str) -> None:
    """Libraries' logs on stderr at `level` (without -v or --log-level nothing is configured: Python shows
    warnings only, and tvmnas prints its own progress)."""
    import logging

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.log_level or args.verbose:
            configure_logging(args.log_level or LOG_LEVELS[min(args.verbose, 2)])
        return args.func(args) or 0
    except TvmnasError as err:
        print(f"tvmnas: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (`| head`) went away
        return 0
    except KeyboardInterrupt:
        print("tvmnas: interrupted; every measurement written so far is kept", file=sys.stderr)
        return 130
