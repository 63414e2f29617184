"""CUDA bundles compile here (GPU code by nvcc, kept in the bundle); running them needs a GPU."""

import json
import shutil
import subprocess

import pytest

from tests.deploy.conftest import save_tiny_network
from tvmnas.deploy.bundle import read_manifest
from tvmnas.deploy.export import ExportSettings, export_bundle
from tvmnas.errors import TvmnasError
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network

FATBIN_MAGIC = bytes.fromhex("50ed55ba")  # 0xBA55ED50, little-endian

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


@pytest.fixture(scope="module")
def cuda_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda")
    save_tiny_network(tmp / "network.pt", ("mb_k3_e2", "zero"), {"classes": ["a", "b", "c"]})
    manifest = export_bundle(load_network(tmp / "network.pt"), tmp / "network.pt", load_target("cuda-sm90"), None,
                             tmp / "tuning", tmp / "bundle", ExportSettings(tune_trials=0))
    return tmp / "bundle", manifest


def test_compile_only_export_holds_gpu_code(cuda_bundle):
    folder, manifest = cuda_bundle
    assert read_manifest(folder) == manifest
    assert manifest["device"] == "cuda" and manifest["level"] == "default" and manifest["threads"] == 0
    assert manifest["latency"]["measured_ms"] is None and manifest["checks"]["tvm_max_abs_diff"] is None
    binaries = manifest["gpu_binaries"]  # the model's GPU code and the reference module's
    assert [b.split(".")[0] for b in binaries] == ["model", "reference"] and set(binaries) <= set(manifest["files"])
    assert all((folder / b).read_bytes()[:4] == FATBIN_MAGIC for b in binaries)


def test_tuning_needs_a_device(tmp_path, cuda_bundle):
    folder, _ = cuda_bundle
    with pytest.raises(TvmnasError, match="tuning needs the target's device"):
        export_bundle(load_network(folder / "network.pt"), folder / "network.pt", load_target("cuda-sm90"), None,
                      tmp_path / "tuning", tmp_path / "b", ExportSettings(tune_trials=2))


def test_native_runner_on_cuda_bundle(cuda_bundle, native_runner):
    folder, manifest = cuda_bundle
    proc = subprocess.run([str(native_runner), str(folder), str(folder / "sample_input.npy"), "--windows", "5",
                           "--span-s", "1", "--json"], capture_output=True, text=True)
    if shutil.which("nvidia-smi") is None:  # no GPU: a clear refusal, not a crash
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
        assert "cannot load the TVM CUDA runtime" in proc.stderr
        pytest.skip("no GPU here: the CUDA bundle was compiled but not run")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top_class"] == manifest["expected_output"]["top_class"]
