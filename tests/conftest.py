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


@pytest.fixture
def write_json(tmp_path):
    """Write an object (or raw text) to a JSON file under tmp_path and return its path."""

    def write(name: str, content) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write
