"""x86 RPC servers on 127.0.0.1 for the tests, and the farm hook of the fault tests."""

from __future__ import annotations

import subprocess
import threading

from tvmnas import procs
from tvmnas.measure.runner.rpc import RpcEndpoint, count_servers
from tvmnas.procs import listening_addresses, stop_group


def start_server(port: int, tracker: RpcEndpoint | None = None, threads: int = 0) -> subprocess.Popen:
    """An rpc_server on 127.0.0.1:port (see `tvmnas.procs.start_server`), registered with the tracker under its key
    when one is given, and listed there when this returns."""
    if tracker is None:
        return procs.start_server(port, threads=threads)
    before = count_servers(tracker)
    return procs.start_server(port, tracker=(tracker.host, tracker.port), key=tracker.key, threads=threads,
                              ready=lambda: count_servers(tracker) > before)


def stop(proc: subprocess.Popen) -> None:
    """Kill the process and everything in its session."""
    stop_group(proc.pid)
    proc.poll()


def fault_on_first_job(pids: list[int], action):
    """(hook, hit) for fault tests: `hook` is a `FarmPolicy.on_job_sent` that runs `action(pid)` on the server (one
    of `pids`, found by the port it listens on) that the farm is about to send its first job to; `hit` lists that
    pid. The server holds a job when the fault lands, by construction: no watcher, no race."""
    hit: list[int] = []
    lock = threading.Lock()

    def hook(server: str, _job) -> None:
        with lock:
            if hit:
                return
            port = int(server.rsplit(":", 1)[1])
            pid = next((p for p in pids if any(q == port for _, q in listening_addresses(p))), None)
            assert pid is not None, f"no server of {pids} listens on {server}"
            hit.append(pid)
            action(pid)

    return hook, hit
