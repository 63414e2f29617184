"""Integration tier, on the two emulated aarch64 boards of `conftest.py`: profiling survives a board killed while
it holds a job, an ARM bundle exported through the tracker runs on a board with the cross-built native runner, and
`board down` leaves nothing running."""

import json
import subprocess

import pytest

from tests.deploy.conftest import REPO, save_tiny_network
from tests.helpers import FAST
from tests.loopback import fault_on_first_job
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.farm import FarmPolicy
from tvmnas.measure.protocol import Protocol
from tvmnas.measure.runner.rpc import RpcRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.profile import ProfileSettings, profile_candidates
from tvmnas.targets import load_target

pytestmark = pytest.mark.integration
SLOW_JOBS = ProfileSettings(protocol=FAST, farm_protocol=Protocol(windows=3, samples_per_window=2, sample_ms=0.5,
                                                                   warmup_ms=1.0, reference_every=1, min_span_s=4.0))


def test_profile_through_two_boards_survives_one_killed(boards, tiny_space, tmp_path):
    from tvmnas.procs import stop_group

    _root, state, _ = boards
    arm = load_target("arm-aarch64")
    cands = tiny_space.candidates()[:4]
    kill, killed = fault_on_first_job(list(state.server_pids), lambda pid: stop_group(pid, "rpc_server"))
    db_path = tmp_path / "lat.db"
    policy = FarmPolicy(request_timeout_s=20, measure_timeout_s=300, on_job_sent=kill)
    with RpcRunner(state.endpoint()) as runner, LatencyDB(db_path) as db:
        report = profile_candidates(cands, arm, runner, db, SLOW_JOBS, tuning_dir(db_path, arm, runner.device_label),
                                    None, policy)
    assert all(o.row.ok for o in report.outcomes), [o.row.error for o in report.outcomes]
    assert len(killed) == 1 and report.dropped_sessions  # the board killed holding a job, which another measured
    with LatencyDB(db_path) as db:
        assert len([r for r in db.rows() if r.ok]) == len(cands)


@pytest.fixture(scope="module")
def arm_runner():
    subprocess.run(["make", "-C", str(REPO), "runner-aarch64"], check=True, capture_output=True)
    return REPO / "build" / "native-aarch64" / "tvmnas-run"


def test_arm_bundle_exported_through_the_tracker_runs_on_a_board(boards, arm_runner, tmp_path):
    from tvmnas.cli import main

    root, state, _ = boards
    network = save_tiny_network(tmp_path / "network.pt", ("mb_k3_e2", "mb_k3_e1"), {"test_acc": 0.5})
    host, port = state.tracker
    bundle = tmp_path / "bundle"
    assert main(["export", "--network", str(network), "--target", "arm-aarch64", "--tracker", f"{host}:{port}",
                 "--key", state.key, "--tune-trials", "0", "--db", str(tmp_path / "lat.db"),
                 "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["latency"]["measured_ms"] > 0 and manifest["checks"]["tvm_max_abs_diff"] < 1e-3
    header = (bundle / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64

    from tvmnas.board.farm import run_native

    proc = run_native(root, arm_runner, bundle, bundle / "sample_input.npy", ["--json", "--windows", "3",
                                                                               "--span-s", "1"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["top_class"] == manifest["expected_output"]["top_class"]
