"""tvmnas as an installed package (not the editable checkout): built as a wheel, installed into a folder of its
own and run from another folder, it finds its targets and spaces and profiles at the default level."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel installed into a folder (its dependencies are this environment's)."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return target


def run(installed, cwd, *argv):
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, "-m", "tvmnas.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_installed_package_runs_from_another_folder(installed, tmp_path):
    where = run(installed, tmp_path, "spaces")
    assert where.returncode == 0, where.stderr
    assert "fashion-mnist:" in where.stdout and "proxyless-imagenet:" in where.stdout
    targets = run(installed, tmp_path, "targets")
    assert targets.returncode == 0 and "x86-cpu:" in targets.stdout
    origin = subprocess.run([sys.executable, "-c", "import tvmnas, sys; print(tvmnas.__file__)"], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(installed)), capture_output=True, text=True)
    assert origin.stdout.strip().startswith(str(installed))  # the installed copy, not the checkout


def test_installed_package_profiles(installed, tmp_path):
    space = tmp_path / "tiny.json"
    space.write_text((REPO / "tests" / "data" / "tiny-space.json").read_text())
    db = tmp_path / "lat.db"
    proc = run(installed, tmp_path, "profile", "--space", space, "--target", "x86-cpu", "--tune-trials", "0",
               "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "7 candidates, 7 measured now" in proc.stdout
    export = run(installed, tmp_path, "db-export", tmp_path / "rows.json", "--db", db)
    assert export.returncode == 0 and len(json.loads((tmp_path / "rows.json").read_text())) == 9
