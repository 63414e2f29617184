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
    """A latency database (with a tuning folder beside it), a finished search run of the tiny space and a
    training of its network."""
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
    trained = tmp / "trained"
    assert main(["train", "--run", str(run), "--epochs", "1", "--batch-size", "16", "--out", str(trained)]) == 0
    return {"tmp": tmp, "db": db, "run": run, "space": space_path, "data": tiny_idx_dir_module, "trained": trained}


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


def space_with(tmp, name: str, **stage) -> str:
    """The tiny space with its first stage's fields replaced."""
    data = json.loads((DATA / "tiny-space.json").read_text())
    data["name"] = name
    data["stages"][0].update(stage)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def binary_file(tmp, name: str) -> str:
    """A file of bytes that are not text (a PNG's signature)."""
    path = tmp / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return str(path)


def onnx_file(tmp, kind: str) -> str:
    """A small ONNX model: one Relu (`relu`), or one bench-model must refuse: two inputs, or an operator TVM's
    importer does not know."""
    import onnx
    from onnx import TensorProto, helper

    def value(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8, 8])

    if kind == "relu":
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], kind, [value("x")], [value("y")])
        opsets = [helper.make_opsetid("", 17)]
    elif kind == "two-inputs":
        graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], kind, [value("a"), value("b")],
                                  [value("y")])
        opsets = [helper.make_opsetid("", 17)]
    else:
        graph = helper.make_graph([helper.make_node("FooBarOp", ["x"], ["y"], domain="my.ops")], kind, [value("x")],
                                  [value("y")])
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)]
    path = tmp / f"{kind}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return str(path)


def _profile(w, *more):
    return ["profile", "--space", str(w["space"]), "--db", str(w["db"]), *more]


def _search(w, *more):
    return ["search", "--space", str(w["space"]), "--target", "x86-cpu", "--db", str(w["db"]), "--data",
            str(w["data"]), "--out", str(w["tmp"] / "r2"), *more]


# (id, argv from the workspace, a fragment of the one line)
CASES = [
    ("target-kind", lambda w: _profile(w, "--target", target_file(w["tmp"], "kind", {"kind": "llvmx"})),
     "TVM refuses the target"),
    ("target-cores",
     lambda w: _profile(w, "--target", target_file(w["tmp"], "cores", {"kind": "llvm", "num-cores": 0})),
     "num-cores"),
    ("target-mcpu", lambda w: _profile(w, "--target", target_file(w["tmp"], "cpu", {"kind": "llvm", "mcpu": "bogus"})),
     "LLVM knows no CPU"),
    ("target-key", lambda w: _profile(w, "--target", target_file(w["tmp"], "key", {"kind": "llvm", "foo": 1})),
     "Unknown config option"),
    ("space-huge", lambda w: ["profile", "--space", space_file(w["tmp"], 100_000_000), "--target", "x86-cpu", "--db",
                              str(w["db"])], "over the bound"),
    ("space-zero-channels", lambda w: ["profile", "--space", space_with(w["tmp"], "zc", channels=0), "--target",
                                       "x86-cpu", "--db", str(w["db"])], "'stages[0].channels' must be a positive"),
    ("space-zero-stride", lambda w: ["profile", "--space", space_with(w["tmp"], "zs", stride=0), "--target",
                                     "x86-cpu", "--db", str(w["db"])], "'stages[0].stride' must be a positive"),
    ("profile-no-space", lambda w: ["profile", "--target", "x86-cpu", "--db", str(w["db"])],
     "the following arguments are required: --space"),
    ("profile-trials", lambda w: _profile(w, "--target", "x86-cpu", "--tune-trials", "-1"),
     "argument --tune-trials: must be >= 0"),
    ("calibrate-too-few", lambda w: _profile(w, "--target", "x86-cpu", "--calibrate", "3"),
     "argument --calibrate: must be 0 or >= 5"),
    ("rpc-and-tracker",
     lambda w: _profile(w, "--target", "x86-cpu", "--rpc", "127.0.0.1:1", "--tracker", "127.0.0.1:2"),
     "not allowed with argument"),
    ("max-attempts", lambda w: _profile(w, "--target", "x86-cpu", "--tracker", "127.0.0.1:1", "--max-attempts", "0"),
     "--max-attempts"),
    ("target-unknown", lambda w: _profile(w, "--target", "nope"), "unknown target 'nope'"),
    ("db-under-a-file", lambda w: ["profile", "--space", str(w["space"]), "--target", "x86-cpu", "--db",
                                   str(w["db"] / "sub" / "lat.db")], "cannot create the folder of the latency"),
    ("db-is-a-folder", lambda w: ["profile", "--space", str(w["space"]), "--target", "x86-cpu", "--db",
                                  str(w["db"].parent)], "is a folder, not a latency database file"),
    ("batch-size", lambda w: _search(w, "--latency-ms", "1", "--batch-size", "0"), "argument --batch-size: must be"),
    ("loss", lambda w: _search(w, "--latency-ms", "1", "--loss", "cubic"), "argument --loss: invalid choice"),
    ("arch-lr-schedule", lambda w: _search(w, "--latency-ms", "1", "--arch-lr-schedule", "linear"),
     "argument --arch-lr-schedule: invalid choice"),
    ("shards-uneven", lambda w: _search(w, "--latency-ms", "1", "--shards", "3"),
     "a batch of 64 does not split into 3 equal shards"),
    ("shards-zero", lambda w: _search(w, "--latency-ms", "1", "--shards", "0"), "argument --shards: must be >= 1"),
    ("arch-samples-zero", lambda w: _search(w, "--latency-ms", "1", "--arch-samples", "0"),
     "argument --arch-samples: must be >= 1"),
    ("rerank-negative", lambda w: _search(w, "--latency-ms", "1", "--rerank", "-1"), "argument --rerank: must be >= 0"),
    ("method", lambda w: _search(w, "--latency-ms", "1", "--method", "random"), "argument --method: invalid choice"),
    ("evaluations-zero", lambda w: _search(w, "--latency-ms", "1", "--method", "naswot", "--evaluations", "0"),
     "argument --evaluations: must be >= 1"),
    ("naswot-rerank", lambda w: _search(w, "--latency-ms", "1", "--method", "naswot", "--rerank", "2"),
     "rerank follows the proxyless method"),
    ("rerank-epochs-zero", lambda w: _search(w, "--latency-ms", "1", "--rerank", "2", "--rerank-epochs", "0"),
     "argument --rerank-epochs: must be >= 1"),
    ("train-shards-uneven", lambda w: ["train", "--run", str(w["run"]), "--shards", "5"],
     "a batch of 128 does not split into 5 equal shards"),
    ("resume-other-shards", lambda w: ["search", "--resume", str(w["run"]), "--shards", "2", "--db", str(w["db"])],
     "--shards 2 differs from the resumed run's 1"),
    ("train-resume-other-shards", lambda w: ["train", "--resume", str(w["trained"]), "--shards", "2"],
     "--shards 2 differs from the resumed training's 1"),
    ("goal-below-min", lambda w: _search(w, "--latency-ms", "0.1"), "below the smallest reachable latency"),
    ("goal-nan", lambda w: _search(w, "--latency-ms", "nan"), "argument --latency-ms: must be > 0, not nan"),
    ("goal-inf", lambda w: _search(w, "--latency-ms", "inf"), "argument --latency-ms"),
    ("goal-share-above-1", lambda w: _search(w, "--latency-share", "1.5"),
     "argument --latency-share: must be > 0 and <= 1, not 1.5"),
    ("goal-share-and-ms", lambda w: _search(w, "--latency-share", "0.5", "--latency-ms", "1"),
     "not allowed with argument"),
    ("resume-with-share", lambda w: ["search", "--resume", str(w["run"]), "--latency-share", "0.5", "--db",
                                     str(w["db"])], "--latency-share sets a new search's goal"),
    ("lambda-nan", lambda w: _search(w, "--latency-ms", "1", "--loss-lambda", "nan"), "argument --loss-lambda"),
    ("search-trials", lambda w: _search(w, "--latency-ms", "1", "--tune-trials", "-3"), "argument --tune-trials"),
    ("resume-other-goal", lambda w: ["search", "--resume", str(w["run"]), "--latency-ms", "2.0", "--db", str(w["db"])],
     "differs from the resumed run"),
    ("train-batch", lambda w: ["train", "--run", str(w["run"]), "--batch-size", "0"],
     "argument --batch-size: must be >= 1"),
    ("train-epochs", lambda w: ["train", "--run", str(w["run"]), "--epochs", "-1"], "argument --epochs"),
    ("export-trials", lambda w: ["export", "--run", str(w["run"]), "--target", "x86-cpu", "--db", str(w["db"]),
                                 "--tune-trials", "-1"], "--tune-trials"),
    ("export-measure-zero", lambda w: ["export", "--run", str(w["run"]), "--target", "x86-cpu", "--db", str(w["db"]),
                                       "--measure-s", "0"], "argument --measure-s: must be > 0"),
    ("bench-model-measure-nan", lambda w: ["bench-model", str(w["tmp"] / "m.onnx"), "--target", "x86-cpu", "--db",
                                           str(w["db"]), "--measure-s", "nan"], "argument --measure-s"),
    ("export-no-network", lambda w: ["export", "--network", str(w["tmp"] / "none.pt"), "--target", "x86-cpu", "--db",
                                     str(w["db"])], "no network file"),
    ("bench-model-trials", lambda w: ["bench-model", str(w["tmp"] / "m.onnx"), "--target", "x86-cpu", "--db",
                                      str(w["db"]), "--tune-trials", "-2"], "--tune-trials"),
    ("bench-model-zero-dim", lambda w: ["bench-model", str(w["tmp"] / "m.onnx"), "--target", "x86-cpu",
                                        "--input-shape", "1x0x8x8"], "argument --input-shape: must look like"),
    ("onnx-two-inputs", lambda w: ["bench-model", onnx_file(w["tmp"], "two-inputs"), "--target", "x86-cpu", "--db",
                                   str(w["db"]), "--tune-trials", "0"], "models with one input; this one has 2"),
    ("onnx-unknown-op", lambda w: ["bench-model", onnx_file(w["tmp"], "unknown-op"), "--target", "x86-cpu", "--db",
                                   str(w["db"]), "--tune-trials", "0"], "not supported for frontend ONNX: FooBarOp"),
    ("db-export-suffix", lambda w: ["db-export", str(w["tmp"] / "rows.txt"), "--db", str(w["db"])],
     "use a .json or .csv"),
    # values beyond what a machine has or a run can use
    ("workers-beyond-the-cores", lambda w: _search(w, "--latency-ms", "1", "--workers", "100000"),
     "argument --workers: must be <= "),
    ("timeout-beyond-a-day", lambda w: _profile(w, "--target", "x86-cpu", "--rpc", "127.0.0.1:1", "--rpc-timeout",
                                                "1e308"), "argument --rpc-timeout: must be > 0 and <= 86400"),
    ("pareto-points", lambda w: ["pareto", "--run", str(w["run"]), "--db", str(w["db"]), "--points", "1000000000"],
     "argument --points: must be <= 1000"),
    ("board-count", lambda w: ["board", "up", "--emulated", "aarch64", "--count", "100000", "--rootfs",
                               str(w["tmp"] / "rootfs")], "argument --count: must be <= "),
    ("bench-model-input-beyond-memory",
     lambda w: ["bench-model", onnx_file(w["tmp"], "relu"), "--target", "x86-cpu", "--db", str(w["db"]),
                "--tune-trials", "0", "--input-shape", "1x3x100000x100000"], "of this machine's"),
    # files of the wrong kind
    ("arch-not-text", lambda w: ["train", "--arch", binary_file(w["tmp"], "arch.json")],
     "malformed architecture file"),
    ("network-not-torch", lambda w: ["export", "--network", str(w["space"]), "--target", "x86-cpu", "--db",
                                     str(w["db"])], "not a file PyTorch saved"),
    # output paths that cannot be written: refused before anything is read, made or measured
    ("db-export-under-a-file", lambda w: ["db-export", str(w["db"] / "rows.csv"), "--db", str(w["db"])],
     "is a file, not a folder"),
    ("db-export-to-a-folder", lambda w: ["db-export", str(w["run"]), "--db", str(w["db"])], "is a folder, not a file"),
    ("search-out-is-a-file", lambda w: ["search", "--space", str(w["space"]), "--target", "x86-cpu", "--db",
                                        str(w["db"]), "--latency-ms", "1", "--out", str(w["db"])],
     "argument --out: " + "{db} is a file, not a folder"),
    ("train-out-under-a-file", lambda w: ["train", "--run", str(w["run"]), "--out", str(w["db"] / "train")],
     "argument --out: cannot create"),
    ("derive-out-under-a-file", lambda w: ["derive", "--run", str(w["run"]), "--latency-ms", "1", "--out",
                                           str(w["db"] / "d")], "argument --out: cannot create"),
    ("export-out-is-a-file", lambda w: ["export", "--run", str(w["run"]), "--target", "x86-cpu", "--db", str(w["db"]),
                                        "--out", str(w["db"])], "argument --out: "),
    ("bench-model-json-is-a-folder", lambda w: ["bench-model", str(w["tmp"] / "m.onnx"), "--target", "x86-cpu",
                                                "--json", str(w["run"])], "argument --json: "),
    ("bench-kernels-out-under-a-file", lambda w: ["bench-kernels", "--target", "x86-cpu", "--space", str(w["space"]),
                                                  "--db", str(w["db"]), "--out", str(w["db"] / "k")],
     "argument --out: cannot create"),
]


@pytest.mark.parametrize("argv_of, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_touches_nothing(workspace, capsys, argv_of, fragment):
    before = tree_digest(workspace["db"].parent, workspace["run"])
    argv = argv_of(workspace)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    fragment = fragment.format(db=workspace["db"])
    assert len(err.splitlines()) == 1 and err.startswith("tvmnas: error: ") and fragment in err, (argv, err)
    assert tree_digest(workspace["db"].parent, workspace["run"]) == before
    assert not (workspace["tmp"] / "r2").exists()


def test_a_network_file_whose_pickle_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    """Network files load with torch.load(weights_only=True): a pickle that calls a function when loaded (here
    builtins.exec, writing a marker file) is refused in one line, and the function never runs."""
    import torch

    from tvmnas.cli import main

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    evil = tmp_path / "network.pt"
    torch.save({"format": "tvmnas-network", "version": 1, "space": Payload()}, evil)
    code = main(["export", "--network", str(evil), "--target", "x86-cpu", "--db", str(tmp_path / "lat.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tvmnas: error: cannot read network file") and "\n" not in err, err
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the same file does run code when loaded without weights_only
    assert marker.read_text() == "ran"
