"""The RPC runner against a real x86 `tvm.exec.rpc_server` and `rpc_tracker` started on 127.0.0.1."""

import pytest

from tests.helpers import FAST
from tests.loopback import start_server, stop
from tvmnas.errors import TvmnasError
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.runner.rpc import (
    RpcEndpoint,
    RpcRunner,
    check_reachable,
    parse_host_port,
)
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.procs import free_port, start_tracker
from tvmnas.profile import ProfileSettings, measure_candidate, profile_candidates
from tvmnas.targets import load_target

pytestmark = pytest.mark.rpc


@pytest.fixture(scope="module")
def rpc_farm():
    """A tracker and one server registered under key 'x86-test', plus a direct server."""
    tracker = RpcEndpoint("127.0.0.1", free_port(), "x86-test")
    procs = [start_tracker("127.0.0.1", tracker.port)]
    try:
        procs.append(start_server(free_port(), tracker))
        direct = RpcEndpoint("127.0.0.1", free_port())
        procs.append(start_server(direct.port))
        yield {"tracker": tracker, "direct": direct}
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.parametrize("which", ["direct", "tracker"])
def test_rpc_runner_measures(rpc_farm, tiny_space, tmp_path, which):
    cpu = load_target("x86-cpu")
    endpoint = rpc_farm[which]
    check_reachable(endpoint)
    db_path = tmp_path / "lat.db"
    with RpcRunner(endpoint) as runner, LatencyDB(db_path) as db:
        out = profile_candidates(tiny_space.candidates()[:2], cpu, runner, db, ProfileSettings(protocol=FAST),
                                 tuning_dir(db_path, cpu, runner.device_label)).outcomes
    assert all(o.row.ok and o.row.latency_ms > 0 for o in out), [o.row.error for o in out]
    assert out[0].row.device == endpoint.label
    assert out[0].row.target_fp == cpu.fingerprint(endpoint.label) != cpu.fingerprint("local")


@pytest.mark.parametrize("which", ["direct", "tracker"])
def test_tuning_over_rpc(rpc_farm, tiny_space, tmp_path, which):
    cpu = load_target("x86-cpu")
    with RpcRunner(rpc_farm[which]) as runner:
        row = measure_candidate(tiny_space.stem(), cpu, runner, ProfileSettings(tune_trials=2, protocol=FAST),
                                tmp_path / "tuning")
    assert row.ok and row.tasks_tuned >= 1, row.error


def test_unreachable_endpoint_is_one_clear_line():
    with pytest.raises(TvmnasError, match=r"cannot reach RPC server at 127.0.0.1:\d+ within 2 s"):
        check_reachable(RpcEndpoint("127.0.0.1", free_port(), timeout_s=2))


def test_tracker_without_server_for_key(rpc_farm):
    tracker = rpc_farm["tracker"]
    with pytest.raises(TvmnasError, match="no RPC server is registered under key 'nobody'"):
        check_reachable(RpcEndpoint(tracker.host, tracker.port, "nobody"))


@pytest.mark.parametrize("text", ["localhost", "host:", ":9090", "host:99999", "host:port"])
def test_bad_host_port(text):
    with pytest.raises(TvmnasError, match="expected HOST:PORT"):
        parse_host_port(text, "--rpc")


def test_outputs_over_rpc_equal_local_ones(rpc_farm, tiny_space, tmp_path):
    import numpy as np

    from tvmnas.measure.runner.local import LocalRunner
    from tvmnas.profile import library_path

    cpu, cand = load_target("x86-cpu"), tiny_space.stem()
    row = measure_candidate(cand, cpu, LocalRunner(), ProfileSettings(protocol=FAST), tmp_path / "tuning",
                            keep_dir=tmp_path)
    assert row.ok, row.error
    data = np.random.default_rng(0).standard_normal(cand.input_shape).astype(np.float32)
    lib = library_path(cand, tmp_path)
    with RpcRunner(rpc_farm["tracker"]) as runner:
        remote = runner.outputs(lib, "cpu", data)
    np.testing.assert_allclose(remote, LocalRunner().outputs(lib, "cpu", data), rtol=1e-6)


def test_closing_a_runner_frees_its_server_and_a_busy_key_times_out(rpc_farm):
    """A runner's session holds the tracker's only server under the key until the runner is closed (not until the
    garbage collector gets to it); a request while it is held fails in one line after `wait_s`."""
    from dataclasses import replace

    endpoint = replace(rpc_farm["tracker"], wait_s=1.0)
    with RpcRunner(endpoint) as holder:
        holder._get_session()
        with pytest.raises(TvmnasError, match=r"no server under key 'x86-test' was free within 1 s"):
            RpcRunner(endpoint)._get_session()
    with RpcRunner(replace(endpoint, wait_s=60.0)) as runner:
        assert runner._get_session() is not None
