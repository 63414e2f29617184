"""Start, inspect and stop a farm of emulated boards: RPC servers running in the arm64 root filesystem,
registered with a tracker under one key.

What `up` starts is written to a state file beside the root filesystem; `down` stops exactly those processes (each
runs in a session of its own, so its `popen_worker` children stop with it) and nothing else.

The tracker and servers listen on `FarmSettings.host`, 127.0.0.1 by default: they run whatever module they are
sent, so another address lets anyone who reaches it run code here (`tvmnas board up --host` warns).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tvmnas.board.rootfs import PYTHON, extra_runtime_library, in_root, runtime_env
from tvmnas.errors import TvmnasError
from tvmnas.measure.runner.rpc import RpcEndpoint, count_servers
from tvmnas.procs import LOOPBACK, free_port, is_ours, spawn, start_tracker, stop_group, stop_groups, wait_until

MOUNTS = (("proc", "proc", "proc"), ("tmpfs", "dev/shm", "tmpfs"))  # (type, path in the rootfs, source)


@dataclass(frozen=True)
class FarmSettings:
    count: int = 2  # servers to start
    key: str = "arm-aarch64"
    tracker: tuple[str, int] | None = None  # an existing tracker; None starts one on `host`
    host: str = LOOPBACK  # where the tracker and servers listen (each passes it: TVM's own default is 0.0.0.0)
    threads: int = 4  # TVM_NUM_THREADS of each server: the arm-aarch64 target's num-cores, as profile timings use
    start_timeout_s: float = 180.0  # an emulated server takes a while to import TVM


@dataclass
class FarmState:
    rootfs: str
    key: str
    tracker: tuple[str, int]
    tracker_pid: int | None  # None: the tracker was not started by us
    server_pids: list[int] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)

    def endpoint(self) -> RpcEndpoint:
        return RpcEndpoint(self.tracker[0], self.tracker[1], self.key)


def state_path(rootfs: Path) -> Path:
    """Where `up` records what it started (the default: beside the root filesystem)."""
    return Path(rootfs).parent / "farm.json"


def load_state(path: Path) -> FarmState | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data["tracker"] = tuple(data["tracker"])
    return FarmState(**data)


def save_state(path: Path, state: FarmState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1) + "\n")
    os.replace(tmp, path)


def _mount(rootfs: Path) -> list[str]:
    done = []
    for kind, rel, source in MOUNTS:
        point = Path(rootfs) / rel
        point.mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(point):
            subprocess.run(["mount", "-t", kind, source, str(point)], check=True, capture_output=True)
            done.append(str(point))
    return done


def _unmount(points: list[str]) -> None:
    for point in reversed(points):
        subprocess.run(["umount", "-l", point], capture_output=True)


def server_command(rootfs: Path, settings: FarmSettings, tracker: tuple[str, int], port: int) -> list[str]:
    """An emulated rpc_server listening on settings.host:port only, registered with the tracker."""
    return in_root(rootfs, PYTHON, "-m", "tvm.exec.rpc_server", "--host", settings.host, "--port", str(port),
                   "--port-end", str(port + 1), "--tracker", f"{tracker[0]}:{tracker[1]}", "--key", settings.key,
                   "--load-library", extra_runtime_library(), env=runtime_env(settings.threads))


def start_servers(state: FarmState, state_file: Path, settings: FarmSettings, count: int) -> None:
    """Start `count` more servers, recording each pid as soon as it exists; waits until the tracker sees them."""
    endpoint = state.endpoint()
    before = count_servers(endpoint)
    for _ in range(count):
        state.server_pids.append(spawn(server_command(Path(state.rootfs), settings, state.tracker,
                                                        free_port(settings.host))).pid)
        save_state(state_file, state)
    wait_until(lambda: count_servers(endpoint) >= before + count, settings.start_timeout_s,
               what=f"{count} emulated RPC server(s)")


def up(rootfs: Path, settings: FarmSettings, state_file: Path | None = None) -> FarmState:
    """Start the tracker (unless one is given) and the servers, recording them in `state_file` (default
    `state_path(rootfs)`). Refuses when the farm recorded there is up."""
    state_file = Path(state_file or state_path(rootfs))
    if settings.count < 1:
        raise TvmnasError(f"--count must be >= 1, not {settings.count}")
    old = load_state(state_file)
    if old is not None and any(is_ours(p, "rpc_server") for p in old.server_pids):
        raise TvmnasError(f"a farm is already up under key {old.key!r} (tracker {old.tracker[0]}:{old.tracker[1]}):"
                          " run `tvmnas board down` first")
    state = FarmState(str(rootfs), settings.key, settings.tracker or (settings.host, 0), None)
    try:
        state.mounts = _mount(rootfs)
        if settings.tracker is None:
            port = free_port(settings.host)
            state.tracker = (settings.host, port)
            tracker = start_tracker(settings.host, port)
            state.tracker_pid = tracker.pid
            save_state(state_file, state)
        start_servers(state, state_file, settings, settings.count)
    except (OSError, TimeoutError, subprocess.CalledProcessError) as err:
        down(rootfs, state_file)
        raise TvmnasError(f"board up failed: {err}") from None
    return state


def down(rootfs: Path, state_file: Path | None = None) -> tuple[int, bool]:
    """Stop every server and the tracker that `up` started, and unmount what it mounted. Returns (servers
    stopped, tracker stopped)."""
    state_file = Path(state_file or state_path(rootfs))
    state = load_state(state_file)
    if state is None:
        return 0, False
    stopped = stop_groups(state.server_pids, "rpc_server")
    tracker = state.tracker_pid is not None and stop_group(state.tracker_pid, "rpc_tracker")
    _unmount(state.mounts)
    state_file.unlink()
    return stopped, tracker


def run_native(rootfs: Path, runner: Path, bundle: Path, input_npy: Path, args: list[str],
               timeout_s: float = 600.0):
    """Run the aarch64 native runner on a bundle and an input inside the board's root filesystem (against the
    runtime libraries of its TVM wheels). All three are copied in for the run and removed after. Returns the
    finished process (stdout, stderr, returncode)."""
    import shutil
    import uuid

    from tvmnas.board.rootfs import VENV

    work = f"/tmp/tvmnas-native-{uuid.uuid4().hex[:8]}"
    host_work = Path(rootfs) / work.lstrip("/")
    try:
        shutil.copytree(bundle, host_work / "bundle")
        shutil.copy2(runner, host_work / "tvmnas-run")
        shutil.copy2(input_npy, host_work / "input.npy")
        site = f"{VENV}/lib/python3.11/site-packages"
        env = [*runtime_env(1), f"LD_LIBRARY_PATH={site}/tvm/lib:{site}/tvm_ffi/lib"]
        cmd = in_root(rootfs, f"{work}/tvmnas-run", f"{work}/bundle", f"{work}/input.npy", *args, env=env)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=host_work)
    finally:
        shutil.rmtree(host_work, ignore_errors=True)
