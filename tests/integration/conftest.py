"""The integration tier's boards: two emulated aarch64 RPC servers under a tracker, started once per session (the
root filesystem is created on the first run and cached). Skipped, with the reason, where this machine cannot
emulate aarch64 (no root, no binfmt_misc)."""

import os

import pytest

from tvmnas.errors import TvmnasError


@pytest.fixture(scope="session")
def boards(tmp_path_factory):
    from tvmnas.board import farm, rootfs

    try:
        rootfs.check_tools()
    except TvmnasError as err:
        pytest.skip(f"no aarch64 emulation here: {err}")
    root = rootfs.create_rootfs(log=lambda s: print(s, flush=True))
    state_file = tmp_path_factory.mktemp("farm") / "farm.json"
    state = farm.up(root, farm.FarmSettings(count=2, key=f"tvmnas-it-{os.getpid()}"), state_file)
    try:
        yield root, state, state_file
    finally:
        farm.down(root, state_file)
        assert not any(farm.is_ours(pid, "rpc_server") for pid in state.server_pids)
