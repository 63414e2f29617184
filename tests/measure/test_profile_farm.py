"""Profiling through a tracker with two real x86 RPC servers: the work spreads, and survives a server killed or
frozen while it holds a job (the fault lands from the farm's `on_job_sent` hook, so the server holds a job by
construction)."""

from dataclasses import replace

import pytest

from tests.helpers import FAST
from tests.loopback import fault_on_first_job, start_server, stop
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.farm import FarmPolicy
from tvmnas.measure.protocol import Protocol
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.procs import free_port, start_tracker, stop_group
from tvmnas.profile import FarmExhausted, ProfileSettings, profile_candidates
from tvmnas.targets import load_target

pytestmark = [pytest.mark.rpc, pytest.mark.fault]
POLICY = FarmPolicy(request_timeout_s=5, measure_timeout_s=60)
# each job takes a second and a half, so servers killed after the first row leave jobs unmeasured
SLOW_JOBS = ProfileSettings(protocol=FAST, farm_protocol=Protocol(windows=3, samples_per_window=2, sample_ms=0.5,
                                                                   warmup_ms=1.0, reference_every=1, min_span_s=1.5))


@pytest.fixture
def two_servers():
    tracker = RpcEndpoint("127.0.0.1", free_port(), "x86-farm")
    procs = [start_tracker("127.0.0.1", tracker.port)]
    try:
        servers = [start_server(free_port(), tracker) for _ in range(2)]
        yield tracker, servers
    finally:
        for proc in procs + servers:
            stop(proc)


def profile(tiny_space, endpoint, db_path, progress=None, policy=POLICY):
    cpu = load_target("x86-cpu")
    with RpcRunner(endpoint) as runner, LatencyDB(db_path) as db:
        return profile_candidates(tiny_space.candidates(), cpu, runner, db, SLOW_JOBS,
                                  tuning_dir(db_path, cpu, runner.device_label), progress, policy)


def after_first(action):
    """A progress callback that runs `action` once the first row is measured, and the list of rows measured."""
    seen = []

    def callback(phase, done, total, what):
        if phase == "measure":
            seen.append(what)
            if len(seen) == 1:
                action()

    return callback, seen


def test_a_server_killed_holding_a_job_loses_no_row(two_servers, tiny_space, tmp_path):
    tracker, servers = two_servers
    kill, killed = fault_on_first_job([proc.pid for proc in servers], stop_group)
    seen = []
    report = profile(tiny_space, tracker, tmp_path / "lat.db", lambda phase, *rest: seen.append(phase),
                     replace(POLICY, on_job_sent=kill))
    out = report.outcomes
    assert len(out) == len(tiny_space.candidates()) == seen.count("measure")
    assert all(o.row.ok and not o.cached for o in out), [o.row.error for o in out]
    assert len(killed) == 1 and report.dropped_sessions  # its session was dropped, and another server measured it
    with LatencyDB(tmp_path / "lat.db") as db:
        assert len(db.rows()) == len(out)
    again = profile(tiny_space, tracker, tmp_path / "lat.db").outcomes
    assert all(o.cached for o in again)


def test_no_server_left_stops_with_one_line_and_keeps_what_was_measured(two_servers, tiny_space, tmp_path):
    tracker, servers = two_servers
    kill_all, seen = after_first(lambda: [stop(proc) for proc in servers])
    with pytest.raises(FarmExhausted, match="no RPC server left under key 'x86-farm'") as raised:
        profile(tiny_space, tracker, tmp_path / "lat.db", kill_all)
    assert raised.value.dropped_sessions
    with LatencyDB(tmp_path / "lat.db") as db:
        kept = [r for r in db.rows() if r.ok]
    assert len(kept) == len(seen) >= 1


def test_a_hung_server_is_given_up_and_another_measures(two_servers, tiny_space, tmp_path):
    import os
    import signal

    tracker, servers = two_servers
    hung = []

    def hang(pid):  # a server in the middle of a job stops answering, with its workers
        hung.append(pid)
        os.killpg(pid, signal.SIGSTOP)

    hook, _ = fault_on_first_job([proc.pid for proc in servers], hang)
    try:
        report = profile(tiny_space, tracker, tmp_path / "lat.db", None,
                         FarmPolicy(request_timeout_s=5, measure_timeout_s=8, on_job_sent=hook))
        assert hung
    finally:
        for pid in hung:
            os.killpg(pid, signal.SIGCONT)
    assert all(o.row.ok for o in report.outcomes), [o.row.error for o in report.outcomes]
    assert any("no answer within 8 s" in why for why in report.dropped_sessions)


def test_tuning_and_timing_share_the_servers(two_servers, tiny_space, tmp_path):
    """Meta-schedule's runner asks the same tracker for servers while the farm times: neither may starve."""
    tracker, _ = two_servers
    cpu = load_target("x86-cpu")
    db_path = tmp_path / "lat.db"
    with RpcRunner(tracker) as runner, LatencyDB(db_path) as db:
        out = profile_candidates(tiny_space.candidates()[:3], cpu, runner, db,
                                 ProfileSettings(tune_trials=2, protocol=FAST, farm_protocol=FAST),
                                 tuning_dir(db_path, cpu, runner.device_label), None, POLICY).outcomes
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
    db_path = tmp_path / "lat.db"
    policy = FarmPolicy(request_timeout_s=60, measure_timeout_s=8)
    try:
        with RpcRunner(tracker) as runner, LatencyDB(db_path) as db:
            out = profile_candidates(tiny_space.candidates()[:2], cpu, runner, db,
                                     ProfileSettings(tune_trials=2, protocol=FAST, farm_protocol=FAST),
                                     tuning_dir(db_path, cpu, runner.device_label), None, policy).outcomes
    finally:
        os.killpg(servers[1].pid, signal.SIGCONT)
    assert all(o.row.ok for o in out), [o.row.error for o in out]


def test_the_tracker_killed_mid_profile_stops_with_one_line_and_a_rerun_measures_the_rest(tiny_space, tmp_path):
    """The tracker (not a server) dies after the first row: the profile stops with one line naming the tracker,
    every row measured is kept, and once a tracker is back under the same address the rerun measures only the
    rest."""
    from tvmnas.errors import TvmnasError

    tracker = RpcEndpoint("127.0.0.1", free_port(), "x86-farm")
    tracker_proc = start_tracker("127.0.0.1", tracker.port)
    servers = [start_server(free_port(), tracker) for _ in range(2)]
    try:
        kill_tracker, seen = after_first(lambda: stop(tracker_proc))
        with pytest.raises(TvmnasError) as raised:
            profile(tiny_space, tracker, tmp_path / "lat.db", kill_tracker)
        message = str(raised.value)
        assert message.startswith(f"the RPC tracker at 127.0.0.1:{tracker.port} stopped answering"), message
        assert "\n" not in message
        with LatencyDB(tmp_path / "lat.db") as db:
            kept = [r for r in db.rows() if r.ok]
        assert 1 <= len(kept) == len(seen) < len(tiny_space.candidates())
        tracker_proc = start_tracker("127.0.0.1", tracker.port)
        again = profile(tiny_space, tracker, tmp_path / "lat.db").outcomes
        assert sum(o.cached for o in again) == len(kept) and all(o.row.ok for o in again)
    finally:
        for proc in [tracker_proc, *servers]:
            stop(proc)
