import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def native_runner(tmp_path_factory):
    """The native runner, built with CMake against the installed TVM wheels."""
    build = tmp_path_factory.mktemp("native")
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), f"-DPYTHON={sys.executable}"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "tvmnas-run"
