"""x86 RPC servers on 127.0.0.1 for the tests and benches (a tracker comes from `tvmnas.procs`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil

from tvmnas.measure.runner.rpc import RpcEndpoint, count_servers
from tvmnas.procs import port_open, spawn, stop_group, wait_until


def start_server(port: int, tracker: RpcEndpoint | None = None, threads: int = 0) -> subprocess.Popen:
    """An rpc_server on 127.0.0.1:port, registered with the tracker under its key when one is given. `threads`
    sets TVM_NUM_THREADS for its workers (what meta-schedule's RPC runner times with)."""
    args = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
            "--port-end", str(port + 1)]
    env = dict(os.environ, TVM_NUM_THREADS=str(threads)) if threads > 0 else None
    if tracker is not None:
        before = count_servers(tracker)
        proc = spawn(args + ["--tracker", f"{tracker.host}:{tracker.port}", "--key", tracker.key], env)
        wait_until(lambda: count_servers(tracker) > before, what="RPC server")
    else:
        proc = spawn(args, env)
        wait_until(lambda: port_open(port), what="RPC server")
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill the process and everything in its session."""
    stop_group(proc.pid)
    proc.poll()


def processes(pid: int) -> int:
    """How many processes a server runs below its own (TVM's server forks one more for each RPC session)."""
    try:
        return len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def in_session(pids: list[int], idle: list[int], timeout_s: float = 60.0) -> int:
    """The first of the servers (process ids) seen serving an RPC session: more processes than `idle`, their
    counts when idle."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid, count in zip(pids, idle):
            if processes(pid) > count:
                return pid
        time.sleep(0.01)
    raise TimeoutError(f"no server started a session within {timeout_s:g} s")


def on_busy(pids: list[int], action):
    """(start, done) for fault tests: `start()` waits in a thread, without holding up the caller, for one of the
    servers to be in the middle of a job, and runs `action(pid)` on it; `done()` waits for that and returns
    [pid] (empty when no server took a job)."""
    idle = [processes(pid) for pid in pids]
    hit: list[int] = []

    def watch():
        pid = in_session(pids, idle)
        action(pid)
        hit.append(pid)

    thread = threading.Thread(target=watch, daemon=True)

    def done() -> list[int]:
        thread.join()
        return hit

    return thread.start, done
