import csv
import json
import sqlite3

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.latency_db import LEGACY_METHOD, LatencyDB, LatencyRow, LatencyScope, export_rows

SCOPE = LatencyScope("fp1", "0.27", "m2", "default")
KEY = (SCOPE, "mb_k3_e3_i4_o8_s2", "1x4x8x8")


def row(**changes) -> LatencyRow:
    base = dict(target_fp="fp1", tvm_version="0.27", block_key="mb_k3_e3_i4_o8_s2", input_shape="1x4x8x8",
                level="default", method="m2", target_name="x86-cpu", device="local", latency_ms=0.5, raw_ms=0.55,
                dispersion=0.01, windows=120, dropped_windows=4, speed=1.1, compile_s=1.0, tune_s=0.0,
                tasks_tuned=0, error=None)
    return LatencyRow(**{**base, **changes})


def test_write_read_and_survive_reopen(tmp_path):
    path = tmp_path / "lat.db"
    with LatencyDB(path) as db:
        db.put(row())
    with LatencyDB(path) as db:
        got = db.get(*KEY)
    assert got.latency_ms == 0.5 and got.raw_ms == 0.55 and got.windows == 120 and got.ok and got.measured_at


def test_rows_are_isolated_by_version_target_level_and_method(tmp_path):
    with LatencyDB(tmp_path / "lat.db") as db:
        db.put(row())
        db.put(row(tvm_version="0.26", latency_ms=9.0))
        db.put(row(target_fp="fp2", latency_ms=8.0))
        db.put(row(level="tuned-8", latency_ms=0.1))
        db.put(row(method="m1", latency_ms=7.0))
        assert db.get(*KEY).latency_ms == 0.5
        assert db.get(LatencyScope("fp1", "0.28", "m2", "default"), *KEY[1:]) is None
        assert db.get(SCOPE.at_level("tuned-8"), *KEY[1:]).latency_ms == 0.1
        assert [r.latency_ms for r in db.rows(SCOPE)] == [0.5, 0.1]
        assert db.count_foreign(SCOPE) == 3
        assert db.get(*KEY).scope == SCOPE
        assert LatencyRow.measured(SCOPE, *KEY[1:], **{k: v for k, v in row().__dict__.items()
                                                      if k not in ("target_fp", "tvm_version", "block_key",
                                                                   "input_shape", "level", "method")}) == row()


def test_failed_row_keeps_error(tmp_path):
    with LatencyDB(tmp_path / "lat.db") as db:
        db.put(row(latency_ms=None, raw_ms=None, dispersion=None, windows=0, error="TVMError: boom"))
        got = db.get(*KEY)
    assert not got.ok and got.error == "TVMError: boom"


def test_corrupt_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "lat.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    before = path.read_bytes()
    with pytest.raises(TvmnasError, match="not a usable latency database"):
        LatencyDB(path)
    assert path.read_bytes() == before


def test_foreign_sqlite_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    with pytest.raises(TvmnasError, match="not a tvmnas latency database"):
        LatencyDB(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    assert conn.execute("SELECT x FROM notes").fetchall() == [("keep me",)]


def test_export_json_and_csv(tmp_path):
    with LatencyDB(tmp_path / "lat.db") as db:
        db.put(row())
        db.put(row(block_key="mb_k5_e6_i4_o8_s2", latency_ms=None, error="x"))
        rows = db.rows()
    export_rows(rows, tmp_path / "out.json")
    export_rows(rows, tmp_path / "out.csv")
    assert [r["block_key"] for r in json.loads((tmp_path / "out.json").read_text())] == \
        ["mb_k3_e3_i4_o8_s2", "mb_k5_e6_i4_o8_s2"]
    with (tmp_path / "out.csv").open() as handle:
        assert [r["latency_ms"] for r in csv.DictReader(handle)] == ["0.5", ""]
    with pytest.raises(TvmnasError, match="use a .json or .csv"):
        export_rows(rows, tmp_path / "out.txt")


OLD_TABLE = """CREATE TABLE latency (target_fp TEXT NOT NULL, tvm_version TEXT NOT NULL, block_key TEXT NOT NULL,
    input_shape TEXT NOT NULL, level TEXT NOT NULL, target_name TEXT NOT NULL, device TEXT NOT NULL, median_ms REAL,
    stdev_ms REAL, repeats INTEGER NOT NULL, compile_s REAL NOT NULL, tune_s REAL NOT NULL,
    tasks_tuned INTEGER NOT NULL, error TEXT, measured_at TEXT NOT NULL, {flag}
    PRIMARY KEY (target_fp, tvm_version, block_key, input_shape, level))"""


def old_database(path, version: int) -> None:
    """A latency database as tvmnas wrote it with schema version 1 (no flag) or 2."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [("app", "tvmnas-latency"), ("schema_version", str(version))])
        conn.execute(OLD_TABLE.format(flag="flag TEXT," if version == 2 else ""))
        values = ["fp1", "0.27", "mb_k3", "1x4x8x8", "tuned-8", "x86-cpu", "local", 0.5, 0.05, 25, 1.0, 2.0, 3, None,
                  "2026-11-27T10:00:00+00:00"] + (["noisy"] if version == 2 else [])
        conn.execute(f"INSERT INTO latency VALUES ({', '.join('?' for _ in values)})", values)
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_old_file_is_upgraded_its_rows_kept_and_never_used(tmp_path, version):
    path = tmp_path / "lat.db"
    old_database(path, version)
    before = path.read_bytes()
    with LatencyDB(path) as db:
        tuned = SCOPE.at_level("tuned-8")
        assert db.get(tuned, "mb_k3", "1x4x8x8") is None  # measured again, not mixed
        kept = db.get(LatencyScope("fp1", "0.27", LEGACY_METHOD, "tuned-8"), "mb_k3", "1x4x8x8")
        assert (kept.latency_ms, kept.windows, kept.tune_s, kept.tasks_tuned, kept.measured_at) == \
            (0.5, 25, 2.0, 3, "2026-11-27T10:00:00+00:00")
        assert kept.dispersion == pytest.approx(0.1) and kept.flag == ("noisy" if version == 2 else None)
        assert db.count_foreign(SCOPE) == 1
        db.put(row())
        assert db.get(*KEY).latency_ms == 0.5
    assert (tmp_path / f"lat.db.schema{version}.bak").read_bytes() == before  # the old file, as it was


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "lat.db"
    old_database(path, 9)
    before = path.read_bytes()
    with pytest.raises(TvmnasError, match="latency schema version 9, this tvmnas reads 3"):
        LatencyDB(path)
    assert path.read_bytes() == before


def test_processes_opening_a_new_file_at_once_all_get_the_database(tmp_path):
    """Several openers of a file that does not exist yet (two `profile` runs started together): one creates the
    tables, the others find them; none fails, and every row is kept."""
    import threading

    for attempt in range(5):
        path = tmp_path / f"lat{attempt}.db"
        openers = 6
        barrier, errors = threading.Barrier(openers), []

        def open_and_put(i: int) -> None:
            barrier.wait()
            try:
                with LatencyDB(path) as db:
                    db.put(row(block_key=f"b{i}"))
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

        threads = [threading.Thread(target=open_and_put, args=(i,)) for i in range(openers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with LatencyDB(path) as db:
            assert sorted(r.block_key for r in db.rows()) == [f"b{i}" for i in range(openers)]
