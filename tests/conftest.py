import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def tiny_space_path() -> Path:
    return DATA / "tiny-space.json"


@pytest.fixture
def tiny_space(tiny_space_path):
    from tvmnas.space import load_space

    return load_space(str(tiny_space_path))


@pytest.fixture(scope="module")
def tiny_space_module():
    from tvmnas.space import load_space

    return load_space(str(DATA / "tiny-space.json"))


@pytest.fixture
def write_json(tmp_path):
    """Write an object (or raw text) to a JSON file under tmp_path and return its path."""

    def write(name: str, content) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


@pytest.fixture
def tiny_idx_dir(tmp_path):
    return make_idx_dir(tmp_path / "idx")


@pytest.fixture(scope="module")
def tiny_idx_dir_module(tmp_path_factory):
    return make_idx_dir(tmp_path_factory.mktemp("data") / "idx")


def make_idx_dir(folder):
    """A Fashion-MNIST-shaped IDX folder (8x8 grey images, 3 classes) whose class is visible in the pixels."""
    import numpy as np

    from tvmnas.data.idx import write_idx

    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in (("train", 240), ("t10k", 60)):
        labels = rng.integers(0, 3, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
        for i, label in enumerate(labels):  # a bright band whose row depends on the class
            images[i, 2 * label: 2 * label + 2, :] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder
