"""`tvmnas board` bad input: one line, exit 2, nothing started or removed."""

import json

import pytest

from tvmnas.board.rootfs import READY, RECIPE
from tvmnas.cli import main


def one_line_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvmnas: error: ") and "\n" not in err and fragment in err, err


def test_board_verbs_without_a_farm_or_root_filesystem(tmp_path, capsys):
    rootfs = tmp_path / "rootfs"
    assert main(["board", "status", "--rootfs", str(rootfs)]) == 0
    assert "no farm is up" in capsys.readouterr().out
    assert main(["board", "down", "--rootfs", str(rootfs)]) == 0
    assert "stopped 0 server(s)" in capsys.readouterr().out
    assert main(["board", "run", str(tmp_path), "--rootfs", str(rootfs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvmnas: error: no board root filesystem at") and "\n" not in err


def test_board_up_refuses_a_count_below_one(tmp_path, capsys):
    assert main(["board", "up", "--emulated", "aarch64", "--count", "0", "--rootfs", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "tvmnas: error: board up: argument --count: must be >= 1, not 0"
    assert not (tmp_path / "r").exists()


def test_board_run_names_a_missing_runner_or_a_folder_that_is_no_bundle(tmp_path, capsys):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / READY).write_text(json.dumps({"recipe": RECIPE}))
    argv = ["board", "run", str(tmp_path), "--rootfs", str(rootfs)]
    assert main([*argv, "--runner", str(tmp_path / "missing-runner")]) == 2
    one_line_error(capsys, "no aarch64 runner at")
    runner = tmp_path / "tvmnas-run"
    runner.write_text("")
    assert main([*argv, "--runner", str(runner)]) == 2
    one_line_error(capsys, "is not a bundle (no manifest.json)")


def test_board_up_refuses_while_its_farm_is_up(tmp_path, capsys):
    import subprocess
    import sys

    from tvmnas.board.farm import FarmState, save_state, state_path

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / READY).write_text(json.dumps({"recipe": RECIPE}))
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # rpc_server"])
    try:
        save_state(state_path(rootfs), FarmState(str(rootfs), "k", ("127.0.0.1", 1), None, [server.pid]))
        code = main(["board", "up", "--emulated", "aarch64", "--rootfs", str(rootfs)])
        err = capsys.readouterr().err.strip()
        if "emulation is not available" in err:
            pytest.skip(f"this machine cannot emulate aarch64, so the refusal is not reached: {err}")
        assert code == 2 and err.startswith("tvmnas: error: a farm is already up under key 'k'"), err
        assert "\n" not in err
        assert server.poll() is None  # the running farm is left alone
    finally:
        server.kill()
        server.wait()
