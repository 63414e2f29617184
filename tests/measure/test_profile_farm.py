"""Profiling through a tracker with two real x86 RPC servers: the work spreads, and survives a server killed
in the middle of the run."""

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.farm import FarmPolicy
from tvmnas.measure.profile import ProfileSettings, profile_candidates, tuning_dir
from tvmnas.measure.runner import TimingSettings
from tvmnas.measure.runner.loopback import free_port, start_server, start_tracker, stop
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner
from tvmnas.targets import load_target

pytestmark = pytest.mark.rpc
FAST = TimingSettings(warmup_runs=1, warmup_ms=0, rounds=2, repeat=3, min_repeat_ms=5)
POLICY = FarmPolicy(request_timeout_s=5, measure_timeout_s=60, max_spread=10.0)


@pytest.fixture
def two_servers():
    tracker = RpcEndpoint("127.0.0.1", free_port(), "x86-farm")
    procs = [start_tracker(tracker.port)]
    try:
        servers = [start_server(free_port(), tracker) for _ in range(2)]
        yield tracker, servers
    finally:
        for proc in procs + servers:
            stop(proc)


def profile(tiny_space, endpoint, db_path, on_outcome=None):
    cpu = load_target("x86-cpu")
    runner = RpcRunner(endpoint)
    with LatencyDB(db_path) as db:
        return profile_candidates(tiny_space.candidates(), cpu, runner, db, ProfileSettings(timing=FAST),
                                  tuning_dir(db_path, cpu, runner.device_label), on_outcome, POLICY)


def after_first(action):
    """An on_outcome callback that runs `action` once the first row is in, and the list of every outcome."""
    seen = []

    def callback(outcome):
        seen.append(outcome)
        if len(seen) == 1:
            action()

    return callback, seen


def test_a_server_killed_mid_run_loses_no_row(two_servers, tiny_space, tmp_path):
    tracker, servers = two_servers
    kill_one, seen = after_first(lambda: stop(servers[1]))
    out = profile(tiny_space, tracker, tmp_path / "lat.db", kill_one)
    assert len(out) == len(tiny_space.candidates()) == len(seen)
    assert all(o.row.ok and not o.cached for o in out), [o.row.error for o in out]
    with LatencyDB(tmp_path / "lat.db") as db:
        assert len(db.rows()) == len(out)
    again = profile(tiny_space, tracker, tmp_path / "lat.db")
    assert all(o.cached for o in again)


def test_no_server_left_stops_with_one_line_and_keeps_what_was_measured(two_servers, tiny_space, tmp_path):
    tracker, servers = two_servers
    kill_all, seen = after_first(lambda: [stop(proc) for proc in servers])
    with pytest.raises(TvmnasError, match="no RPC server left under key 'x86-farm'"):
        profile(tiny_space, tracker, tmp_path / "lat.db", kill_all)
    with LatencyDB(tmp_path / "lat.db") as db:
        kept = [r for r in db.rows() if r.ok]
    assert len(kept) == len(seen) >= 1


def test_a_hung_server_is_given_up_and_another_measures(two_servers, tiny_space, tmp_path):
    import os
    import signal

    tracker, servers = two_servers
    # the server and its worker stop answering
    hang_one, _ = after_first(lambda: os.killpg(servers[1].pid, signal.SIGSTOP))
    cpu = load_target("x86-cpu")
    runner = RpcRunner(tracker)
    policy = FarmPolicy(request_timeout_s=5, measure_timeout_s=8, max_spread=10.0)
    try:
        with LatencyDB(tmp_path / "lat.db") as db:
            out = profile_candidates(tiny_space.candidates(), cpu, runner, db, ProfileSettings(timing=FAST),
                                     tuning_dir(tmp_path / "lat.db", cpu, runner.device_label),
                                     hang_one, policy)
    finally:
        os.killpg(servers[1].pid, signal.SIGCONT)
    assert all(o.row.ok for o in out), [o.row.error for o in out]


def test_tuning_and_timing_share_the_servers(two_servers, tiny_space, tmp_path):
    """Meta-schedule's runner asks the same tracker for servers while the farm times: neither may starve."""
    tracker, _ = two_servers
    cpu = load_target("x86-cpu")
    runner = RpcRunner(tracker)
    db_path = tmp_path / "lat.db"
    with LatencyDB(db_path) as db:
        out = profile_candidates(tiny_space.candidates()[:3], cpu, runner, db,
                                 ProfileSettings(tune_trials=2, timing=FAST),
                                 tuning_dir(db_path, cpu, runner.device_label), None, POLICY)
    assert all(o.row.ok and o.row.level == "tuned-2" for o in out), [o.row.error for o in out]
    assert sum(o.row.tasks_tuned for o in out) >= 3


def test_tuning_and_timing_get_past_a_hung_server(two_servers, tiny_space, tmp_path):
    """A server that is registered but frozen: the trials and timings sent to it time out, the other server
    does the work, and every row is written."""
    import os
    import signal

    tracker, servers = two_servers
    os.killpg(servers[1].pid, signal.SIGSTOP)
    cpu = load_target("x86-cpu")
    runner = RpcRunner(tracker)
    db_path = tmp_path / "lat.db"
    policy = FarmPolicy(request_timeout_s=60, measure_timeout_s=8, max_spread=10.0)
    try:
        with LatencyDB(db_path) as db:
            out = profile_candidates(tiny_space.candidates()[:2], cpu, runner, db,
                                     ProfileSettings(tune_trials=2, timing=FAST),
                                     tuning_dir(db_path, cpu, runner.device_label), None, policy)
    finally:
        os.killpg(servers[1].pid, signal.SIGCONT)
    assert all(o.row.ok for o in out), [o.row.error for o in out]
