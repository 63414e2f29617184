"""Processes tvmnas starts and stops (RPC trackers and servers, here or in a board's root filesystem).

Each process runs in a session of its own, so that stopping it also stops what it forks (an rpc_server's
`popen_worker` children would otherwise keep its port and its tracker slot). Stopping is by recorded pid, and
only while the pid still runs the command it was started with (psutil reads the command line), so a reused pid
is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    socket.create_connection((host, port), timeout=1).close()
    return True


def spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a command in a session of its own (so `stop_group` also stops what it forks), quiet."""
    return subprocess.Popen(cmd, start_new_session=True, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(check, timeout_s: float = 60.0, what: str = "RPC process") -> None:
    """Poll `check()` until it is true (exceptions count as not yet); TimeoutError when it never is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up within {timeout_s:g} s")


def is_ours(pid: int, marker: str) -> bool:
    """The process exists and its command line holds `marker`."""
    import psutil

    try:
        return marker in " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def stop_group(pid: int, marker: str | None = None) -> bool:
    """Kill the process and its session, and wait until it is gone; with a marker, only while the pid still runs
    a command holding it. False when there was nothing to stop."""
    import psutil

    if marker is not None and not is_ours(pid, marker):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        proc = psutil.Process(pid)
        proc.wait(timeout=10)  # reaps our own child; a foreign one just goes away
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def start_tracker(host: str, port: int) -> subprocess.Popen:
    """An rpc_tracker on host:port (this Python's TVM), up when this returns."""
    proc = spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
                  "--port-end", str(port + 1)])
    wait_until(lambda: port_open(port, host), 30, what="RPC tracker")
    return proc
