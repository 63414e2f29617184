"""Export a trained network to a bundle and run it with the native runner (built here with CMake)."""

import json
import subprocess

import numpy as np
import onnx
import pytest
import torch

from tvmnas.deploy.bundle import read_manifest
from tvmnas.deploy.export import ExportSettings, export_bundle
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.search.latency import Prediction
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network

from tests.deploy.conftest import save_tiny_network
from tests.helpers import FAST


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    save_tiny_network(tmp / "network.pt", ("mb_k3_e2", "mb_k3_e1"), {"classes": ["a", "b", "c"], "test_acc": 0.5})
    sample = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    manifest = export_bundle(load_network(tmp / "network.pt"), tmp / "network.pt", load_target("x86-cpu"),
                             LocalRunner(), tmp / "tuning", tmp / "bundle", ExportSettings(tune_trials=0, protocol=FAST),
                             sample, Prediction(0.123, 0.01), anchor_ms=None)
    with torch.no_grad():
        logits = load_network(tmp / "network.pt").net(torch.from_numpy(sample)).numpy()
    return tmp / "bundle", manifest, logits


def test_bundle_contents(bundle):
    folder, manifest, _ = bundle
    assert read_manifest(folder) == manifest
    assert set(manifest["files"]) == {"model.so", "model.onnx", "network.pt", "sample_input.npy", "reference.so"}
    onnx.checker.check_model(onnx.load(str(folder / "model.onnx")))
    assert manifest["input"]["shape"] == [1, 1, 8, 8] and manifest["classes"] == ["a", "b", "c"]
    assert manifest["level"] == "default" and manifest["threads"] >= 1
    latency = manifest["latency"]
    assert latency["predicted_ms"] == 0.123 and latency["predicted_dispersion"] == 0.01
    assert latency["measured_ms"] > 0 and latency["protocol"] == FAST.to_json()
    assert latency["windows"] >= 1 and latency["windows"] + latency["dropped_windows"] >= FAST.windows
    assert latency["speed"] == 1.0 and latency["measured_raw_ms"] == latency["measured_ms"]  # no anchor yet
    want = (latency["measured_ms"] - 0.123) / 0.123
    assert latency["agreement"]["error"] == pytest.approx(want)
    assert latency["agreement"]["within_band"] == (abs(want) <= latency["agreement"]["band"])
    assert manifest["checks"]["tvm_max_abs_diff"] < 1e-3 and manifest["checks"]["onnx_max_abs_diff"] < 1e-3
    assert manifest["accuracy"]["test"] == 0.5


def run_native(runner, *args):
    return subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True)


def test_native_runner_matches_pytorch(bundle, native_runner):
    folder, _, logits = bundle
    proc = run_native(native_runner, folder, folder / "sample_input.npy", "--span-s", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["top_class"] == int(np.argmax(logits))
    assert result["top_name"] == "abc"[result["top_class"]]
    assert result["score"] == pytest.approx(float(logits.max()), rel=1e-3, abs=1e-3)
    # the bundle's protocol (3 windows) with the span given here; no anchor: speed 1
    assert result["latency_ms"] > 0 and result["windows"] + result["dropped_windows"] >= 3
    assert result["seconds"] >= 0.5 and result["speed"] == 1.0 and result["latency_ms"] == result["raw_ms"]


@pytest.fixture(scope="module")
def scaled_bundle(tmp_path_factory):
    """A bundle exported where the database holds the space's network anchor: timed beside its reference network."""
    tmp = tmp_path_factory.mktemp("export-scaled")
    save_tiny_network(tmp / "network.pt", ("mb_k3_e2", "zero"), {"classes": ["a", "b", "c"]})
    manifest = export_bundle(load_network(tmp / "network.pt"), tmp / "network.pt", load_target("x86-cpu"),
                             LocalRunner(), tmp / "tuning", tmp / "bundle",
                             ExportSettings(tune_trials=0, protocol=FAST), anchor_ms=None, network_anchor_ms=0.5)
    return tmp / "bundle", manifest


def test_a_network_anchor_scales_by_the_reference_network(scaled_bundle, bundle):
    folder, manifest = scaled_bundle
    assert set(manifest["files"]) == set(bundle[1]["files"]) | {"reference_network.so"}
    latency = manifest["latency"]
    network = latency["reference"]["network"]
    assert network["file"] == "reference_network.so" and network["input_shape"] == [1, 1, 8, 8]
    assert network["anchor_ms"] == 0.5 and network["this_run_ms"] > 0
    assert latency["speed"] == pytest.approx(network["this_run_ms"] / 0.5)
    assert latency["measured_ms"] == pytest.approx(latency["measured_raw_ms"] * 0.5 / network["this_run_ms"])


def test_native_runner_scales_by_the_bundles_reference_network(scaled_bundle, native_runner):
    folder, _ = scaled_bundle
    proc = run_native(native_runner, folder, folder / "sample_input.npy", "--span-s", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # no kernel anchor: without the reference network the speed would be exactly 1
    assert result["speed"] != 1.0  # printed to 4 decimals
    assert result["latency_ms"] == pytest.approx(result["raw_ms"] / result["speed"], rel=0.02)


def test_native_runner_refuses_bad_input(bundle, native_runner, tmp_path):
    folder, _, _ = bundle
    np.save(tmp_path / "wrong.npy", np.zeros((1, 8, 8), dtype=np.float32))
    proc = run_native(native_runner, folder, tmp_path / "wrong.npy")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"tvmnas-run: error: input {tmp_path / 'wrong.npy'} has shape 1x8x8, "
                                   "the model expects 1x1x8x8")
    np.save(tmp_path / "ints.npy", np.zeros((1, 1, 8, 8), dtype=np.int64))
    proc = run_native(native_runner, folder, tmp_path / "ints.npy")
    assert proc.returncode == 2 and "float32" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_native_runner_refuses_altered_bundle(bundle, native_runner, tmp_path):
    folder, _, _ = bundle
    copy = tmp_path / "bundle"
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    proc = run_native(native_runner, copy, copy / "sample_input.npy")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "model.onnx does not match its sha256" in proc.stderr
    other = tmp_path / "other"
    subprocess.run(["cp", "-r", str(folder), str(other)], check=True)
    (other / "model.so").unlink()
    proc = run_native(native_runner, other, other / "sample_input.npy")
    assert proc.returncode == 2 and "model.so is missing" in proc.stderr


@pytest.mark.parametrize("case, fragment", [
    ("truncated-header", "has a truncated .npy header"),
    ("truncated-data", "holds fewer values than its shape says"),
    ("malformed-header", "must hold float32"),
    ("bad-manifest", "manifest.json is not valid JSON"),
    ("windows-0", "--windows needs a number >= 1"),
])
def test_native_runner_refuses_each_bad_input_in_one_line(bundle, native_runner, tmp_path, case, fragment):
    folder, _, _ = bundle
    sample = (folder / "sample_input.npy").read_bytes()
    bundle_dir, data, extra = folder, tmp_path / "input.npy", []
    if case == "truncated-header":
        data.write_bytes(sample[:20])
    elif case == "truncated-data":
        data.write_bytes(sample[:-8])
    elif case == "malformed-header":
        data.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{garbage}      \n")
    else:
        data.write_bytes(sample)
    if case == "bad-manifest":
        bundle_dir = tmp_path / "bundle"
        subprocess.run(["cp", "-r", str(folder), str(bundle_dir)], check=True)
        (bundle_dir / "manifest.json").write_text("{not json")
    if case == "windows-0":
        extra = ["--windows", "0"]
    proc = run_native(native_runner, bundle_dir, data, *extra)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("tvmnas-run: error: ") and fragment in proc.stderr, proc.stderr


def test_compile_only_export_from_the_cli_runs_on_the_device(native_runner, tmp_path, capsys):
    """`export --compile-only` (no device here): a bundle at TVM's default schedules, neither timed nor stored in
    the database, that the native runner then runs with the answer PyTorch gives."""
    from tvmnas.cli import main

    network = save_tiny_network(tmp_path / "network.pt", ("mb_k3_e1", "mb_k3_e2"), {"classes": ["a", "b", "c"]})
    db, out = tmp_path / "cache" / "lat.db", tmp_path / "bundle"
    code = main(["export", "--network", str(network), "--target", "x86-cpu", "--compile-only", "--db", str(db),
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "not run" in stdout and f"tvmnas-run {out}" in stdout
    manifest = read_manifest(out)
    assert manifest["level"] == "default" and manifest["latency"]["measured_ms"] is None
    assert not db.exists()  # nothing was measured, so nothing was stored
    proc = run_native(native_runner, out, out / manifest["sample_input"], "--span-s", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        logits = load_network(network).net(torch.from_numpy(np.load(out / manifest["sample_input"]))).numpy()
    assert json.loads(proc.stdout)["top_class"] == int(np.argmax(logits)) == manifest["expected_output"]["top_class"]


def test_the_report_says_whether_measured_and_predicted_agree_within_the_noise_band():
    from tvmnas.deploy.report import agreement_text

    assert agreement_text({"within_band": True, "error": 0.02, "band": 0.05}) == (
        "measured +2.0% from predicted, agree within the noise band +/-5.0%")
    assert agreement_text({"within_band": False, "error": -0.049, "band": 0.02}) == (
        "measured -4.9% from predicted, disagree: outside the noise band +/-2.0%")
