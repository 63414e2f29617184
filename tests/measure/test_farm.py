"""The farm's scheduling, retries and fault handling, with fake servers (no TVM, no sockets)."""

import threading
import time

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.measure.farm import Farm, FarmPolicy, Job
from tvmnas.measure.protocol import Estimate, Protocol
from tvmnas.measure.runner.base import Batch
from tvmnas.measure.runner.rpc import RpcEndpoint

pytestmark = pytest.mark.fault
ENDPOINT = RpcEndpoint("127.0.0.1", 9, "board")


class FakeSession:
    """Gives its server back to the tracker when dropped, as a closed RPC session does."""

    def __init__(self, server: str, tracker) -> None:
        self.server, self.tracker = server, tracker

    def __del__(self) -> None:
        with self.tracker.lock:
            self.tracker.free.append(self.server)


class FakeTracker:
    """Hands out servers by name; `behaviour[name]` is 'ok', 'dies-after-N' or 'hangs'."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = dict(behaviour)
        self.free = list(behaviour)
        self.dead: set[str] = set()
        self.done: dict[str, int] = {name: 0 for name in behaviour}
        self.lock = threading.Lock()
        self.hangs_ended = 0  # hung calls that came back (the farm must not wait for them)
        self.gone = False  # the tracker itself stopped answering

    def answers(self, _endpoint) -> bool:
        return not self.gone

    def connect(self, _endpoint):
        while True:  # like a tracker request: waits until a live server is free
            with self.lock:
                live = [s for s in self.free if s not in self.dead]
                if live:
                    self.free.remove(live[0])
                    return FakeSession(live[0], self)
            time.sleep(0.01)

    def measure(self, session: FakeSession, job: Job) -> Estimate:
        server = session.server
        kind = self.behaviour[server]
        with self.lock:
            self.done[server] += 1
            count = self.done[server]
        if server in self.dead:
            raise ConnectionError(f"{server} is gone")
        if kind.startswith("dies-after-") and count > int(kind.rsplit("-", 1)[1]):
            self.dead.add(server)
            raise ConnectionError(f"{server} closed the connection")
        if kind == "hangs":
            time.sleep(5)
            with self.lock:
                self.hangs_ended += 1
        time.sleep(0.02)  # a measurement takes a while, so every server gets work
        latency = 1.0 + job.id / 100
        return Estimate(latency, latency, 0.01, 10, 0)


def jobs(n: int) -> list[Job]:
    return [Job(i, Batch((f"/tmp/lib{i}.so",), ((1, 3, 8, 8),), "cpu"), Protocol()) for i in range(n)]


def run(tracker: FakeTracker, n: int, **policy) -> tuple[list, Farm]:
    policy = {"workers": len(tracker.behaviour), "request_timeout_s": 0.5, "measure_timeout_s": 2.0, **policy}
    with Farm(ENDPOINT, FarmPolicy(**policy), connect=tracker.connect, measure=tracker.measure,
              tracker_answers=tracker.answers) as farm:
        for job in jobs(n):
            farm.submit(job)
        return list(farm.results()), farm


def test_jobs_spread_over_every_server():
    tracker = FakeTracker({"a": "ok", "b": "ok"})
    results, _ = run(tracker, 12)
    assert sorted(r.job.id for r in results) == list(range(12))
    assert all(r.result.latency_ms == pytest.approx(1.0 + r.job.id / 100) for r in results)
    assert tracker.done["a"] > 0 and tracker.done["b"] > 0


def test_a_server_that_dies_hands_its_job_to_another():
    tracker = FakeTracker({"a": "ok", "b": "dies-after-2"})
    results, farm = run(tracker, 10)
    assert sorted(r.job.id for r in results) == list(range(10))
    assert all(r.result.error is None for r in results)
    assert any("closed the connection" in f for f in farm.failures)


def test_a_hung_server_times_out_and_another_measures():
    tracker = FakeTracker({"a": "ok", "b": "hangs"})
    results, farm = run(tracker, 4, measure_timeout_s=0.3)
    assert sorted(r.job.id for r in results) == list(range(4))
    assert all(r.result.error is None for r in results)
    assert any("no answer within 0.3 s" in f for f in farm.failures)
    assert tracker.hangs_ended == 0  # every result was in while the hung call still hung: it was abandoned


@pytest.mark.parametrize("tracker_gone, message", [
    (False, r"no RPC server left under key 'board'.*3 measurement\(s\) not done"),
    (True, r"the RPC tracker at .* stopped answering; 3 measurement\(s\) not done"),
])
def test_no_server_left_stops_with_one_line_after_handing_out_what_is_done(tracker_gone, message):
    """The one line says whether the servers went or the tracker itself did."""
    tracker = FakeTracker({"a": "dies-after-2"})
    tracker.gone = tracker_gone
    got = []
    with pytest.raises(TvmnasError, match=message):
        with Farm(ENDPOINT, FarmPolicy(workers=1, request_timeout_s=0.3), connect=tracker.connect,
                  measure=tracker.measure, tracker_answers=tracker.answers) as farm:
            for job in jobs(5):
                farm.submit(job)
            got.extend(farm.results())
    assert sorted(r.job.id for r in got) == [0, 1]


def test_a_job_that_fails_everywhere_ends_as_an_error_after_the_allowed_tries():
    tracker = FakeTracker({"a": "ok"})

    def broken(server, job):
        raise RuntimeError("the module does not load")

    with Farm(ENDPOINT, FarmPolicy(workers=1, max_attempts=2), connect=tracker.connect, measure=broken) as farm:
        farm.submit(jobs(1)[0])
        (result,) = list(farm.results())
    assert result.result.error == "RuntimeError: the module does not load (after 2 tries)"


def test_the_job_sent_hook_sees_the_server_that_holds_the_job():
    """A fault injected from `on_job_sent` lands on the server about to get the job: that session is dropped,
    and the job is measured by another server."""
    tracker = FakeTracker({"a": "ok", "b": "ok"})
    hit = []

    def kill_first(server, job):
        if not hit:
            hit.append((server, job.id))
            tracker.dead.add(server)

    results, farm = run(tracker, 6, on_job_sent=kill_first)
    assert sorted(r.job.id for r in results) == list(range(6))
    (server, _job), = hit
    assert len(farm.failures) == 1 and farm.failures[0].endswith(f" on {server}: ConnectionError: {server} is gone")
    assert tracker.done[({"a", "b"} - {server}).pop()] == 6  # the other server measured every job, that one too

