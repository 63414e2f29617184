"""Measure on every server registered under a tracker key at once, surviving servers that die or hang.

One worker thread per server takes jobs (compiled libraries to time) from a shared queue. A job whose session
fails or does not answer within `measure_timeout_s` goes back to the queue for another server (at most
`max_attempts` tries). A worker holds a session for one job at a time (tuning asks the same tracker for servers in
between), and stops when the tracker gives it none within `request_timeout_s`. When every worker has stopped with
jobs left, `results` raises, after handing out every result already done. Each job is timed with the
measurement protocol (the candidate interleaved with the reference module on that server), which drops windows of
slow phases and flags an estimate that stays noisy.

The steps (`connect`, `measure_on_session`) are plain functions so tests and other transports can replace them;
`FarmPolicy.on_job_sent` is called once a worker holds a server for a job, right before the job goes to it: the
point where a fault test kills or freezes exactly the server that has a job.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from tvmnas.errors import TvmnasError, error_line
from tvmnas.measure.protocol import Estimate, Protocol
from tvmnas.measure.runner.base import Batch
from tvmnas.measure.runner.rpc import (
    RpcEndpoint, ServerSession, count_servers, open_session, time_on_session, why_unreachable,
)


@dataclass(frozen=True)
class FarmPolicy:
    workers: int = 0  # sessions held at once; 0 = one per server registered under the key
    max_attempts: int = 3  # tries of one job, each after a failure on some server
    measure_timeout_s: float = 600.0  # one job (upload, load, warm-up, timing); longer = the server hangs
    request_timeout_s: float = 120.0  # waiting for the tracker to hand out a server (others may hold them a job long)
    on_job_sent: Callable[[str, Job], None] | None = None  # (server "host:port", job), in the worker, before sending


@dataclass(frozen=True)
class Job:
    id: object  # the caller's name for it
    batch: Batch  # one library (and the reference module)
    protocol: Protocol
    attempts: int = 0  # failed tries so far


@dataclass(frozen=True)
class JobResult:
    job: Job
    result: Estimate
    worker: str  # the worker (one session at a time) that produced it; "" for a job that failed everywhere


def measure_on_session(session: ServerSession, job: Job) -> Estimate:
    """Time the job's library on the session's device (raises on any failure)."""
    estimate = time_on_session(session.rpc, job.batch, job.protocol).estimates[0]
    if estimate.error is not None:
        raise RuntimeError(estimate.error)
    return estimate


def call_with_timeout(fn: Callable, timeout_s: float, *args):
    """fn(*args) in a daemon thread; TimeoutError when it has not returned in time (the thread is abandoned: a
    call blocked on a hung server's socket cannot be interrupted)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if "error" in box:
        raise box.pop("error")  # popped: the box must not keep the error's frames (and the session) alive
    return box["value"]


def tracker_answers(endpoint: RpcEndpoint) -> bool:
    """Whether the tracker still accepts connections (asked once no server is left: was it the tracker that went?)."""
    return why_unreachable(endpoint, timeout_s=min(endpoint.timeout_s, 5.0)) is None


class Farm:
    """Submit jobs, then iterate `results()`; use as a context manager (workers stop on exit)."""

    def __init__(self, endpoint: RpcEndpoint, policy: FarmPolicy = FarmPolicy(), connect=open_session,
                 measure=measure_on_session, tracker_answers=tracker_answers) -> None:
        if not endpoint.via_tracker:
            raise TvmnasError("a farm is reached through a tracker: give --tracker HOST:PORT and --key")
        self.endpoint, self.policy = endpoint, policy
        self._connect, self._measure, self._tracker_answers = connect, measure, tracker_answers
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._done: queue.Queue[JobResult | None] = queue.Queue()  # None: a worker stopped
        self._lock = threading.Lock()
        self._outstanding = 0
        self._closing = False
        self.workers = policy.workers or max(1, count_servers(endpoint))
        self._alive = self.workers
        self.failures: list[str] = []  # why sessions were dropped ("worker: error")
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"farm-{i}")
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Farm:
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._closing = True

    def submit(self, job: Job) -> None:
        with self._lock:
            self._outstanding += 1
        self._jobs.put(job)

    def _finish(self, result: JobResult) -> None:
        self._done.put(result)  # before the count drops, so a caller who sees 0 finds every result queued
        with self._lock:
            self._outstanding -= 1

    def _retry_or_fail(self, job: Job, error: str) -> None:
        job = replace(job, attempts=job.attempts + 1)
        if job.attempts >= self.policy.max_attempts:
            self._finish(JobResult(job, Estimate.failed(f"{error} (after {job.attempts} tries)"), ""))
        else:
            self._jobs.put(job)

    def _next_job(self) -> Job | None:
        while True:
            try:
                return self._jobs.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    if self._closing:
                        return None

    def _work(self) -> None:
        """Take a job, get a server from the tracker for it, give the server back after it. Holding no server
        between jobs lets meta-schedule's tuning runner, which asks the same tracker, have its turn."""
        name = threading.current_thread().name
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                try:
                    session = call_with_timeout(self._connect, self.policy.request_timeout_s, self.endpoint)
                except Exception as err:  # noqa: BLE001 - no server for this worker: it stops, the job stays
                    self._jobs.put(job)
                    self.failures.append(f"{name}: tracker gave no server: {error_line(err)}")
                    return
                try:
                    if self.policy.on_job_sent is not None:
                        self.policy.on_job_sent(session.server, job)
                    result = call_with_timeout(self._measure, self.policy.measure_timeout_s, session, job)
                except Exception as err:  # noqa: BLE001 - the server died, hung or failed: another one tries
                    text = error_line(err)
                    self.failures.append(f"{name} on {session.server}: {text}")
                    self._retry_or_fail(job, text)
                    continue
                finally:
                    del session  # closes the session (a hung one stays with its abandoned thread)
                self._finish(JobResult(job, result, name))
        finally:
            with self._lock:
                self._alive -= 1
            self._done.put(None)

    def poll(self) -> list[JobResult]:
        """Results that are done now (does not wait)."""
        out = []
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.append(item)

    def results(self) -> Iterator[JobResult]:
        """Wait for every submitted job; raises TvmnasError when no server is left for the jobs that remain
        (after handing out every result that is done)."""
        while True:
            try:
                item = self._done.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    left, alive = self._outstanding, self._alive
                if left == 0 or alive == 0:
                    break
                continue
            if item is not None:
                yield item
        yield from self.poll()
        if left:
            at = f"{self.endpoint.host}:{self.endpoint.port}"
            if not self._tracker_answers(self.endpoint):
                raise TvmnasError(f"the RPC tracker at {at} stopped answering; {left} measurement(s) not done "
                                  "(the rows measured are kept: rerun once the tracker is back)")
            last = self.failures[-1] if self.failures else "none registered"
            raise TvmnasError(f"no RPC server left under key {self.endpoint.key!r} at tracker {at}; {left} "
                              f"measurement(s) not done (last failure: {last})")
