"""A real `profile`, `search` and `train`, each killed with SIGKILL at a point the code names (a failpoint, see
`tvmnas.failpoints`) and run again: nothing already measured, tuned or trained is lost, every file still opens,
and a resumed run ends where an uninterrupted one does."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tvmnas.arch import Arch, save_arch
from tvmnas.failpoints import ENV
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.tuning_records import RECORDS

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS

pytestmark = pytest.mark.fault


def tvmnas(*argv, stop_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **({ENV: stop_at} if stop_at else {}))
    return subprocess.Popen([sys.executable, "-m", "tvmnas.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def finish(*argv) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, argv)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_profile_killed_while_tuning_loses_nothing(tmp_path):
    small = json.loads((DATA / "tiny-space.json").read_text())  # one choice a layer: few kernels to tune
    small.update(name="tiny-one", candidates={"kernels": [3], "expands": [1], "zero": False})
    space, db = tmp_path / "tiny-one.json", tmp_path / "lat.db"
    space.write_text(json.dumps(small))
    base = ["profile", "--space", space, "--target", "x86-cpu", "--db", db]
    finish(*base, "--tune-trials", "0")
    with LatencyDB(db) as opened:
        measured = opened.rows()

    helpers.kill_at_stop_point(tvmnas(*base, "--tune-trials", "2", stop_at="tune-trials-saved"))
    with LatencyDB(db) as opened:  # still opens, and every row measured before is there as it was
        assert opened.rows() == measured
    records = next((tmp_path / "tuning").rglob(RECORDS))
    tuned_before = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert tuned_before  # the records committed before the kill were kept

    finish(*base, "--tune-trials", "2")
    tuned_after = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert tuned_after[:len(tuned_before)] == tuned_before  # appended to, not redone
    with LatencyDB(db) as opened:
        assert {r.level for r in opened.rows() if r.ok and r.block_key.startswith("mb_")} == {"default", "tuned-2"}


def epochs(log_path) -> list[dict]:
    """The log's entries without their wall-clock seconds."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in log_path.read_text().splitlines()]


def test_search_killed_after_an_epoch_resumes_to_the_same_run(tmp_path, tiny_space, tiny_idx_dir):
    db = tmp_path / "lat.db"
    helpers.fill_db(db, tiny_space, LATENCY_MS)
    args = ["search", "--space", DATA / "tiny-space.json", "--target", "x86-cpu", "--db", db, "--latency-ms", "1.0",
            "--data", tiny_idx_dir, "--batch-size", "16", "--epochs", "4", "--warmup-epochs", "1"]
    finish(*args, "--out", tmp_path / "whole")
    cut = tmp_path / "cut"
    helpers.kill_at_stop_point(tvmnas(*args, "--out", cut, stop_at="search-epoch-saved:2"))
    assert len(epochs(cut / "log.jsonl")) == 2 and not (cut / "arch.json").exists()
    finish("search", "--resume", cut, "--db", db)
    assert epochs(cut / "log.jsonl") == epochs(tmp_path / "whole" / "log.jsonl")
    for name in ("arch.json", "probabilities.json"):
        assert (cut / name).read_text() == (tmp_path / "whole" / name).read_text()


def test_train_killed_after_an_epoch_resumes_to_the_same_network(tmp_path, tiny_idx_dir, monkeypatch):
    spaces = tmp_path / "spaces"  # the tiny space by its name, in the processes started here
    spaces.mkdir()
    (spaces / "tiny.json").write_text((DATA / "tiny-space.json").read_text())
    monkeypatch.setenv("TVMNAS_SPACE_PATH", str(spaces))
    arch = tmp_path / "arch.json"
    save_arch(Arch("tiny", ("mb_k3_e2", "zero")), arch)
    args = ["train", "--arch", arch, "--data", tiny_idx_dir, "--batch-size", "16", "--epochs", "3"]
    finish(*args, "--out", tmp_path / "whole")
    cut = tmp_path / "cut"
    helpers.kill_at_stop_point(tvmnas(*args, "--out", cut, stop_at="train-epoch-saved:1"))
    assert len(epochs(cut / "log.jsonl")) == 1 and not (cut / "summary.json").exists()
    finish("train", "--resume", cut)
    assert epochs(cut / "log.jsonl") == epochs(tmp_path / "whole" / "log.jsonl")
    whole = torch.load(tmp_path / "whole" / "network.pt", weights_only=True)
    resumed = torch.load(cut / "network.pt", weights_only=True)
    assert whole.keys() == resumed.keys()
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name


def test_export_killed_leaves_the_bundle_before_it_as_it_was(tmp_path):
    from tests.deploy.conftest import save_tiny_network

    network = save_tiny_network(tmp_path / "network.pt", ("mb_k3_e2", "mb_k3_e1"), {"test_acc": 0.5})
    bundle = tmp_path / "bundle"
    args = ["export", "--network", network, "--target", "x86-cpu", "--tune-trials", "0", "--db", tmp_path / "lat.db",
            "--out", bundle]
    helpers.kill_at_stop_point(tvmnas(*args, stop_at="export-bundle-written"))
    assert not bundle.exists()  # killed before the complete bundle took its place: nothing that looks complete
    finish(*args)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    helpers.kill_at_stop_point(tvmnas(*args, stop_at="export-bundle-written"))
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # the earlier bundle, untouched
    finish(*args)
    assert not list(tmp_path.glob(".bundle.partial-*"))  # the next export cleared what the kill left
    assert json.loads((bundle / "manifest.json").read_text())["arch"] == ["mb_k3_e2", "mb_k3_e1"]
