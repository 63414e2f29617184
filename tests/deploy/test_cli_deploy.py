"""search -> train -> export -> report through the command line on the tiny space, and the bad inputs."""

import json

import pytest

from tests.search.test_cli_search import fill_db
from tvmnas.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_pipeline_end_to_end(capsys, tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    db, out = tmp_path / "lat.db", tmp_path / "run"
    fill_db(db, tiny_space)
    code, _, err = run(capsys, "search", "--space", tiny_space_path, "--target", "x86-cpu", "--db", db,
                       "--latency-ms", "1.0", "--data", tiny_idx_dir, "--batch-size", "16", "--epochs", "2",
                       "--out", out)
    assert code == 0, err
    code, stdout, err = run(capsys, "train", "--run", out, "--epochs", "1", "--batch-size", "16",
                            "--init", "supernet")
    assert code == 0, err
    assert "test accuracy" in stdout and (out / "train" / "network.pt").exists()
    code, stdout, err = run(capsys, "export", "--run", out, "--target", "x86-cpu", "--db", db,
                            "--tune-trials", "0", "--measure-s", "3")
    assert code == 0, err
    manifest = json.loads((out / "bundle-x86-cpu" / "manifest.json").read_text())
    assert manifest["latency"]["protocol"]["min_span_s"] == 3 and manifest["latency"]["seconds"] >= 3
    assert manifest["arch"] == json.loads((out / "arch.json").read_text())["ops"]
    assert manifest["accuracy"]["test"] == json.loads((out / "train" / "summary.json").read_text())["test_acc"]
    code, stdout, err = run(capsys, "report", "--run", out)
    assert code == 0, err
    assert "blocks:" in stdout and "test accuracy" in stdout and "measured" in stdout
    assert f"tvmnas-run {out / 'bundle-x86-cpu'}" in stdout


def test_arch_that_does_not_fit_its_space(capsys, write_json):
    arch = write_json("arch.json", {"schema_version": 1, "space": "fashion-mnist", "ops": ["zero"]})
    code, _, err = run(capsys, "train", "--arch", arch)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("tvmnas: error: ") and "6" in err


@pytest.mark.parametrize("argv, message", [
    (["export", "--network", "nowhere.pt", "--target", "x86-cpu"], "no network file at nowhere.pt"),
    (["train", "--arch", "nowhere.json"], "cannot read architecture file nowhere.json"),
    (["bench-model", "m.onnx", "--target", "x86-cpu", "--input-shape", "1xax3"], "--input-shape: must look like"),
    (["report", "--run", "nowhere"], "nowhere holds no finished search"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_unfinished_run_is_refused(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"space": "fashion-mnist"}))
    code, _, err = run(capsys, "train", "--run", run_dir)
    assert code == 2 and len(err.splitlines()) == 1 and "has no arch.json: the search has not finished" in err
    code, _, err = run(capsys, "export", "--run", run_dir, "--target", "x86-cpu")
    assert code == 2 and len(err.splitlines()) == 1 and "has no trained network" in err


def test_supernet_init_needs_a_run(capsys, write_json):
    arch = write_json("arch.json", {"schema_version": 1, "space": "fashion-mnist", "ops": ["mb_k3_e3"] * 6})
    code, _, err = run(capsys, "train", "--arch", arch, "--init", "supernet")
    assert code == 2 and len(err.splitlines()) == 1 and "--init supernet needs --run" in err


def test_bench_model_dynamic_input_needs_a_shape(capsys, tmp_path):
    from tests.measure.test_model_bench import small_onnx

    code, _, err = run(capsys, "bench-model", small_onnx(tmp_path / "m.onnx", dynamic=True), "--target", "x86-cpu",
                       "--db", tmp_path / "lat.db")
    assert code == 2 and len(err.splitlines()) == 1 and "dynamic dims: give --input-shape" in err
