"""Batches on the device from either kind of image set (see `tvmnas.data.datasets`).

An in-memory set is sliced and normalized in the training process; a file set is decoded in DataLoader worker
processes (`workers`), into pinned memory when the device is a GPU, and copied without blocking. The batches are
given as lists of indices (the caller's seeded order, already sharded for its rank), so the DataLoader only
decodes, and every process of a distributed run sees exactly the images its shard names.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from tvmnas.data.datasets import FileImageSet, ImageSet, normalize
from tvmnas.data.transforms import load_transformed
from tvmnas.dist import World
from tvmnas.errors import TvmnasError


class _Decoded(torch.utils.data.Dataset):
    """A file set's image i after its transform, with randomness from (seed, epoch, i)."""

    def __init__(self, images: FileImageSet, train: bool, seed: int, epoch: int) -> None:
        self.images, self.train, self.seed, self.epoch = images, train, seed, epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        array = load_transformed(self.images.paths[i], self.images.channels, self.images.size, self.train, rng)
        return torch.from_numpy(normalize(array[None])[0]), int(self.images.labels[i])


def batches(images: ImageSet | FileImageSet, index_batches: Sequence[np.ndarray], device: torch.device,
            train: bool = False, seed: int = 0, epoch: int = 0, workers: int = 0
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input, labels) per batch of indices, on `device`, input channels-last (faster depthwise convolutions on
    CPU, and the layout tensor cores want on GPU)."""
    if isinstance(images, ImageSet):
        for index in index_batches:
            x = torch.from_numpy(normalize(images.images[index]))
            yield _to(x, torch.from_numpy(images.labels[index]), device)
        return
    loader = torch.utils.data.DataLoader(_Decoded(images, train, seed, epoch),
                                         batch_sampler=[list(map(int, b)) for b in index_batches],
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    try:
        for x, y in loader:
            yield _to(x, y, device)
    except TvmnasError as err:  # raised in a worker (a corrupt image): torch adds the worker's traceback to it
        raise TvmnasError(worker_error_line(str(err))) from None


def worker_error_line(text: str) -> str:
    """The one line of a TvmnasError raised in a DataLoader worker, without the traceback torch wraps it in."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    prefix = f"{TvmnasError.__module__}.{TvmnasError.__name__}: "
    return last.removeprefix(prefix)


def _to(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous(memory_format=torch.channels_last)
    if device.type != "cpu":
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x, y


def epoch_batches(n: int, size: int, count: int | None, rng: np.random.Generator, world: World,
                  wrap: bool = False, take: int | None = None, multiple: int = 1) -> list[np.ndarray]:
    """This rank's shards of an epoch's global batches of `size` from a seeded permutation of n images (its first
    `take` when given): the same global batches on any number of ranks, and no image twice across ranks.
    `count` batches (all that fit when None); with `wrap`, a batch that would run past the end starts again at
    the beginning (validation batches for architecture steps). A last partial batch is cut to a multiple of the
    world size and of `multiple` (the shards of a batch, a multiple of the world size)."""
    order = rng.permutation(n)[:take]
    n = len(order)
    out, pos = [], 0
    while count is None or len(out) < count:
        if pos + size > n:
            if not wrap:
                unit = max(world.size, multiple)
                tail = order[pos:pos + (n - pos) // unit * unit]
                if len(tail):
                    out.append(world.shard(tail))
                break
            pos = 0
        out.append(world.shard(order[pos:pos + size]))
        pos += size
    return out


def in_order(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches over n images (evaluation)."""
    return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def first_images(images, index: np.ndarray) -> np.ndarray:
    """Network inputs of some images, as numpy (the bundle's example input)."""
    x, _ = next(batches(images, [index], torch.device("cpu")))
    return x.contiguous().numpy()
