"""Measure on a remote device over TVM RPC: a direct server (`host:port`) or a tracker and a key.

The steps are plain functions (`connect_session`, `direct_session`) so they can be replaced, as meta-schedule
does with its RPC runner. Modules arrive already compiled (cross-linked for the board); nothing links there.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tvmnas.errors import TvmnasError, error_line
from tvmnas.measure.protocol import Interleaved, Protocol
from tvmnas.measure.runner.base import Batch, Runner, run_loaded_module, set_remote_threads, time_loaded
from tvmnas.tvm_compat import give_rpc_runner_a_deadline, request_server


@dataclass(frozen=True)
class RpcEndpoint:
    host: str
    port: int
    key: str | None = None  # set: (host, port) is a tracker, and the session is requested under this key
    timeout_s: float = 10.0  # to reach the address
    wait_s: float = 600.0  # for the tracker to hand out a free server under the key

    @property
    def via_tracker(self) -> bool:
        return self.key is not None

    @property
    def label(self) -> str:
        return f"tracker-key:{self.key}" if self.via_tracker else f"rpc:{self.host}:{self.port}"


def parse_host_port(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TvmnasError(f"{flag} {text!r}: expected HOST:PORT")
    return host, int(port)


def why_unreachable(endpoint: RpcEndpoint, timeout_s: float) -> str | None:
    """Why nothing accepts a connection at the endpoint's address within `timeout_s` (None when something does)."""
    try:
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s).close()
    except OSError as err:
        return "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
    return None


def check_reachable(endpoint: RpcEndpoint) -> None:
    """Fail fast, in one line, when nothing answers at the endpoint's address or no server has its key."""
    what = "RPC tracker" if endpoint.via_tracker else "RPC server"
    reason = why_unreachable(endpoint, endpoint.timeout_s)
    if reason is not None:
        raise TvmnasError(f"cannot reach {what} at {endpoint.host}:{endpoint.port} "
                          f"within {endpoint.timeout_s:g} s: {reason}")
    if endpoint.via_tracker and count_servers(endpoint) == 0:
        raise TvmnasError(f"no RPC server is registered under key {endpoint.key!r} "
                          f"at tracker {endpoint.host}:{endpoint.port}")


def tracker_summary(endpoint: RpcEndpoint) -> dict[str, tuple[int, int]]:
    """Per key: (servers registered, servers free) as the tracker at the endpoint sees them."""
    from tvm import rpc

    summary = rpc.connect_tracker(endpoint.host, endpoint.port).summary()
    keys: dict[str, tuple[int, int]] = {}
    for info in summary.get("server_info", []):
        key = info["key"].removeprefix("server:")
        keys[key] = (keys.get(key, (0, 0))[0] + 1, 0)
    for key, queue in summary.get("queue_info", {}).items():
        if key in keys:
            keys[key] = (keys[key][0], int(queue.get("free", 0)))
    return keys


def count_servers(endpoint: RpcEndpoint) -> int:
    """Servers the tracker knows under the endpoint's key (free or busy)."""
    return tracker_summary(endpoint).get(endpoint.key, (0, 0))[0]


@dataclass(frozen=True)
class ServerSession:
    """An open RPC session and the server it reaches ("host:port"); the session closes when this is dropped."""

    rpc: object
    server: str


def open_session(endpoint: RpcEndpoint) -> ServerSession:
    """Open an RPC session to the endpoint (a server the tracker hands out, when it has a key)."""
    from tvm import rpc

    if endpoint.via_tracker:
        try:
            session, (host, port) = request_server(endpoint.host, endpoint.port, endpoint.key, priority=1,
                                                   wait_s=endpoint.wait_s)
        except TimeoutError as err:
            raise TvmnasError(f"tracker {endpoint.host}:{endpoint.port}: {err} (every server under the key is busy; "
                              f"a session left open holds its server until it is closed)") from None
        return ServerSession(session, f"{host}:{port}")
    return ServerSession(rpc.connect(endpoint.host, endpoint.port), f"{endpoint.host}:{endpoint.port}")


def connect_session(endpoint: RpcEndpoint):
    """The RPC session alone (see `open_session`)."""
    return open_session(endpoint).rpc


def direct_session(rpc_config):
    """meta-schedule `f_create_session` for a direct server: its tracker fields hold the server's address."""
    from tvm import rpc

    return rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                       session_timeout=rpc_config.session_timeout_sec)


def remote_device(session, device_kind: str):
    return session.cuda(0) if device_kind == "cuda" else session.cpu(0)


def time_on_session(session, batch: Batch, protocol: Protocol,
                    on_round: Callable[[int, int], None] | None = None) -> Interleaved:
    """Upload the batch's libraries (and the reference), time them on the session's device with the protocol,
    remove them. Raises when the session fails as a whole; a library that does not load fails alone."""
    names = {}
    set_remote_threads(session, batch.threads)
    paths = list(batch.libs) + ([batch.reference] if batch.reference is not None else [])
    try:
        for path in paths:
            names[path] = f"tvmnas-{uuid.uuid4().hex[:12]}.so"
            session.upload(str(path), names[path])
        loaded = [_load(session, names[p]) for p in batch.libs]
        reference = None if batch.reference is None else session.load_module(names[batch.reference])
        return time_loaded(loaded, reference, remote_device(session, batch.device_kind), batch, protocol,
                           on_round)
    finally:
        for name in names.values():
            try:
                session.remove(name)
            except Exception:  # noqa: BLE001 - a dead session keeps nothing worth removing
                pass


def _load(session, name: str):
    try:
        return session.load_module(name)
    except Exception:  # noqa: BLE001 - that library fails alone
        return None


class RpcRunner(Runner):
    def __init__(self, endpoint: RpcEndpoint, connect=connect_session) -> None:
        self.endpoint = endpoint
        self.device_label = endpoint.label
        self._connect = connect
        self._session = None
        self._ms_runner = None

    def _get_session(self):
        if self._session is None:
            self._session = self._connect(self.endpoint)
        return self._session

    def measure(self, batch: Batch, protocol: Protocol,
                on_round: Callable[[int, int], None] | None = None) -> Interleaved:
        try:
            return time_on_session(self._get_session(), batch, protocol, on_round)
        except Exception as err:  # noqa: BLE001 - the results carry it
            self._session = None  # a broken session is dropped; the next measurement reconnects
            return Interleaved.failed(len(batch.libs), error_line(err))

    def outputs(self, lib_path: Path, device_kind: str, data) -> np.ndarray:
        session = self._get_session()
        remote_name = f"tvmnas-{uuid.uuid4().hex[:12]}.so"
        session.upload(str(lib_path), remote_name)
        try:
            return run_loaded_module(session.load_module(remote_name), remote_device(session, device_kind), data,
                                     session.get_function("ffi.ArrayGetItem"))
        finally:
            session.remove(remote_name)

    def meta_schedule_runner(self, device_kind: str, threads: int = 0):
        """Meta-schedule's RPC runner, timing on as many servers at once as the tracker has under the key. It
        cannot set the board's threads: start the server with TVM_NUM_THREADS set to the target's num-cores
        (`loopback.start_server` and `tvmnas board up` do). A trial whose server fails or does not answer within
        the session timeout fails alone; the others go on."""
        from tvm.s_tir import meta_schedule as ms

        if self._ms_runner is None:
            workers = max(1, count_servers(self.endpoint)) if self.endpoint.via_tracker else 1
            config = ms.runner.RPCConfig(tracker_host=self.endpoint.host, tracker_port=self.endpoint.port,
                                         tracker_key=self.endpoint.key or "direct",
                                         session_timeout_sec=int(max(self.endpoint.timeout_s, 30)))
            runner = ms.runner.RPCRunner(
                rpc_config=config,
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20),
                f_create_session=None if self.endpoint.via_tracker else direct_session, max_workers=workers)
            give_rpc_runner_a_deadline(runner, workers, config.session_timeout_sec)
            self._ms_runner = runner
        return self._ms_runner

    def close(self) -> None:
        self._session = None  # the last reference: the session closes, and its server is free again
        if self._ms_runner is not None:
            self._ms_runner.pool.shutdown(wait=False)
            self._ms_runner = None
