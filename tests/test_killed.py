"""A real `profile` and a real `search`, each killed with SIGKILL in the middle and run again: nothing already
measured, tuned or trained is lost, and every file still opens."""

import json
import os
import signal
import subprocess
import sys
import time

from tvmnas.latency_db import LatencyDB
from tvmnas.measure.tuning import RECORDS

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS


def tvmnas(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tvmnas.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "never reached the point to kill at"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_profile_killed_while_tuning_loses_nothing(tmp_path):
    space, db = DATA / "tiny-space.json", tmp_path / "lat.db"
    base = ["profile", "--space", space, "--target", "x86-cpu", "--db", db]
    assert subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, base), "--tune-trials", "0"],
                          capture_output=True).returncode == 0
    with LatencyDB(db) as opened:
        measured = opened.rows()
    records = next((tmp_path / "tuning").glob("x86-cpu-*"), tmp_path / "none") / RECORDS

    proc = tvmnas(*base, "--tune-trials", "2")
    kill_when(proc, lambda: any(p.stat().st_size > 0 for p in (tmp_path / "tuning").rglob(RECORDS)))
    with LatencyDB(db) as opened:  # still opens, and every row measured before is there as it was
        assert opened.rows() == measured
    records = next((tmp_path / "tuning").rglob(RECORDS))
    tuned_before = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert tuned_before  # records of the kill's tuning were kept

    done = subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, base), "--tune-trials", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tuned_after = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    assert tuned_after[:len(tuned_before)] == tuned_before  # appended to, not redone
    with LatencyDB(db) as opened:
        assert {r.level for r in opened.rows() if r.ok and r.block_key.startswith("mb_")} == {"default", "tuned-2"}


def test_search_killed_after_an_epoch_resumes_without_losing_it(tmp_path, tiny_space, tiny_idx_dir):
    db, run = tmp_path / "lat.db", tmp_path / "run"
    helpers.fill_db(db, tiny_space, LATENCY_MS)
    proc = tvmnas("search", "--space", DATA / "tiny-space.json", "--target", "x86-cpu", "--db", db, "--latency-ms",
                  "1.0", "--data", tiny_idx_dir, "--batch-size", "16", "--epochs", "6", "--warmup-epochs", "1",
                  "--out", run)
    log = run / "log.jsonl"
    kill_when(proc, lambda: log.exists() and len(log.read_text().splitlines()) >= 2)
    first = log.read_text().splitlines()
    done = subprocess.run([sys.executable, "-m", "tvmnas.cli", "search", "--resume", str(run), "--db", str(db)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 6 and lines[:len(first) - 1] == first[:len(first) - 1]  # the epochs done before stay
    assert (run / "arch.json").exists() and (run / "summary.json").exists()
