"""The battery of bad inputs: each ends with one line and exit 2, and leaves the latency database, the tuning
records and a run folder byte-identical."""

import hashlib
import json

import pytest

from tvmnas.cli import main

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS


def tree_digest(*roots) -> dict:
    """sha256 of every file under the roots (path -> digest)."""
    out = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_idx_dir_module):
    """A latency database (with a tuning folder beside it) and a finished search run of the tiny space."""
    from tvmnas.space import load_space

    tmp = tmp_path_factory.mktemp("bad-input")
    space_path = DATA / "tiny-space.json"
    db = tmp / "cache" / "lat.db"
    helpers.fill_db(db, load_space(str(space_path)), LATENCY_MS)
    (tmp / "cache" / "tuning").mkdir()
    (tmp / "cache" / "tuning" / "database_workload.json").write_text("")
    run = tmp / "run"
    assert main(["search", "--space", str(space_path), "--target", "x86-cpu", "--db", str(db), "--latency-ms", "1.0",
                 "--data", str(tiny_idx_dir_module), "--batch-size", "16", "--epochs", "1", "--warmup-epochs", "0",
                 "--out", str(run)]) == 0
    return {"tmp": tmp, "db": db, "run": run, "space": space_path, "data": tiny_idx_dir_module}


def target_file(tmp, name: str, tvm_target: dict) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"schema_version": 1, "name": name, "device": "cpu", "tvm_target": tvm_target}))
    return str(path)


def space_file(tmp, channels: int) -> str:
    data = json.loads((DATA / "tiny-space.json").read_text())
    data["name"] = "huge"
    data["stages"][0]["channels"] = channels
    path = tmp / "huge.json"
    path.write_text(json.dumps(data))
    return str(path)


def cases(w):
    tmp, db, run, space, data = w["tmp"], str(w["db"]), str(w["run"]), str(w["space"]), str(w["data"])
    profile = ["profile", "--space", space, "--db", db]
    search = ["search", "--space", space, "--target", "x86-cpu", "--db", db, "--data", data, "--out", str(tmp / "r2")]
    return [
        ([*profile, "--target", target_file(tmp, "kind", {"kind": "llvmx"})], "TVM refuses the target"),
        ([*profile, "--target", target_file(tmp, "cores", {"kind": "llvm", "num-cores": 0})], "num-cores"),
        ([*profile, "--target", target_file(tmp, "cpu", {"kind": "llvm", "mcpu": "bogus"})], "LLVM knows no CPU"),
        ([*profile, "--target", target_file(tmp, "key", {"kind": "llvm", "foo": 1})], "Unknown config option"),
        (["profile", "--space", space_file(tmp, 100_000_000), "--target", "x86-cpu", "--db", db],
         "over the bound"),
        (["profile", "--target", "x86-cpu", "--db", db], "the following arguments are required: --space"),
        ([*profile, "--target", "x86-cpu", "--tune-trials", "-1"], "argument --tune-trials: must be >= 0"),
        ([*profile, "--target", "x86-cpu", "--rpc", "127.0.0.1:1", "--tracker", "127.0.0.1:2"],
         "not allowed with argument"),
        ([*profile, "--target", "x86-cpu", "--tracker", "127.0.0.1:1", "--max-attempts", "0"], "--max-attempts"),
        ([*profile, "--target", "nope"], "unknown target 'nope'"),
        ([*search, "--latency-ms", "1", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
        ([*search, "--latency-ms", "1", "--loss", "cubic"], "argument --loss: invalid choice"),
        ([*search, "--latency-ms", "0.1"], "below the smallest reachable latency"),
        ([*search, "--latency-ms", "1", "--tune-trials", "-3"], "argument --tune-trials"),
        (["search", "--resume", run, "--latency-ms", "2.0", "--db", db], "differs from the resumed run"),
        (["train", "--run", run, "--batch-size", "0"], "argument --batch-size: must be >= 1"),
        (["train", "--run", run, "--epochs", "-1"], "argument --epochs"),
        (["export", "--run", run, "--target", "x86-cpu", "--db", db, "--tune-trials", "-1"], "--tune-trials"),
        (["export", "--network", str(tmp / "none.pt"), "--target", "x86-cpu", "--db", db], "no network file"),
        (["bench-model", str(tmp / "m.onnx"), "--target", "x86-cpu", "--db", db, "--tune-trials", "-2"],
         "--tune-trials"),
        (["db-export", str(tmp / "rows.txt"), "--db", db], "use a .json or .csv"),
    ]


def test_every_bad_input_is_one_line_and_touches_nothing(workspace, capsys):
    before = tree_digest(workspace["db"].parent, workspace["run"])
    for argv, fragment in cases(workspace):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("tvmnas: error: ") and fragment in err, (argv, err)
    assert tree_digest(workspace["db"].parent, workspace["run"]) == before
    assert not (workspace["tmp"] / "r2").exists()
