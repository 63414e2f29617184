"""The search and the training on a CUDA GPU (bfloat16 autocast), and the same search twice giving the same
result; skipped, with the reason, where PyTorch sees no GPU."""

import json
import subprocess
import sys

import pytest
import torch

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU on this machine")


def search_on_the_gpu(tmp_path, tiny_space, tiny_idx_dir, run, *extra) -> subprocess.CompletedProcess:
    db = tmp_path / "lat.db"
    if not db.exists():
        helpers.fill_db(db, tiny_space, LATENCY_MS)
    return subprocess.run([sys.executable, "-m", "tvmnas.cli", "search", "--space", str(DATA / "tiny-space.json"),
                           "--target", "x86-cpu", "--db", str(db), "--latency-ms", "1.2", "--data",
                           str(tiny_idx_dir), "--batch-size", "16", "--epochs", "2", "--device", "cuda",
                           "--out", str(run), *extra], capture_output=True, text=True)


def test_the_same_search_twice_on_the_gpu_ends_with_the_same_alphas_bit_for_bit(tmp_path, tiny_space, tiny_idx_dir):
    alphas = []
    for name in ("first", "second"):
        proc = search_on_the_gpu(tmp_path, tiny_space, tiny_idx_dir, tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["supernet"]
        alphas.append({k: v for k, v in state.items() if k.endswith("alpha")})
    assert alphas[0].keys() == alphas[1].keys() and alphas[0]
    assert all(torch.equal(alphas[0][k], alphas[1][k]) for k in alphas[0])


def test_search_and_train_on_the_gpu(tmp_path, tiny_space, tiny_idx_dir):
    run = tmp_path / "run"
    search = search_on_the_gpu(tmp_path, tiny_space, tiny_idx_dir, run, "--amp")
    assert search.returncode == 0, search.stderr
    assert "on cuda" in search.stdout
    train = subprocess.run([sys.executable, "-m", "tvmnas.cli", "train", "--run", str(run), "--epochs", "1",
                            "--batch-size", "16", "--device", "cuda"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert json.loads((run / "train" / "summary.json").read_text())["test_acc"] is not None
