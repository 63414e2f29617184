"""`tvmnas targets | spaces | db-export`: what is known and what was measured."""

from __future__ import annotations

from pathlib import Path

from tvmnas.cli.common import DEFAULT_DB, output_path
from tvmnas.errors import TvmnasError


def register(verbs) -> None:
    verbs.add_parser("targets", help="list the known targets and what each needs").set_defaults(func=cmd_targets)
    verbs.add_parser("spaces", help="list the known search spaces").set_defaults(func=cmd_spaces)
    p = verbs.add_parser("db-export", help="write the latency database as JSON or CSV")
    p.add_argument("out", type=output_path(folder=False), help="output file, .json or .csv")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"latency database (default {DEFAULT_DB})")
    p.set_defaults(func=cmd_db_export)


def cmd_targets(_args) -> int:
    from tvmnas.targets import list_targets, load_target

    for name in list_targets():
        spec = load_target(name)
        missing = spec.missing_tools()
        print(f"{name}: {spec.description}")
        print(f"    device {spec.device}, TVM target {spec.tvm_target}"
              + (f", conv_layout {spec.conv_layout}" if spec.conv_layout != "nchw" else "")
              + (f", RPC key {spec.rpc_key}" if spec.rpc_key else ""))
        for need in spec.needs:
            print(f"    needs: {need}")
        if missing:
            print(f"    missing here: {', '.join(missing)}")
    return 0


def cmd_spaces(_args) -> int:
    from tvmnas.space import list_spaces, load_space

    for name in list_spaces():
        space = load_space(name)
        print(f"{name}: {len(space.layers())} searchable layers, {len(space.candidates())} unique candidates "
              f"to measure - {space.description}")
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
