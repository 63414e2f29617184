"""The command line: listings, and bad input as one line on stderr with a non-zero exit."""

import sqlite3
import subprocess
import sys

import pytest

from tvmnas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tvmnas: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_targets_and_spaces_list(capsys):
    code, out, _ = run(capsys, "targets")
    assert code == 0 and "x86-cpu:" in out and "arm-aarch64:" in out and "cuda-sm90:" in out and "needs:" in out
    code, out, _ = run(capsys, "spaces")
    assert code == 0 and "proxyless-imagenet: 21 searchable layers" in out


@pytest.mark.parametrize("argv, fragments", [
    (["profile", "--space", "nope", "--target", "x86-cpu"], ["unknown search space 'nope'", "fashion-mnist"]),
    (["profile", "--space", "fashion-mnist", "--target", "nope"], ["unknown target 'nope'", "x86-cpu"]),
    (["profile", "--space", "fashion-mnist", "--target", "x86-cpu", "--tune-trials", "-1"], ["--tune-trials"]),
    (["profile", "--space", "fashion-mnist", "--target", "x86-cpu", "--rpc", "nohost"], ["expected HOST:PORT"]),
    (["profile", "--space", "fashion-mnist", "--target", "cuda-sm90"], ["CUDA GPU"]),
    (["profile", "--space", "fashion-mnist", "--target", "x86-cpu", "--tracker", "127.0.0.1:1", "--max-attempts",
      "0"], ["argument --max-attempts: must be >= 1, not 0"]),
    (["profile", "--space", "fashion-mnist", "--target", "x86-cpu", "--tracker", "127.0.0.1:1", "--measure-timeout",
      "-1"], ["argument --measure-timeout: must be > 0"]),
])
def test_bad_input(capsys, tmp_path, argv, fragments):
    code, _, err = run(capsys, *argv, "--db", str(tmp_path / "lat.db"))
    assert_one_line_error(code, err, *fragments)


def test_remote_target_needs_an_endpoint(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("tvmnas.targets.TargetSpec.missing_tools", lambda self: [])  # cross compiler or not
    code, _, err = run(capsys, "profile", "--space", "fashion-mnist", "--target", "arm-aarch64",
                       "--db", str(tmp_path / "lat.db"))
    assert_one_line_error(code, err, "--tracker")


def test_malformed_target_file(capsys, tmp_path, write_json):
    path = write_json("t.json", {"schema_version": 1, "name": "t", "device": "gpu", "tvm_target": {"kind": "llvm"}})
    code, _, err = run(capsys, "profile", "--space", "fashion-mnist", "--target", str(path),
                       "--db", str(tmp_path / "lat.db"))
    assert_one_line_error(code, err, str(path), "'device'")


def test_unreachable_rpc(capsys, tmp_path):
    code, _, err = run(capsys, "profile", "--space", "fashion-mnist", "--target", "x86-cpu", "--rpc",
                       "127.0.0.1:1", "--rpc-timeout", "2", "--db", str(tmp_path / "lat.db"))
    assert_one_line_error(code, err, "cannot reach RPC server at 127.0.0.1:1")


def test_corrupt_database_is_kept(capsys, tmp_path, tiny_space_path):
    db = tmp_path / "lat.db"
    db.write_bytes(b"\x00garbage" * 64)
    before = db.read_bytes()
    code, _, err = run(capsys, "profile", "--space", str(tiny_space_path), "--target", "x86-cpu",
                       "--tune-trials", "0", "--db", str(db))
    assert_one_line_error(code, err, str(db))
    assert db.read_bytes() == before


def test_foreign_database_for_export(capsys, tmp_path):
    db = tmp_path / "notes.db"
    sqlite3.connect(db).execute("CREATE TABLE notes (x)").connection.commit()
    code, _, err = run(capsys, "db-export", str(tmp_path / "out.json"), "--db", str(db))
    assert_one_line_error(code, err, "not a tvmnas latency database")


def test_profile_and_export_end_to_end(capsys, tmp_path, tiny_space_path):
    db = tmp_path / "lat.db"
    argv = ["profile", "--space", str(tiny_space_path), "--target", "x86-cpu", "--tune-trials", "0", "--db", str(db)]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "7 candidates, 7 measured now" in out
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "0 measured now, 7 from the database" in out
    code, out, _ = run(capsys, *argv, "--force")
    assert code == 0 and "7 candidates, 7 measured now, 0 from the database" in out
    code, out, _ = run(capsys, "db-export", str(tmp_path / "rows.csv"), "--db", str(db))
    assert code == 0 and "wrote 9 rows" in out  # the 7 candidates, the reference module's and network's anchors


def test_console_script_exit_code():
    proc = subprocess.run([sys.executable, "-m", "tvmnas.cli", "profile", "--space", "nope", "--target", "x86-cpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "tvmnas: error: unknown search space 'nope'; known: cluttered-fashion-64, fashion-mnist, proxyless-imagenet"


def test_bench_kernels_needs_tuning(capsys, tmp_path):
    code, _, err = run(capsys, "bench-kernels", "--target", "x86-cpu", "--tune-trials", "0",
                       "--db", str(tmp_path / "lat.db"))
    assert_one_line_error(code, err, "--tune-trials must be > 0")


def test_bench_kernels_tabulates_default_against_tuned(capsys, tmp_path, tiny_space, tiny_space_path):
    """With both levels in the database nothing is measured: the table, its Markdown and its figure come from the
    rows, each kernel with both latencies."""
    import json

    from tests import helpers

    db = tmp_path / "lat.db"
    helpers.fill_db(db, tiny_space, {"stem": 0.2, "first": 0.2, "head": 0.2, "mb_k3_e1": 0.5, "mb_k3_e2": 0.8},
                    level="default")
    helpers.fill_db(db, tiny_space, {"stem": 0.1, "first": 0.1, "head": 0.1, "mb_k3_e1": 0.25, "mb_k3_e2": 0.4},
                    level="tuned-2")
    before = db.read_bytes()
    code, out, err = run(capsys, "bench-kernels", "--target", "x86-cpu", "--space", str(tiny_space_path),
                         "--tune-trials", "2", "--db", str(db), "--out", str(tmp_path / "results" / "kernels"))
    assert code == 0, err
    entries = json.loads((tmp_path / "results" / "kernels.json").read_text())["entries"]
    assert entries and all(abs(e["tuned_ms"] - e["default_ms"] / 2) < 1e-12 for e in entries)
    assert (tmp_path / "results" / "kernels.png").stat().st_size > 1000 and "| tuned ms |" in out
    assert db.read_bytes() == before


def test_bench_model_writes_its_json(capsys, tmp_path):
    import json

    from tests.measure.test_model_bench import small_onnx

    out_json = tmp_path / "results" / "m.json"
    code, out, err = run(capsys, "bench-model", str(small_onnx(tmp_path / "m.onnx")), "--target", "x86-cpu",
                         "--tune-trials", "0", "--db", str(tmp_path / "lat.db"), "--json", str(out_json))
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["input_shape"] == "1x3x16x16" and result["level"] == "default"
    assert result["latency"]["measured_ms"] > 0 and f"{result['latency']['measured_ms']:.4f} ms" in out


def test_db_export_without_database(capsys, tmp_path):
    code, _, err = run(capsys, "db-export", str(tmp_path / "out.csv"), "--db", str(tmp_path / "none.db"))
    assert_one_line_error(code, err, "no latency database at")
    code, _, err = run(capsys, "db-export", str(tmp_path / "out.txt"), "--db", str(tmp_path / "none.db"))
    assert code == 2


def heavy_imports(*argv: str) -> set[str]:
    """The top-level packages among torch, tvm and tvm_ffi that `python -m tvmnas.cli ARGV` imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tvmnas.cli", *argv], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return names & {"torch", "tvm", "tvm_ffi"}


def test_help_imports_neither_torch_nor_tvm():
    from tvmnas.cli import build_parser

    verbs = next(a for a in build_parser()._actions if a.dest == "verb").choices
    assert heavy_imports("--help") == set()
    for verb in verbs:
        assert heavy_imports(verb, "--help") == set(), verb
    assert heavy_imports("board", "up", "--help") == set()


def test_verbose_shows_the_libraries_info_logs():
    done = subprocess.run([sys.executable, "-c", "import logging, sys; from tvmnas.cli import main; "
                           "sys.argv = ['tvmnas']; code = main(['-v', 'spaces']); "
                           "logging.getLogger('tvm.s_tir.meta_schedule').info('tuning table'); sys.exit(code)"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "INFO tvm.s_tir.meta_schedule: tuning table" in done.stderr, done.stderr
    quiet = subprocess.run([sys.executable, "-m", "tvmnas.cli", "spaces"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
