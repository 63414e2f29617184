"""`board down` stops exactly what `board up` recorded (and the workers those processes forked)."""

import subprocess
import sys
import time

from tvmnas.board.farm import FarmState, down, load_state, save_state, state_path
from tvmnas.procs import is_ours
from tvmnas.board.rootfs import READY, RECIPE, is_ready, mounts_under

# stands in for an rpc_server: its command line holds the marker, and it forks a worker like popen_worker does
FAKE_SERVER = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)  # rpc_server"


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_down_stops_recorded_servers_and_their_workers_only(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    server = subprocess.Popen([sys.executable, "-c", FAKE_SERVER], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", FAKE_SERVER], start_new_session=True)
    try:
        for _ in range(50):
            if children(server.pid):
                break
            time.sleep(0.1)
        (worker,) = children(server.pid)
        save_state(state_path(rootfs), FarmState(str(rootfs), "k", ("127.0.0.1", 1), None, [server.pid]))
        assert load_state(state_path(rootfs)).server_pids == [server.pid]
        assert down(rootfs) == (1, False)
        server.wait(timeout=10)
        time.sleep(0.2)
        assert not is_ours(worker, "sleep")
        assert bystander.poll() is None  # not recorded: left running
        assert load_state(state_path(rootfs)) is None
    finally:
        for proc in (server, bystander):
            proc.kill()
            proc.wait()


def test_a_reused_pid_is_not_killed(tmp_path):
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        rootfs = tmp_path / "rootfs"
        save_state(state_path(rootfs), FarmState(str(rootfs), "k", ("127.0.0.1", 1), other.pid, [other.pid]))
        assert down(rootfs) == (0, False)  # its command line is no rpc_server / rpc_tracker
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_rootfs_ready_only_for_the_current_recipe(tmp_path):
    assert not is_ready(tmp_path)
    (tmp_path / READY).write_text('{"recipe": 0}')
    assert not is_ready(tmp_path)
    (tmp_path / READY).write_text(f'{{"recipe": {RECIPE}}}')
    assert is_ready(tmp_path)


def test_mounts_under_finds_proc_only_below_its_path(tmp_path):
    assert mounts_under(tmp_path) == []
    assert "/proc" in mounts_under("/proc")
