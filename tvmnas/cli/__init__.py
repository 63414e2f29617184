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
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for group in GROUPS:
        group.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except TvmnasError as err:
        print(f"tvmnas: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (`| head`) went away
        return 0
    except KeyboardInterrupt:
        print("tvmnas: interrupted; every measurement written so far is kept", file=sys.stderr)
        return 130
