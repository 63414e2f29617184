"""Start and stop TVM RPC trackers and servers on this machine (tests, benchmarks, loopback checks).

Each process runs in a session of its own so that stopping it also stops the `popen_worker` children that
an rpc_server forks (they would otherwise keep its port and its tracker slot).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tvmnas.measure.runner.rpc import RpcEndpoint, count_servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a command in a session of its own (so `stop` also stops what it forks), quiet."""
    return subprocess.Popen(cmd, start_new_session=True, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return spawn([sys.executable, "-m", *args], env)


def stop(proc: subprocess.Popen) -> None:
    """Kill the process and everything in its session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def wait_until(check, timeout_s: float = 60.0, what: str = "RPC process") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up within {timeout_s:g} s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    socket.create_connection((host, port), timeout=1).close()
    return True


def start_tracker(port: int) -> subprocess.Popen:
    proc = _start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
    wait_until(lambda: port_open(port), what="RPC tracker")
    return proc


def start_server(port: int, tracker: RpcEndpoint | None = None, threads: int = 0) -> subprocess.Popen:
    """An rpc_server on 127.0.0.1:port, registered with the tracker under its key when one is given. `threads`
    sets TVM_NUM_THREADS for its workers (what meta-schedule's RPC runner times with)."""
    args = ["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
    env = dict(os.environ, TVM_NUM_THREADS=str(threads)) if threads > 0 else None
    if tracker is not None:
        before = count_servers(tracker)
        proc = _start(*args, "--tracker", f"{tracker.host}:{tracker.port}", "--key", tracker.key, env=env)
        wait_until(lambda: count_servers(tracker) > before, what="RPC server")
    else:
        proc = _start(*args, env=env)
        wait_until(lambda: port_open(port), what="RPC server")
    return proc
