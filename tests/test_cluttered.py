"""Registered cluttered data sets: generated deterministically from Fashion-MNIST-shaped IDX files, never mixing
splits, cached under TVMNAS_CACHE and reused, and named with --data like a folder."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from tvmnas.data import cluttered
from tvmnas.data.cluttered import ClutteredRecipe, generate, materialize
from tvmnas.data.datasets import load_search_data
from tvmnas.data.idx import read_idx, write_idx
from tvmnas import files
from tvmnas.errors import TvmnasError

SMALL = ClutteredRecipe(train_images=200, test_images=50)
NAME = "tiny-cluttered"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
TRAIN_GREY, TEST_GREY = 100, 200  # flat items: grey + label, so a canvas shows which split its items came from


def make_fashion_dir(folder, flat: bool = False, seed: int = 0):
    """A 28x28 Fashion-MNIST-shaped IDX folder (120 train and 40 test items, 10 classes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for prefix, n, grey in (("train", 120, TRAIN_GREY), ("t10k", 40, TEST_GREY)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        if flat:
            images = np.broadcast_to((grey + labels)[:, None, None], (n, 28, 28))
        else:
            images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def source(tmp_path):
    return make_fashion_dir(tmp_path / "fashion")


@pytest.fixture
def registered(monkeypatch, tmp_path):
    """Register SMALL as NAME and point the cache at tmp_path; returns a setter for the registered recipe."""
    monkeypatch.setenv("TVMNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(cluttered.DATA_SETS, NAME, SMALL)
    return lambda recipe: monkeypatch.setitem(cluttered.DATA_SETS, NAME, recipe)


def digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def test_same_seed_same_bytes_other_seed_differs(registered, source, tmp_path):
    first = materialize(NAME, source, cache_dir=tmp_path / "a")
    again = materialize(NAME, source, cache_dir=tmp_path / "b")
    assert first != again and digests(first) == digests(again)
    registered(ClutteredRecipe(train_images=200, test_images=50, seed=1))
    other = materialize(NAME, source, cache_dir=tmp_path / "c")
    assert digests(other)["train-images-idx3-ubyte.gz"] != digests(first)["train-images-idx3-ubyte.gz"]
    assert digests(other)["t10k-images-idx3-ubyte.gz"] != digests(first)["t10k-images-idx3-ubyte.gz"]


def test_labels_and_targets_present():
    rng = np.random.default_rng(3)
    items, labels = rng.integers(0, 256, (30, 28, 28)).astype(np.uint8), rng.integers(0, 10, 30).astype(np.uint8)
    out = generate(SMALL, items, labels, split_index=0, n_canvases=70)
    assert out.images.shape == (70, 64, 64) and out.images.dtype == np.uint8
    assert np.array_equal(out.labels, labels[out.source_index])
    assert np.bincount(out.source_index, minlength=30).min() >= 2  # permutations: every item used
    tops, lefts, sizes = out.boxes.T
    assert sizes.min() >= SMALL.item_min_px and sizes.max() <= SMALL.item_max_px
    assert tops.min() >= 0 and lefts.min() >= 0 and (tops + sizes).max() <= 64 and (lefts + sizes).max() <= 64
    assert len(set(zip(tops, lefts))) > 50 and len(set(sizes)) > 10  # varied positions and scales
    for canvas, index, (top, left, size) in zip(out.images, out.source_index, out.boxes):
        item = np.asarray(Image.fromarray(items[index]).resize((size, size), Image.BILINEAR))
        box = canvas[top:top + size, left:left + size]
        assert (box >= item).all() and box.max() >= item.max()  # max-composited: the target is never erased
    clutter = out.images.copy()
    for canvas, (top, left, size) in zip(clutter, out.boxes):
        canvas[top:top + size, left:left + size] = 0
    assert (clutter > SMALL.noise_max).mean() > 0.01  # distractors outside the target's box


def test_clutter_comes_from_other_items():
    source_index = np.tile(np.arange(3), 20)  # few items, many canvases: repeats are likely
    rows = np.arange(60)
    donors = cluttered.other_canvases(np.random.default_rng(0), rows, source_index)
    assert (source_index[donors] != source_index[rows]).all() and len(set(donors)) > 20


def test_splits_never_mix(registered, tmp_path):
    folder = materialize(NAME, make_fashion_dir(tmp_path / "flat", flat=True))
    noise = set(range(0, SMALL.noise_max + 1, SMALL.noise_step))
    for prefix, grey, n in (("train", TRAIN_GREY, 200), ("t10k", TEST_GREY, 50)):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        assert images.shape == (n, 64, 64) and labels.shape == (n,)
        assert set(np.unique(images)) <= noise | set(range(grey, grey + 10))
        for image, label in zip(images, labels):  # the target's own grey is there
            assert (image == grey + label).any()


def test_reused_then_regenerated_when_the_recipe_changes(registered, source):
    folder = materialize(NAME, source)
    assert folder == files.cache_root() / "data" / NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + ("recipe.json",))
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert materialize(NAME, source) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    before = digests(folder)
    registered(ClutteredRecipe(train_images=200, test_images=50, seed=5))
    assert materialize(NAME, source) == folder
    assert digests(folder)["train-images-idx3-ubyte.gz"] != before["train-images-idx3-ubyte.gz"]
    assert '"seed": 5' in (folder / "recipe.json").read_text()
    assert [p.name for p in folder.parent.iterdir()] == [NAME]  # no temporary or stale folders left


def test_load_search_data_resolves_a_registered_name(registered, source, monkeypatch, tmp_path):
    monkeypatch.setattr(cluttered, "FASHION_MNIST_DIR", source)
    monkeypatch.chdir(tmp_path)
    data = load_search_data(NAME, 1, 64, 0.25, 0)
    assert (len(data.train), len(data.valid), len(data.test)) == (150, 50, 50)
    assert data.train.images.shape[1:] == (1, 64, 64)
    assert os.path.isdir(files.cache_root() / "data" / NAME)


def test_unknown_names_and_missing_source(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TvmnasError, match=f"no data folder at nowhere .*registered data set.*{NAME}") as err:
        load_search_data("nowhere", 1, 64, 0.25, 0)
    assert "\n" not in str(err.value)
    with pytest.raises(TvmnasError, match="unknown data set 'nowhere'.*cluttered-fashion-64"):
        materialize("nowhere")
    with pytest.raises(TvmnasError, match="install Debian's dataset-fashion-mnist") as err:
        materialize(NAME, tmp_path / "no-fashion")
    assert "\n" not in str(err.value)
