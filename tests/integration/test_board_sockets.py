"""Integration tier (issue 23): the tracker and the emulated servers that `board up` starts listen on 127.0.0.1
only, read from the sockets of their process trees (the servers run under qemu-user in the root filesystem's
chroot, in this machine's network namespace)."""

import pytest

from tvmnas.procs import is_ours, listening_addresses

pytestmark = pytest.mark.integration


def test_the_boards_tracker_and_servers_listen_on_loopback_only(boards):
    _root, state, _ = boards
    assert state.tracker_pid is not None and is_ours(state.tracker_pid, "rpc_tracker")
    tracker = listening_addresses(state.tracker_pid)
    assert tracker == {tuple(state.tracker)} and state.tracker[0] == "127.0.0.1", tracker
    servers = {pid: listening_addresses(pid) for pid in state.server_pids if is_ours(pid, "rpc_server")}
    assert servers, "no server of the farm still runs"  # a fault test may have killed one, never all
    for pid, addresses in servers.items():
        assert addresses and all(ip == "127.0.0.1" for ip, _port in addresses), (pid, addresses)
        assert len(addresses) == 1, (pid, addresses)  # its one RPC port: nothing else listens
