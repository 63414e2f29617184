"""`tvmnas board` bad input: one line, exit 2, nothing started or removed."""

from tvmnas.cli import main


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
    assert capsys.readouterr().err.strip() == ("tvmnas: error: --count and --threads must be >= 1, not 0 and 4")
    assert not (tmp_path / "r").exists()
