"""`tvmnas board up` puts the tracker and the emulated servers on 127.0.0.1 unless --host says otherwise, and then
warns in one line on stderr (issue 23). No emulation here: what would start processes is replaced."""

import json

import pytest

from tvmnas.board import farm, rootfs
from tvmnas.board.farm import FarmSettings, FarmState, server_command
from tvmnas.board.rootfs import READY, RECIPE
from tvmnas.cli import main


def host_of(cmd: list[str]) -> str:
    assert cmd.count("--host") == 1, cmd
    return cmd[cmd.index("--host") + 1]


def test_the_boards_server_command_listens_on_loopback_by_default(tmp_path):
    cmd = server_command(tmp_path, FarmSettings(), ("127.0.0.1", 9190), 9000)
    assert "tvm.exec.rpc_server" in cmd and host_of(cmd) == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "9000" and cmd[cmd.index("--port-end") + 1] == "9001"  # that port only
    assert host_of(server_command(tmp_path, FarmSettings(host="10.0.0.2"), ("10.0.0.2", 9190), 9000)) == "10.0.0.2"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_up_starts_the_tracker_and_servers_on_its_host(tmp_path, monkeypatch, host):
    started = {}

    class TrackerProcess:
        pid = 0

    def start_tracker(h, port):
        started["tracker"] = (h, port)
        return TrackerProcess()

    def start_servers(state, state_file, settings, count):
        started["servers"] = [server_command(tmp_path, settings, state.tracker, 1) for _ in range(count)]

    monkeypatch.setattr(farm, "_mount", lambda root: [])
    monkeypatch.setattr(farm, "start_tracker", start_tracker)
    monkeypatch.setattr(farm, "start_servers", start_servers)
    state = farm.up(tmp_path / "rootfs", FarmSettings(count=2, host=host), tmp_path / "farm.json")
    assert started["tracker"][0] == host and state.tracker == started["tracker"]
    assert [host_of(cmd) for cmd in started["servers"]] == [host, host]
    assert all(f"{host}:{state.tracker[1]}" in cmd for cmd in started["servers"])


@pytest.fixture
def no_boards(tmp_path, monkeypatch):
    """`board up` up to the farm: a ready root filesystem, emulation, and an `up` that records its settings."""
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / READY).write_text(json.dumps({"recipe": RECIPE}))
    calls = []

    def fake_up(root_path, settings, state_file=None):
        calls.append(settings)
        tracker = settings.tracker or (settings.host, 9190)
        return FarmState(str(root_path), settings.key, tracker, None if settings.tracker else 1, [2, 3])

    monkeypatch.setattr(rootfs, "create_rootfs", lambda path, settings=None, log=None: path)
    monkeypatch.setattr(rootfs, "ensure_emulation", lambda: None)
    monkeypatch.setattr(farm, "up", fake_up)
    return root, calls


def board_up(root, *flags):
    return main(["board", "up", "--emulated", "aarch64", "--rootfs", str(root), *flags])


def test_board_up_on_loopback_warns_nothing(no_boards, capsys):
    root, calls = no_boards
    assert board_up(root) == 0
    assert capsys.readouterr().err == ""
    assert calls[0].host == "127.0.0.1"
    assert board_up(root, "--host", "localhost") == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flags, what", [
    (["--host", "0.0.0.0"], "the RPC tracker and the emulated boards' RPC servers will listen on 0.0.0.0"),
    (["--host", "192.168.7.2", "--tracker", "192.168.7.1:9190"],
     "the emulated boards' RPC servers will listen on 192.168.7.2:"),
])
def test_board_up_on_another_address_warns_in_one_line(no_boards, capsys, flags, what):
    root, calls = no_boards
    assert board_up(root, *flags) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("tvmnas: warning: ") and what in err, err
    assert "can run code on this machine as" in err and "SSH tunnel" in err
    assert "tvmnas: warning" not in captured.out
    assert calls[0].host == flags[1]
