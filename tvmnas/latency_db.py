"""The latency database: one SQLite file (WAL, one transaction per measurement).

Rows are keyed by target fingerprint, TVM version, block key, input shape and compilation level, so a row
measured on another target or with another TVM version is never returned for this one. A failed candidate keeps
its error text (and no latency) and is measured again on the next run.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from tvmnas.errors import TvmnasError

DB_APP = "tvmnas-latency"
DB_SCHEMA_VERSION = 2  # 2 added `flag`; version-1 files are upgraded in place on open

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS latency (
    target_fp TEXT NOT NULL,
    tvm_version TEXT NOT NULL,
    block_key TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    level TEXT NOT NULL,
    target_name TEXT NOT NULL,
    device TEXT NOT NULL,
    median_ms REAL,
    stdev_ms REAL,
    repeats INTEGER NOT NULL,
    compile_s REAL NOT NULL,
    tune_s REAL NOT NULL,
    tasks_tuned INTEGER NOT NULL,
    error TEXT,
    measured_at TEXT NOT NULL,
    flag TEXT,
    PRIMARY KEY (target_fp, tvm_version, block_key, input_shape, level)
);
"""


@dataclass(frozen=True)
class LatencyRow:
    target_fp: str
    tvm_version: str
    block_key: str
    input_shape: str
    level: str
    target_name: str
    device: str
    median_ms: float | None
    stdev_ms: float | None
    repeats: int
    compile_s: float
    tune_s: float
    tasks_tuned: int
    error: str | None
    measured_at: str = ""
    flag: str | None = None  # kept but doubtful (e.g. its repeats disagreed even when measured again)

    @property
    def ok(self) -> bool:
        return self.error is None and self.median_ms is not None


_COLUMNS = [f.name for f in fields(LatencyRow)]


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LatencyDB:
    """Open (or create) a latency database; refuses files that are not one, without touching them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30)
            self._check_or_create()
        except sqlite3.DatabaseError as err:
            raise TvmnasError(f"{self.path} is not a usable latency database ({err})") from None

    def _check_or_create(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables:
            meta = dict(self._conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
            if meta.get("app") != DB_APP or "latency" not in tables:
                raise TvmnasError(f"{self.path} is a SQLite file but not a tvmnas latency database")
            if meta.get("schema_version") == "1":  # add the flag column; every row is kept
                with self._conn:
                    self._conn.execute("ALTER TABLE latency ADD COLUMN flag TEXT")
                    self._conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                                       (str(DB_SCHEMA_VERSION),))
                meta["schema_version"] = str(DB_SCHEMA_VERSION)
            if meta.get("schema_version") != str(DB_SCHEMA_VERSION):
                raise TvmnasError(f"{self.path} has latency schema version {meta.get('schema_version')}, "
                                  f"this tvmnas reads {DB_SCHEMA_VERSION}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            return
        self._conn.execute("PRAGMA journal_mode=WAL")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("app", DB_APP), ("schema_version", str(DB_SCHEMA_VERSION))])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LatencyDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put(self, row: LatencyRow) -> None:
        """Insert or replace one measurement, in its own transaction."""
        if not row.measured_at:
            row = LatencyRow(**{**asdict(row), "measured_at": now_utc()})
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO latency ({', '.join(_COLUMNS)}) VALUES ({marks})",
                               [getattr(row, c) for c in _COLUMNS])

    def get(self, target_fp: str, tvm_version: str, block_key: str, input_shape: str, level: str) -> LatencyRow | None:
        cur = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM latency WHERE target_fp=? AND tvm_version=? AND block_key=? "
            "AND input_shape=? AND level=?", (target_fp, tvm_version, block_key, input_shape, level))
        found = cur.fetchone()
        return LatencyRow(*found) if found else None

    def rows(self, target_fp: str | None = None, tvm_version: str | None = None) -> list[LatencyRow]:
        """All rows, or those of one target fingerprint and TVM version."""
        query, args = f"SELECT {', '.join(_COLUMNS)} FROM latency", []
        if target_fp is not None:
            query += " WHERE target_fp=? AND tvm_version=?"
            args = [target_fp, tvm_version]
        return [LatencyRow(*r) for r in self._conn.execute(query + " ORDER BY block_key, input_shape, level", args)]

    def count_foreign(self, target_fp: str, tvm_version: str) -> int:
        """Rows that another target fingerprint or TVM version produced (kept, never used for this one)."""
        (n,) = self._conn.execute("SELECT COUNT(*) FROM latency WHERE NOT (target_fp=? AND tvm_version=?)",
                                  (target_fp, tvm_version)).fetchone()
        return n


def export_rows(rows: list[LatencyRow], out: Path) -> None:
    """Write rows as JSON (a list of objects) or CSV, chosen by the file's suffix."""
    out = Path(out)
    if out.suffix == ".json":
        out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    elif out.suffix == ".csv":
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    else:
        raise TvmnasError(f"cannot export to {out}: use a .json or .csv file name")
