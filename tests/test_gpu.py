"""The search and the training on a CUDA GPU (bfloat16 autocast); skipped, with the reason, where PyTorch sees no
GPU."""

import json
import subprocess
import sys

import pytest
import torch

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU on this machine")


def test_search_and_train_on_the_gpu(tmp_path, tiny_space, tiny_idx_dir):
    db = tmp_path / "lat.db"
    helpers.fill_db(db, tiny_space, LATENCY_MS)
    run = tmp_path / "run"
    search = subprocess.run([sys.executable, "-m", "tvmnas.cli", "search", "--space", str(DATA / "tiny-space.json"),
                             "--target", "x86-cpu", "--db", str(db), "--latency-ms", "1.2", "--data",
                             str(tiny_idx_dir), "--batch-size", "16", "--epochs", "2", "--device", "cuda", "--amp",
                             "--out", str(run)], capture_output=True, text=True)
    assert search.returncode == 0, search.stderr
    assert "on cuda" in search.stdout
    train = subprocess.run([sys.executable, "-m", "tvmnas.cli", "train", "--run", str(run), "--epochs", "1",
                            "--batch-size", "16", "--device", "cuda"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert json.loads((run / "train" / "summary.json").read_text())["test_acc"] is not None
