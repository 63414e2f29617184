"""Image decoding and the ImageNet transforms, with PIL and numpy (no torchvision: its PyPI wheels do not load
beside the CPU build of torch this project pins).

Training: a random crop of 8-100% of the area with an aspect ratio in [3/4, 4/3], resized to the input size, and
a horizontal flip half of the time (Inception-style, as ImageNet training uses). Evaluation: the shorter side
resized to size / 0.875, then the center size x size crop. The randomness of each image comes from a seeded
generator, so a batch is the same in every run with the same seed, on any number of processes.
"""

from __future__ import annotations

import math

import numpy as np

from tvmnas.errors import TvmnasError

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_RESIZE = 0.875  # the center crop keeps this share of the resized shorter side


def read_image(path, channels: int):
    """The image at path as a PIL image, grey or RGB (one line when it cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise TvmnasError(f"corrupt image {path}: {err}") from None


def random_resized_crop(img, size: int, rng: np.random.Generator):
    """A random area/aspect crop resized to size x size (falls back to the center crop after 10 tries)."""
    from PIL import Image

    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def center_crop(img, size: int):
    from PIL import Image

    width, height = img.size
    scale = size / EVAL_RESIZE / min(width, height)
    img = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    width, height = img.size
    left, top = (width - size) // 2, (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_transformed(path, channels: int, size: int, train: bool, rng: np.random.Generator) -> np.ndarray:
    """uint8 C x size x size: the image after the training or the evaluation transform."""
    img = read_image(path, channels)
    if train:
        img = random_resized_crop(img, size, rng)
        if rng.random() < 0.5:
            img = img.transpose(0)  # PIL.Image.FLIP_LEFT_RIGHT
    else:
        img = center_crop(img, size)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
