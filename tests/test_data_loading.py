"""Image folders of large images are streamed from files, decoded in DataLoader workers with the ImageNet
transforms; small ones are decoded once into memory."""

import numpy as np
import pytest
import torch

from tvmnas.data.datasets import FileImageSet, ImageSet, load_search_data
from tvmnas.data.loading import batches
from tvmnas.data.transforms import center_crop, random_resized_crop


@pytest.fixture
def jpeg_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (90 + i, 120, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.{'jpg' if i % 2 else 'png'}")
    return tmp_path


def test_large_images_stream_through_workers(jpeg_folder):
    data = load_search_data(jpeg_folder, 3, 64, 0.25, 0)
    assert isinstance(data.train, FileImageSet) and len(data.train) + len(data.valid) == 24 and len(data.test) == 8
    index = [np.arange(0, 4), np.arange(4, 8)]
    first = [x for x, _ in batches(data.train, index, torch.device("cpu"), train=True, seed=1, epoch=0, workers=2)]
    again = [x for x, _ in batches(data.train, index, torch.device("cpu"), train=True, seed=1, epoch=0, workers=0)]
    other = [x for x, _ in batches(data.train, index, torch.device("cpu"), train=True, seed=1, epoch=1)]
    assert first[0].shape == (4, 3, 64, 64) and first[0].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same crops in workers as in process
    assert not torch.equal(first[0], other[0])  # another epoch, other crops
    x, y = next(batches(data.test, [np.arange(8)], torch.device("cpu")))
    assert x.shape == (8, 3, 64, 64) and y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_is_one_line_in_process_and_in_workers(jpeg_folder, workers):
    from tvmnas.errors import TvmnasError

    (jpeg_folder / "train" / "a" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    data = load_search_data(jpeg_folder, 3, 64, 0.0001, 0)
    index = [np.arange(len(data.train))]
    with pytest.raises(TvmnasError) as raised:
        list(batches(data.train, index, torch.device("cpu"), train=True, workers=workers))
    text = str(raised.value)
    assert len(text.splitlines()) == 1 and text.startswith("corrupt image ") and "1.jpg" in text, text


def test_small_images_are_held_in_memory(jpeg_folder):
    data = load_search_data(jpeg_folder, 1, 16, 0.25, 0)
    assert isinstance(data.train, ImageSet) and data.train.images.shape[1:] == (1, 16, 16)


def test_transforms():
    from PIL import Image

    img = Image.fromarray(np.zeros((100, 200, 3), np.uint8))
    rng = np.random.default_rng(0)
    assert all(random_resized_crop(img, 32, rng).size == (32, 32) for _ in range(20))
    assert center_crop(img, 32).size == (32, 32)
