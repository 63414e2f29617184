"""x86 RPC servers on 127.0.0.1 for the tests and benches (a tracker comes from `tvmnas.procs`)."""

from __future__ import annotations

import os
import subprocess
import sys

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
