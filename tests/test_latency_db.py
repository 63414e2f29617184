import csv
import json
import sqlite3

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.latency_db import LatencyDB, LatencyRow, export_rows


def row(**changes) -> LatencyRow:
    base = dict(target_fp="fp1", tvm_version="0.27", block_key="mb_k3_e3_i4_o8_s2", input_shape="1x4x8x8",
                level="default", target_name="x86-cpu", device="local", median_ms=0.5, stdev_ms=0.01,
                repeats=15, compile_s=1.0, tune_s=0.0, tasks_tuned=0, error=None)
    return LatencyRow(**{**base, **changes})


def test_write_read_and_survive_reopen(tmp_path):
    path = tmp_path / "lat.db"
    with LatencyDB(path) as db:
        db.put(row())
    with LatencyDB(path) as db:
        got = db.get("fp1", "0.27", "mb_k3_e3_i4_o8_s2", "1x4x8x8", "default")
    assert got.median_ms == 0.5 and got.ok and got.measured_at


def test_rows_are_isolated_by_version_target_and_level(tmp_path):
    with LatencyDB(tmp_path / "lat.db") as db:
        db.put(row())
        db.put(row(tvm_version="0.26", median_ms=9.0))
        db.put(row(target_fp="fp2", median_ms=8.0))
        db.put(row(level="tuned-8", median_ms=0.1))
        assert db.get("fp1", "0.27", "mb_k3_e3_i4_o8_s2", "1x4x8x8", "default").median_ms == 0.5
        assert db.get("fp1", "0.28", "mb_k3_e3_i4_o8_s2", "1x4x8x8", "default") is None
        assert [r.median_ms for r in db.rows("fp1", "0.27")] == [0.5, 0.1]
        assert db.count_foreign("fp1", "0.27") == 2


def test_failed_row_keeps_error(tmp_path):
    with LatencyDB(tmp_path / "lat.db") as db:
        db.put(row(median_ms=None, stdev_ms=None, repeats=0, error="TVMError: boom"))
        got = db.get("fp1", "0.27", "mb_k3_e3_i4_o8_s2", "1x4x8x8", "default")
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
        db.put(row(block_key="mb_k5_e6_i4_o8_s2", median_ms=None, error="x"))
        rows = db.rows()
    export_rows(rows, tmp_path / "out.json")
    export_rows(rows, tmp_path / "out.csv")
    assert [r["block_key"] for r in json.loads((tmp_path / "out.json").read_text())] == \
        ["mb_k3_e3_i4_o8_s2", "mb_k5_e6_i4_o8_s2"]
    with (tmp_path / "out.csv").open() as handle:
        assert [r["median_ms"] for r in csv.DictReader(handle)] == ["0.5", ""]
    with pytest.raises(TvmnasError, match="use a .json or .csv"):
        export_rows(rows, tmp_path / "out.txt")


def test_version_1_file_is_upgraded_and_keeps_its_rows(tmp_path):
    path = tmp_path / "lat.db"
    with LatencyDB(path) as db:
        db.put(row())
    conn = sqlite3.connect(path)  # turn it back into a version-1 file: no flag column
    with conn:
        conn.execute("ALTER TABLE latency DROP COLUMN flag")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.close()
    with LatencyDB(path) as db:
        assert db.get("fp1", "0.27", "mb_k3_e3_i4_o8_s2", "1x4x8x8", "default").median_ms == 0.5
        db.put(row(block_key="other", flag="noisy"))
        assert db.get("fp1", "0.27", "other", "1x4x8x8", "default").flag == "noisy"
