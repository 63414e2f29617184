"""Create (once, cached) an arm64 Debian root filesystem that runs the TVM runtime under qemu-user emulation.

Steps: check emulation (binfmt_misc with qemu-aarch64), mmdebstrap a minimal bookworm with Python, download
the aarch64 wheels of the TVM runtime and its Python dependencies in the versions installed here (Debian's
NumPy is too old for them), install them into a venv inside the root filesystem, and check that the runtime
imports there. The tree is built under `<dir>.partial` and renamed when
every step has passed, so an interrupted creation never leaves a half-made root filesystem in use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from tvmnas.errors import TvmnasError
from tvmnas.files import cache_root

BINFMT = Path("/proc/sys/fs/binfmt_misc")
VENV = "/opt/tvmnas-venv"  # inside the root filesystem
PYTHON = f"{VENV}/bin/python"
PACKAGES = ("python3", "python3-venv")
# the runtime and what its RPC server imports (cloudpickle and psutil for its popen workers)
WHEELS = ("apache-tvm", "apache-tvm-ffi", "numpy", "ml_dtypes", "typing_extensions", "cloudpickle", "psutil")
RECIPE = 2  # bump when the steps or WHEELS change: older root filesystems are created again
READY = ".tvmnas-rootfs.json"


@dataclass(frozen=True)
class RootfsSettings:
    suite: str = "bookworm"  # Debian release; its python3 (3.11) must match the wheels' cp311
    python_tag: str = "3.11"
    mirror: str | None = None  # Debian mirror URL (default: mmdebstrap's)


def default_rootfs() -> Path:
    return cache_root() / "boards" / "aarch64" / "rootfs"


def runtime_env(threads: int) -> list[str]:
    """The environment of TVM processes in the root filesystem (runtime library only: fast imports)."""
    return ["PATH=/usr/bin:/bin", "HOME=/root", "TVM_USE_RUNTIME_LIB=1", "PYTHONUNBUFFERED=1",
            f"TVM_NUM_THREADS={threads}"]


def extra_runtime_library() -> str:
    """The library with meta-schedule's input-filling functions, which the runtime-only server must load."""
    return f"{VENV}/lib/python3.11/site-packages/tvm/lib/libtvm_runtime_extra.so"


def is_ready(rootfs: Path) -> bool:
    try:
        return json.loads((Path(rootfs) / READY).read_text()).get("recipe") == RECIPE
    except (OSError, ValueError):
        return False


def ensure_emulation() -> None:
    """qemu-aarch64 registered with binfmt_misc (mounting binfmt_misc and enabling the entry when needed)."""
    entry = BINFMT / "qemu-aarch64"
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
    if entry.exists() and "enabled" in entry.read_text():
        return
    if shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not (entry.exists() and "enabled" in entry.read_text()):
        raise TvmnasError("aarch64 emulation is not available: install Debian's qemu-user-static and "
                          "binfmt-support, and make sure binfmt_misc can be mounted (needs root)")


def check_tools() -> None:
    if os.geteuid() != 0:
        raise TvmnasError("emulated boards need root (mmdebstrap, chroot and mounts)")
    missing = [tool for tool in ("mmdebstrap", "chroot", "mount") if not shutil.which(tool)]
    if missing:
        raise TvmnasError(f"emulated boards need {', '.join(missing)}: apt-get install mmdebstrap")
    ensure_emulation()


def _run(cmd: list[str], what: str, log: Callable[[str], None]) -> None:
    log(what)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TvmnasError(f"{what} failed (exit {proc.returncode}): {last[0]}")


def download_wheels(dest: Path, settings: RootfsSettings, log: Callable[[str], None]) -> list[Path]:
    """The aarch64 wheels of the runtime's packages, in the versions installed in this environment."""
    wanted = [f"{name}=={version(name)}" for name in WHEELS]
    abi = "cp" + settings.python_tag.replace(".", "")
    platforms = [arg for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_24", "manylinux_2_17",
                                 "manylinux2014") for arg in ("--platform", f"{tag}_aarch64")]
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
          "--implementation", "cp", "--python-version", settings.python_tag,
          "--abi", abi, "--abi", "abi3", "--abi", "none", *platforms, "--platform", "any", "-d", str(dest), *wanted],
         f"download {', '.join(wanted)} for aarch64", log)
    return sorted(dest.glob("*.whl"))


def in_root(rootfs: Path, *cmd: str, env: list[str] | None = None) -> list[str]:
    """A command line that runs `cmd` inside the root filesystem (emulated through binfmt_misc)."""
    return ["chroot", str(rootfs), "/usr/bin/env", "-i", *(env or runtime_env(1)), *cmd]


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (deepest first)."""
    import psutil

    root = str(Path(path).resolve())
    points = [part.mountpoint for part in psutil.disk_partitions(all=True)]
    return sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a root filesystem tree, first unmounting what an interrupted run left mounted inside it (proc,
    sys, dev): deleting through such a mount would delete the host's files."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = mounts_under(path)
    if left:
        raise TvmnasError(f"cannot remove {path}: {left[0]} is still mounted")
    shutil.rmtree(path)


def create_rootfs(rootfs: Path | None = None, settings: RootfsSettings = RootfsSettings(),
                  log: Callable[[str], None] = print) -> Path:
    """The ready root filesystem at `rootfs`, created when missing (several minutes, about 350 MB)."""
    rootfs = Path(rootfs or default_rootfs())
    if is_ready(rootfs):
        return rootfs
    check_tools()
    partial = rootfs.with_name(rootfs.name + ".partial")
    if partial.exists():
        remove_tree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    _run(["mmdebstrap", "--quiet", "--variant=apt", "--arch=arm64", f"--include={','.join(PACKAGES)}",
          settings.suite, str(partial), *([settings.mirror] if settings.mirror else [])],
         f"mmdebstrap {settings.suite} arm64 into {partial} (several minutes)", log)
    wheels = download_wheels(partial / "tmp" / "wheels", settings, log)
    inside = [f"/tmp/wheels/{w.name}" for w in wheels]
    _run(in_root(partial, "/usr/bin/python3", "-m", "venv", VENV),
         f"create {VENV} in the root filesystem", log)
    _run(in_root(partial, f"{VENV}/bin/pip", "install", "-q", "--no-deps", "--no-index", *inside),
         "install the aarch64 wheels (emulated, about a minute)", log)
    _run(in_root(partial, PYTHON, "-c", "import tvm, tvm.exec.rpc_server, cloudpickle, psutil; "
                                                 "tvm.get_global_func('rpc.CreateEventDrivenServer')"),
         "check the TVM runtime in the root filesystem", log)
    shutil.rmtree(partial / "tmp" / "wheels")
    if rootfs.exists():  # an older recipe's tree
        remove_tree(rootfs)
    (partial / READY).write_text(json.dumps({"recipe": RECIPE, "suite": settings.suite, "packages": list(PACKAGES),
                                             "wheels": [w.name for w in wheels]}, indent=1) + "\n")
    os.replace(partial, rootfs)
    return rootfs
