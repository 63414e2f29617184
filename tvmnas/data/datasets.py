"""Labelled images for the search and training: train (split into train/valid) and test, never mixed.

Sources: a folder with the four Fashion-MNIST IDX files (Debian's dataset-fashion-mnist installs them in
/usr/share/datasets/fashion-mnist), an ImageFolder-style directory (`train/<class>/*.jpg|png`, optional
`test/<class>/*`, or `<class>/*` directly), or the name of a registered data set (`tvmnas.data.cluttered`, e.g.
`cluttered-fashion-64`), generated from Fashion-MNIST into the cache once and then read as an IDX folder.

Two kinds of image set, with one interface (`len`, `labels`, `classes`, `subset`):
- `ImageSet`: decoded once into memory as uint8 arrays (IDX files, and image folders for spaces whose input is
  smaller than `STREAM_FROM` pixels: Fashion-MNIST-sized data fits in tens of MB);
- `FileImageSet`: file paths, decoded in DataLoader workers batch by batch with the ImageNet transforms (training:
  random resized crop and horizontal flip; evaluation: resize and center crop) for spaces of `STREAM_FROM`
  pixels and more, where a data set does not fit in memory.
`tvmnas.data.loading.batches` turns either into batches on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmnas.data.idx import FASHION_MNIST_DIR, read_idx
from tvmnas.errors import TvmnasError

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
STREAM_FROM = 64  # input sizes from this many pixels on are streamed from files (see FileImageSet)

# How pixels become network inputs, everywhere: training, export checks, and the deployed model's callers.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5  # on pixels scaled to [0, 1]


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8, N x C x H x W
    labels: np.ndarray  # int64, N
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)


@dataclass(frozen=True)
class FileImageSet:
    paths: tuple[str, ...]
    labels: np.ndarray  # int64, N
    classes: tuple[str, ...]
    channels: int
    size: int  # the network's input size: images are cropped and resized to size x size

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> FileImageSet:
        return FileImageSet(tuple(self.paths[i] for i in index), self.labels[index], self.classes, self.channels,
                            self.size)


@dataclass(frozen=True)
class SearchData:
    train: ImageSet | FileImageSet
    valid: ImageSet | FileImageSet  # carved from the training files; the architecture learns from it
    test: ImageSet | FileImageSet | None  # held out: the search never reads it


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 N x C x H x W -> float32 network input."""
    return (images.astype(np.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise TvmnasError(f"missing data file {folder / (stem + '.gz')}")


def load_idx_folder(folder: Path, split: str) -> ImageSet:
    images_path, labels_path = (_find(folder, s) for s in _IDX_FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise TvmnasError(f"corrupt data files {images_path} / {labels_path}: {images.shape} images, "
                          f"{labels.shape} labels")
    classes = tuple(str(c) for c in range(int(labels.max()) + 1))
    return ImageSet(images[:, None, :, :], labels.astype(np.int64), classes)


def list_image_folder(folder: Path, classes: tuple[str, ...] | None = None) -> tuple[list[Path], list[int],
                                                                                     tuple[str, ...]]:
    """The image files under `<folder>/<class>/` with their labels (class folders sorted by name)."""
    names = classes or tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if not names:
        raise TvmnasError(f"no class folders in {folder}")
    paths, labels = [], []
    for label, name in enumerate(names):
        for path in sorted((folder / name).glob("*")):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(label)
    if not paths:
        raise TvmnasError(f"no images under {folder}")
    return paths, labels, names


def load_image_folder(folder: Path, channels: int, size: int,
                      classes: tuple[str, ...] | None = None) -> ImageSet | FileImageSet:
    """An image folder in memory (resized to size x size), or as files to stream when size >= STREAM_FROM."""
    from tvmnas.data.transforms import read_image

    paths, labels, names = list_image_folder(folder, classes)
    label_array = np.array(labels, dtype=np.int64)
    if size >= STREAM_FROM:
        return FileImageSet(tuple(str(p) for p in paths), label_array, names, channels, size)
    images = [read_image(p, channels).resize((size, size)) for p in paths]
    arrays = [np.asarray(img, dtype=np.uint8) for img in images]
    return ImageSet(np.stack([a[None] if channels == 1 else a.transpose(2, 0, 1) for a in arrays]), label_array,
                    names)


def split_train_valid(train, valid_fraction: float, seed: int):
    """A seeded, class-agnostic split of the training set."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_valid = max(1, int(round(len(train) * valid_fraction)))
    return train.subset(np.sort(order[n_valid:])), train.subset(np.sort(order[:n_valid]))


def resolve_data(path: Path | str | None) -> Path:
    """The data folder for --data: a folder, a registered data-set name (materialized), or Fashion-MNIST."""
    from tvmnas.data import cluttered

    folder = Path(path) if path is not None else FASHION_MNIST_DIR
    if not folder.is_dir() and path is not None and str(path) in cluttered.DATA_SETS:
        return cluttered.materialize(str(path))
    if not folder.is_dir():
        hint = " (install Debian's dataset-fashion-mnist, or give --data)" if path is None else \
            f" (nor a registered data set: {', '.join(cluttered.list_data_sets())})"
        raise TvmnasError(f"no data folder at {folder}{hint}")
    return folder


def load_search_data(path: Path | None, channels: int, size: int, valid_fraction: float, seed: int,
                     limit: int | None = None) -> SearchData:
    """Train/valid/test from IDX files or an image folder; `limit` keeps the first N training images (tests)."""
    folder = resolve_data(path)
    if any((folder / (s + ext)).exists() for s in _IDX_FILES["train"] for ext in ("", ".gz")):
        train, test = load_idx_folder(folder, "train"), load_idx_folder(folder, "test")
        if train.images.shape[1:] != (channels, size, size):
            raise TvmnasError(f"data in {folder} has images of shape {train.images.shape[1:]}, "
                              f"the space expects {(channels, size, size)}")
    else:
        root = folder / "train" if (folder / "train").is_dir() else folder
        train = load_image_folder(root, channels, size)
        test = load_image_folder(folder / "test", channels, size, train.classes) \
            if (folder / "test").is_dir() else None
    if limit is not None:
        train = train.subset(np.arange(min(limit, len(train))))
    train, valid = split_train_valid(train, valid_fraction, seed)
    return SearchData(train, valid, test)
