"""Who can run code through what tvmnas starts (issue 23): RPC trackers and servers listen on loopback unless a
flag names another address, and then one line on stderr says what that exposes."""

import io
import re
import socket
import sys
from pathlib import Path

import pytest

from tvmnas.procs import (free_port, is_loopback, listening_addresses, spawn, start_tracker, stop_group,
                          wait_until, warn_exposed)

REPO = Path(__file__).resolve().parents[1]
WARNING = re.compile(r"^tvmnas: warning: .+ will listen on .+: anyone who can reach it can run code on this machine "
                     r"as .+; use 127\.0\.0\.1 with an SSH tunnel, or a private network$")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_addresses_warn_nothing(host, capsys):
    assert is_loopback(host)
    assert not warn_exposed(host, "the RPC tracker")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "10.0.0.1", "2001:db8::1",
                                  "no-such-host.invalid"])
def test_any_other_address_warns_in_one_line(host, capsys):
    assert not is_loopback(host)
    assert warn_exposed(host, "the RPC tracker and servers")
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert WARNING.match(err.strip()), err
    assert "the RPC tracker and servers" in err and (host or "0.0.0.0") in err


def test_listening_addresses_sees_a_wildcard_socket_in_a_child_process():
    """The helper the loopback checks rely on reads the whole process tree, and reports 0.0.0.0 as such (so that
    'all on 127.0.0.1' is no vacuous pass)."""
    port = free_port("0.0.0.0")
    code = ("import socket, subprocess, sys, time\n"
            "if sys.argv[1] == 'parent':\n"
            "    subprocess.Popen([sys.executable, '-c', sys.argv[2], 'child']); time.sleep(60)\n"
            "else:\n"
            f"    s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(1); time.sleep(60)\n")
    proc = spawn([sys.executable, "-c", code, "parent", code])
    try:
        wait_until(lambda: ("0.0.0.0", port) in listening_addresses(proc.pid), 30, what="listener")
        assert listening_addresses(proc.pid) == {("0.0.0.0", port)}
    finally:
        stop_group(proc.pid)
        proc.wait()
    assert listening_addresses(proc.pid) == set()


def test_stop_groups_kills_every_group_with_what_it_forked_and_waits_once():
    """Many groups are killed first and waited for together (`board down` of many servers: not 10 s each)."""
    import psutil

    from tvmnas.procs import stop_groups

    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)\n")
    procs = [spawn([sys.executable, "-c", code]) for _ in range(4)]
    wait_until(lambda: all(psutil.Process(p.pid).children() for p in procs), 30, what="forked children")
    children = [c.pid for p in procs for c in psutil.Process(p.pid).children()]
    assert stop_groups([p.pid for p in procs], timeout_s=10) == 4
    assert all(p.poll() is not None for p in procs)  # reaped: our own children
    wait_until(lambda: not any(psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE
                               for c in children), 10, what="the forked children to go")
    assert stop_groups([p.pid for p in procs]) == 0  # nothing left to stop


@pytest.mark.rpc
def test_start_tracker_and_the_tests_servers_listen_on_loopback_only():
    """A tracker from `start_tracker`, and one of tests/loopback.py's x86 servers (the tests' and benches' RPC farm)
    registered with it: each listens on its one port on 127.0.0.1 and nowhere else."""
    from tests.loopback import start_server, stop
    from tvmnas.measure.runner.rpc import RpcEndpoint

    tracker = RpcEndpoint("127.0.0.1", free_port(), "loopback-check")
    procs = [start_tracker(tracker.host, tracker.port)]
    try:
        assert listening_addresses(procs[0].pid) == {("127.0.0.1", tracker.port)}
        port = free_port()
        procs.append(start_server(port, tracker))
        assert listening_addresses(procs[1].pid) == {("127.0.0.1", port)}
        assert listening_addresses(procs[0].pid) == {("127.0.0.1", tracker.port)}  # nothing more once in use
    finally:
        for proc in procs:
            stop(proc)
    assert all(listening_addresses(proc.pid) == set() for proc in procs)


def test_every_rpc_command_tvmnas_builds_passes_its_host():
    """TVM's rpc_server and rpc_tracker listen on 0.0.0.0 unless told otherwise, and its Python Server / Tracker
    default to it too: every command line that starts one (tvmnas/, tests/, bench/) names --host, and none uses
    the Python classes."""
    command = re.compile(r"""["']-m["'],\s*["']tvm\.exec\.rpc_(server|tracker)["']""")
    api = re.compile(r"\brpc\.(Server|Tracker|PopenRPCServer)\(|\btracker\.Tracker\("
                     r"|from tvm\.rpc(\.\w+)? import [^\n]*\b(Server|Tracker)\b")
    found = 0
    for path in sorted(p for top in ("tvmnas", "tests", "bench") for p in (REPO / top).rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text()
        for match in command.finditer(text):
            found += 1
            statement = text[match.end():text.find(")", match.end())]
            assert '"--host"' in statement, f"{path.relative_to(REPO)}: {match.group(0)} without --host"
        assert not api.search(text), f"{path.relative_to(REPO)} starts a TVM RPC server or tracker in Python"
    assert found >= 3  # the tracker (procs.py), the boards' servers (farm.py), the tests' servers (loopback.py)


def test_free_port_binds_nothing_it_keeps():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free: free_port closed its socket


def test_free_port_takes_ipv6_hosts():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert free_port("::1") > 0


def test_warning_goes_to_the_given_stream(capsys):
    stream = io.StringIO()
    assert warn_exposed("0.0.0.0", "the RPC tracker", stream)
    assert WARNING.match(stream.getvalue().strip()) and capsys.readouterr().err == ""
