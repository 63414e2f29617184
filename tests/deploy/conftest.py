import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def native_runner(tmp_path_factory):
    """The native runner, built with CMake against the installed TVM wheels."""
    import shutil

    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"building the native runner needs {' and '.join(missing)} (make toolchain, as root)")
    build = tmp_path_factory.mktemp("native")
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), f"-DPYTHON={sys.executable}"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "tvmnas-run"


def save_tiny_network(path: Path, ops: tuple[str, ...], info: dict) -> Path:
    """A tiny-space network with seeded weights and BatchNorm statistics that are not the identity (so that
    folding is exercised), saved as a network file."""
    from tvmnas.arch import Arch
    from tvmnas.model.network import Network
    from tvmnas.space import load_space
    from tvmnas.train.network_file import save_network

    space = load_space(str(REPO / "tests" / "data" / "tiny-space.json"))
    arch = Arch("tiny", ops)
    torch.manual_seed(0)
    net = Network(space, arch)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_network(path, space, arch, net.eval(), info)
    return path
