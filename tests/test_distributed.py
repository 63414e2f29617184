"""Searching and training in several processes (torch.distributed, gloo on CPU), launched as users do: torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvmnas.data.loading import epoch_batches
from tvmnas.dist import World
from tvmnas.failpoints import ENV
from tvmnas.procs import free_port

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS

def torchrun(n: int, *argv, background: bool = False, env: dict | None = None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
           str(free_port()), "-m", "tvmnas.cli", *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def search_args(tmp_path, tiny_space, tiny_idx_dir):
    db = tmp_path / "lat.db"
    helpers.fill_db(db, tiny_space, LATENCY_MS)
    return ["search", "--space", DATA / "tiny-space.json", "--target", "x86-cpu", "--db", db, "--latency-ms", "1.2",
            "--data", tiny_idx_dir, "--batch-size", "16", "--warmup-epochs", "1", "--device", "cpu"]


def alphas(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["supernet"]
    return torch.cat([v for k, v in sorted(state.items()) if k.endswith("alpha")])


def test_shards_cover_each_global_batch_once():
    for size in (1, 2, 4):
        shards = [epoch_batches(100, 16, None, np.random.default_rng(0), World(rank, size)) for rank in range(size)]
        one = epoch_batches(100, 16, None, np.random.default_rng(0), World())
        for step, whole in enumerate(one[:-1]):  # every full global batch, split without overlap
            parts = np.concatenate([shards[r][step] for r in range(size)])
            assert sorted(parts) == sorted(whole) and len(set(parts)) == len(parts)
        seen = np.concatenate([b for rank in shards for b in rank])
        assert len(set(seen)) == len(seen)  # no image twice in an epoch across ranks


def weights(run_dir, key="supernet"):
    """The learned tensors of a checkpoint (not the BatchNorm running statistics: those are measured again for
    evaluation, on each process's threads)."""
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)[key]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def test_two_processes_compute_what_one_does_and_only_rank_0_writes(search_args, tmp_path):
    # one process with 2 threads and 2 shards per batch; two processes (one thread each) take 2 shards by default
    one = subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, search_args), "--epochs", "2", "--shards",
                          "2", "--out", tmp_path / "one"], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *search_args, "--epochs", "2", "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    one_w, two_w = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one_w.keys() == two_w.keys() and all(torch.equal(one_w[k], two_w[k]) for k in one_w)  # bit for bit
    arch = [json.loads((tmp_path / r / "arch.json").read_text())["ops"] for r in ("one", "two")]
    assert arch[0] == arch[1]
    # one process wrote: one log line per epoch, one summary line printed
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2
    assert two.stdout.count("architecture:") == 1 and "2 process(es) on cpu" in two.stdout


def test_resume_under_two_processes(search_args, tmp_path):
    whole = torchrun(2, *search_args, "--epochs", "4", "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    cut = torchrun(2, *search_args, "--epochs", "4", "--out", tmp_path / "cut", background=True,
                   env={ENV: "search-epoch-saved:2"})
    helpers.kill_at_stop_point(cut)  # rank 0 stopped after writing epoch 2; every process is killed there
    log = tmp_path / "cut" / "log.jsonl"
    assert len(log.read_text().splitlines()) == 2
    resumed = torchrun(2, "search", "--resume", tmp_path / "cut", "--db", search_args[search_args.index("--db") + 1],
                       "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.equal(alphas(tmp_path / "whole"), alphas(tmp_path / "cut"))  # as if never interrupted
    assert len(log.read_text().splitlines()) == 4


def test_ranks_with_other_settings_are_refused_in_one_line(search_args, tmp_path):
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1")
        argv = [*map(str, search_args), "--epochs", "2", "--out", str(tmp_path / "run"), "--seed", str(rank)]
        procs.append(subprocess.Popen([sys.executable, "-m", "tvmnas.cli", *argv], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "the search settings of rank 1 differ from rank 0's (seed)" in lines[0], err
    assert not (tmp_path / "run").exists()


def test_shards_that_do_not_split_over_the_processes_are_refused_before_anything_is_written(search_args, tmp_path):
    proc = torchrun(2, *search_args, "--shards", "1", "--out", tmp_path / "run")
    assert proc.returncode != 0
    assert "1 shard(s) per batch do not split over 2 processes" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_world_without_rendezvous_is_one_line(search_args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, search_args), "--out", tmp_path / "r"],
                          env={**env, "WORLD_SIZE": "2", "RANK": "0"}, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("tvmnas: error: WORLD_SIZE is 2 but")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_training_in_two_processes(tmp_path, tiny_idx_dir, monkeypatch):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "tiny.json").write_text((DATA / "tiny-space.json").read_text())
    monkeypatch.setenv("TVMNAS_SPACE_PATH", str(tmp_path / "spaces"))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"schema_version": 1, "space": "tiny", "ops": ["mb_k3_e2", "mb_k3_e1"]}))
    args = ["train", "--arch", arch, "--data", tiny_idx_dir, "--epochs", "2", "--batch-size", "16", "--device", "cpu"]
    two = torchrun(2, *args, "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["test_acc"] is not None
    one = subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, args), "--shards", "2", "--out",
                          tmp_path / "one"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    one_w, two_w = weights(tmp_path / "one", "network"), weights(tmp_path / "two", "network")
    assert one_w.keys() == two_w.keys() and all(torch.equal(one_w[k], two_w[k]) for k in one_w)  # bit for bit
    assert json.loads((tmp_path / "two" / "settings.json").read_text())["shards"] == 2


def test_a_world_on_a_gpu_asks_for_deterministic_kernels_and_keeps_a_users_cublas_setting():
    code = ("import os, torch; from tvmnas.dist import World; World(device=torch.device('cpu')); "
            "print(torch.are_deterministic_algorithms_enabled(), end=' '); World(device=torch.device('cuda')); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
            " torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,"
            " os.environ['CUBLAS_WORKSPACE_CONFIG'])")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert fresh.stdout.split() == ["False", "True", "True", "True", "False", ":4096:8"], fresh.stderr
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "CUBLAS_WORKSPACE_CONFIG": ":16:8"})
    assert kept.stdout.split()[-1] == ":16:8", kept.stderr
