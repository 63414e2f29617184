"""The settings of training one searched network; saved in the network file."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tvmnas.errors import TvmnasError
from tvmnas.search.config import check_shards

INITS = ("scratch", "supernet")
# settings added since trainings were first saved, with the value those earlier trainings used
EARLIER_DEFAULTS = {"shards": 1}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    init: str = "scratch"  # or "supernet": start from the search's weights of the chosen paths
    images_per_epoch: int | None = None  # a fresh seeded sample of the training split each epoch; None = all
    batch_size: int = 128
    shards: int = 1  # each batch as this many fixed shards (see `tvmnas.dist.Shards`)
    lr: float = 0.1  # SGD with Nesterov momentum, cosine schedule over all steps
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    valid_fraction: float = 1 / 12  # the same split as the search: the test set stays unseen until the end
    seed: int = 0
    data: str | None = None  # IDX folder or ImageFolder root; None = the installed Fashion-MNIST
    limit: int | None = None  # use only the first N training images (smoke tests)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TvmnasError(f"need at least one training epoch, not {self.epochs}")
        if self.init not in INITS:
            raise TvmnasError(f"unknown initialization {self.init!r}; known: {', '.join(INITS)}")
        if self.images_per_epoch is not None and self.images_per_epoch < self.batch_size:
            raise TvmnasError(f"images_per_epoch must be at least the batch size ({self.batch_size})")
        check_shards(self.batch_size, self.shards)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str) -> TrainConfig:
        try:
            return cls(**{**EARLIER_DEFAULTS, **data})
        except TypeError as err:
            raise TvmnasError(f"{source}: {err}") from None
