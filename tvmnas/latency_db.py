"""The latency database: one SQLite file (WAL, one transaction per measurement).

Rows are keyed by target fingerprint, TVM version, block key, input shape, compilation level and method (the
measurement protocol and compile pipeline versions), so a row measured on another target, with another TVM
version or by another method is never returned for this one. A failed candidate keeps its error text (and no
latency) and is measured again on the next run.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from tvmnas.errors import TvmnasError

DB_APP = "tvmnas-latency"
# 2 added `flag`; 3 added `method` to the key and the protocol's columns (latency_ms, dispersion, windows,
# dropped_windows, speed). Older files are upgraded on open: their rows are kept under method "legacy" (never used
# again) and a copy of the old file is left beside it.
DB_SCHEMA_VERSION = 3
BUSY_TIMEOUT_S = 30.0  # how long opening waits for other processes that hold the file
LEGACY_METHOD = "legacy"

_LATENCY_TABLE = """
CREATE TABLE {name} (
    target_fp TEXT NOT NULL,
    tvm_version TEXT NOT NULL,
    block_key TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    level TEXT NOT NULL,
    method TEXT NOT NULL,
    target_name TEXT NOT NULL,
    device TEXT NOT NULL,
    latency_ms REAL,
    raw_ms REAL,
    dispersion REAL,
    windows INTEGER NOT NULL,
    dropped_windows INTEGER NOT NULL,
    speed REAL,
    compile_s REAL NOT NULL,
    tune_s REAL NOT NULL,
    tasks_tuned INTEGER NOT NULL,
    error TEXT,
    measured_at TEXT NOT NULL,
    flag TEXT,
    PRIMARY KEY (target_fp, tvm_version, block_key, input_shape, level, method)
)
"""


# How the blocks of one space add up inside a whole network (see `Composition`), per scope. Added beside the
# latency table without a new schema version: earlier tvmnas versions read the file and ignore it.
_COMPOSITION_TABLE = """
CREATE TABLE IF NOT EXISTS composition (
    target_fp TEXT NOT NULL,
    tvm_version TEXT NOT NULL,
    method TEXT NOT NULL,
    level TEXT NOT NULL,
    space TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    intercept_ms REAL NOT NULL,
    scale REAL NOT NULL,
    ms_per_weight_mb REAL NOT NULL,
    networks INTEGER NOT NULL,
    loo_mean_abs_error REAL NOT NULL,
    measured_at TEXT NOT NULL,
    PRIMARY KEY (target_fp, tvm_version, method, level, space, input_shape)
)
"""


@dataclass(frozen=True)
class LatencyScope:
    """Which measurements a latency belongs to: the target as measured (its fingerprint names the target and the
    measuring device), TVM's version, the method (protocol and compile pipeline) and the compilation level. Rows of
    another scope are kept and never used. `tvmnas.measure.method.latency_scope` builds the one of a run."""

    target_fp: str
    tvm_version: str
    method: str
    level: str

    def at_level(self, level: str) -> LatencyScope:
        return replace(self, level=level)


@dataclass(frozen=True)
class LatencyRow:
    target_fp: str
    tvm_version: str
    block_key: str
    input_shape: str
    level: str
    method: str  # see `tvmnas.measure.method`: measurement protocol and compile pipeline
    target_name: str
    device: str
    latency_ms: float | None  # the protocol's estimate, at the speed of the database's reference anchor
    raw_ms: float | None  # the same before that normalization (latency_ms x speed)
    dispersion: float | None  # interquartile range / median of the windows behind it
    windows: int
    dropped_windows: int  # windows taken in slow phases of the device, measured again
    speed: float | None  # the device's speed in that run: reference latency then / the anchor's
    compile_s: float
    tune_s: float
    tasks_tuned: int
    error: str | None
    measured_at: str = ""
    flag: str | None = None  # kept but doubtful (its windows stayed noisy)

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency_ms is not None

    @property
    def scope(self) -> LatencyScope:
        return LatencyScope(self.target_fp, self.tvm_version, self.method, self.level)

    @classmethod
    def measured(cls, scope: LatencyScope, block_key: str, input_shape: str, **measurement) -> LatencyRow:
        """A row of the scope (the other fields as keywords)."""
        return cls(target_fp=scope.target_fp, tvm_version=scope.tvm_version, block_key=block_key,
                   input_shape=input_shape, level=scope.level, method=scope.method, **measurement)


_COLUMNS = [f.name for f in fields(LatencyRow)]


@dataclass(frozen=True)
class Composition:
    """How one space's blocks, each timed alone, add up inside a whole network on the scope's device, fitted to
    whole networks timed beside each other (`tvmnas.calibrate`; the only kind stored) or the one-network ratio of
    the space's reference network (`tvmnas.search.latency.reference_composition`, derived from its row when read):
    a network takes `intercept_ms` plus, per block,
    `scale` x its latency alone + `ms_per_weight_mb` x its weights' megabytes (a block timed alone call after call
    finds its weights in cache, inside a network it may not: the term lets a device show that where it matters)."""

    intercept_ms: float
    scale: float
    ms_per_weight_mb: float
    networks: int  # whole networks the fit saw (1: the space's reference network alone, see search.latency)
    # |relative error| of each network's prediction when it is left out of the fit (None: a one-network ratio)
    loo_mean_abs_error: float | None
    measured_at: str = ""

    def block_ms(self, latency_ms: float, weight_mb: float) -> float:
        """A block's share of a network's latency."""
        return self.scale * latency_ms + self.ms_per_weight_mb * weight_mb


_COMPOSITION_COLUMNS = [f.name for f in fields(Composition)]
MIN_CALIBRATION_NETWORKS = 5  # measured networks behind a composition: its three terms, and two more to judge them


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LatencyDB:
    """Open (or create) a latency database; refuses files that are not one, without touching them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TvmnasError(f"cannot create the folder of the latency database {self.path}: "
                              f"{err.strerror or err}") from None
        if self.path.is_dir():
            raise TvmnasError(f"{self.path} is a folder, not a latency database file")
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            self._open_when_free()
        except sqlite3.DatabaseError as err:
            raise TvmnasError(f"{self.path} is not a usable latency database ({err})") from None

    def _open_when_free(self) -> None:
        """Check (or create) the file, waiting while other processes hold it: SQLite answers some lock conflicts
        at once instead of waiting its timeout (switching a file to WAL while another connection reads it, or two
        writers that both read first), so those are tried again until the timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._check_or_create()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check_or_create(self) -> None:
        tables = self._tables()
        if not tables:
            # under the write lock, looking again: of processes that open a new file at once, one creates the
            # tables and the others wait for it, then find them
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if not self._tables():
                    self._conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    self._conn.execute(_LATENCY_TABLE.format(name="latency"))
                    self._conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                           [("app", DB_APP), ("schema_version", str(DB_SCHEMA_VERSION))])
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            tables = self._tables()
        meta = dict(self._conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("app") != DB_APP or "latency" not in tables:
            raise TvmnasError(f"{self.path} is a SQLite file but not a tvmnas latency database")
        version = meta.get("schema_version")
        if version in ("1", "2"):
            self._upgrade(version)
        elif version != str(DB_SCHEMA_VERSION):
            raise TvmnasError(f"{self.path} has latency schema version {version}, this tvmnas reads "
                              f"{DB_SCHEMA_VERSION}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        with self._conn:
            self._conn.execute(_COMPOSITION_TABLE)

    def _upgrade(self, version: str) -> None:
        """Version 1 or 2 -> 3 in one transaction, after copying the file to `<name>.schema<version>.bak`. The old
        rows stay, under method "legacy": their latencies were measured by the first protocol and are never mixed
        with new ones (a profile measures again)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        backup = self.path.with_name(f"{self.path.name}.schema{version}.bak")
        if not backup.exists():
            shutil.copyfile(self.path, backup)
        flag = "flag" if version == "2" else "NULL"
        with self._conn:
            self._conn.execute(_LATENCY_TABLE.format(name="latency_v3"))
            self._conn.execute(
                f"INSERT INTO latency_v3 ({', '.join(_COLUMNS)}) SELECT target_fp, tvm_version, block_key, "
                f"input_shape, level, '{LEGACY_METHOD}', target_name, device, median_ms, median_ms, "
                f"stdev_ms / median_ms, repeats, 0, NULL, compile_s, tune_s, tasks_tuned, error, measured_at, "
                f"{flag} FROM latency")
            self._conn.execute("DROP TABLE latency")
            self._conn.execute("ALTER TABLE latency_v3 RENAME TO latency")
            self._conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(DB_SCHEMA_VERSION),))

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

    def get(self, scope: LatencyScope, block_key: str, input_shape: str) -> LatencyRow | None:
        cur = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM latency WHERE target_fp=? AND tvm_version=? AND block_key=? "
            "AND input_shape=? AND level=? AND method=?",
            (scope.target_fp, scope.tvm_version, block_key, input_shape, scope.level, scope.method))
        found = cur.fetchone()
        return LatencyRow(*found) if found else None

    def rows(self, scope: LatencyScope | None = None) -> list[LatencyRow]:
        """All rows, or those of the scope's target fingerprint, TVM version and method (every level)."""
        query, args = f"SELECT {', '.join(_COLUMNS)} FROM latency", []
        if scope is not None:
            query += " WHERE target_fp=? AND tvm_version=? AND method=?"
            args = [scope.target_fp, scope.tvm_version, scope.method]
        return [LatencyRow(*r) for r in self._conn.execute(query + " ORDER BY block_key, input_shape, level", args)]

    def put_composition(self, scope: LatencyScope, space: str, input_shape: str,
                        composition: Composition) -> Composition:
        """Insert or replace a space's fitted composition; returns it as stored (with its time)."""
        if composition.loo_mean_abs_error is None:
            raise ValueError("only a composition fitted to several networks is stored")
        if not composition.measured_at:
            composition = replace(composition, measured_at=now_utc())
        values = [scope.target_fp, scope.tvm_version, scope.method, scope.level, space, input_shape]
        values += [getattr(composition, c) for c in _COMPOSITION_COLUMNS]
        with self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO composition VALUES ({', '.join('?' for _ in values)})", values)
        return composition

    def get_composition(self, scope: LatencyScope, space: str, input_shape: str) -> Composition | None:
        found = self._conn.execute(
            f"SELECT {', '.join(_COMPOSITION_COLUMNS)} FROM composition WHERE target_fp=? AND tvm_version=? AND "
            "method=? AND level=? AND space=? AND input_shape=?",
            (scope.target_fp, scope.tvm_version, scope.method, scope.level, space, input_shape)).fetchone()
        return Composition(*found) if found else None

    def count_foreign(self, scope: LatencyScope) -> int:
        """Rows that another target fingerprint, TVM version or method produced (kept, never used for this one)."""
        (n,) = self._conn.execute(
            "SELECT COUNT(*) FROM latency WHERE NOT (target_fp=? AND tvm_version=? AND method=?)",
            (scope.target_fp, scope.tvm_version, scope.method)).fetchone()
        return n


def export_rows(rows: list[LatencyRow], out: Path) -> None:
    """Write rows as JSON (a list of objects) or CSV, chosen by the file's suffix."""
    out = Path(out)
    if out.suffix not in (".json", ".csv"):
        raise TvmnasError(f"cannot export to {out}: use a .json or .csv file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    else:
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
