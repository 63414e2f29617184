"""Processes tvmnas starts and stops (RPC trackers and servers, here or in a board's root filesystem).

Each process runs in a session of its own, so that stopping it also stops what it forks (an rpc_server's
`popen_worker` children would otherwise keep its port and its tracker slot). Stopping is by recorded pid, and
only while the pid still runs the command it was started with (psutil reads the command line), so a reused pid
is left alone.

Who can run code through them: an RPC server runs whatever module it is sent, and a tracker hands its servers to
whoever asks, so anyone who can reach their ports can run code as the user that started them. tvmnas starts them
on 127.0.0.1 unless a flag names another address, and then says so (`warn_exposed`).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

LOOPBACK = "127.0.0.1"  # where tvmnas's trackers and servers listen unless a flag says otherwise


def is_loopback(host: str) -> bool:
    """Whether listening on `host` reaches this machine only: an address in 127.0.0.0/8 or ::1, or a name (such
    as localhost) that resolves to such addresses only. The wildcard ("", 0.0.0.0, ::), any other address and a
    name that does not resolve are not."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    try:
        return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
    except ValueError:
        return False


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def warn_exposed(host: str, what: str, stream=None) -> bool:
    """One line on stderr (or `stream`) when `what` (e.g. "the RPC tracker and servers") is to listen on a host
    that is not loopback: those run whatever code they are sent. True when it warned."""
    if is_loopback(host):
        return False
    shown = f"{host or '0.0.0.0'} (every address of this machine)" if host.strip() in ("", "0.0.0.0", "::") \
        else host
    print(f"tvmnas: warning: {what} will listen on {shown}: anyone who can reach it can run code on this machine "
          f"as {_user()}; use {LOOPBACK} with an SSH tunnel, or a private network",
          file=stream if stream is not None else sys.stderr, flush=True)
    return True


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every socket that the process and its descendants listen on: TCP sockets in LISTEN and
    bound UDP sockets. Empty when the process is gone; psutil.AccessDenied when its sockets cannot be read."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # gone meanwhile
        for conn in conns:
            listening = conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr)
            if listening and conn.laddr:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def free_port(host: str = LOOPBACK) -> int:
    family = socket.getaddrinfo(host or None, 0, proto=socket.IPPROTO_TCP)[0][0]  # IPv6 hosts too
    with socket.socket(family) as sock:
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
    return stop_groups([pid], marker) == 1


def stop_groups(pids, marker: str | None = None, timeout_s: float = 10.0) -> int:
    """`stop_group` for many processes at once: every group is killed first, then all are waited for together
    (within `timeout_s` in all, not each). Returns how many were stopped."""
    import psutil

    killed = []
    for pid in pids:
        if marker is not None and not is_ours(pid, marker):
            continue
        try:
            proc = psutil.Process(pid)
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
        killed.append(proc)
    gone, _ = psutil.wait_procs(killed, timeout=timeout_s)  # reaps our own children; foreign ones just go away
    return len(gone)


def start_server(port: int, host: str = LOOPBACK, tracker: tuple[str, int] | None = None, key: str = "",
                 threads: int = 0, ready=None) -> subprocess.Popen:
    """An rpc_server (this Python's TVM) listening on host:port only, registered with the tracker under `key` when
    one is given; `threads` sets TVM_NUM_THREADS of its workers (what meta-schedule's RPC runner times with). Up
    when this returns: `ready()` true (e.g. the tracker lists it), or else its port open."""
    args = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", host, "--port", str(port),
            "--port-end", str(port + 1)]
    if tracker is not None:
        args += ["--tracker", f"{tracker[0]}:{tracker[1]}", "--key", key]
    proc = spawn(args, dict(os.environ, TVM_NUM_THREADS=str(threads)) if threads > 0 else None)
    wait_until(ready or (lambda: port_open(port, host)), what="RPC server")
    return proc


def start_tracker(host: str, port: int) -> subprocess.Popen:
    """An rpc_tracker on host:port (this Python's TVM), up when this returns. It listens on that one address and
    port only (TVM's own default would be 0.0.0.0); whoever passes a host that is not loopback warns
    (`warn_exposed`)."""
    proc = spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
                  "--port-end", str(port + 1)])
    wait_until(lambda: port_open(port, host), 30, what="RPC tracker")
    return proc
