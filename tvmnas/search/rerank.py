"""Re-ranking a finished search's shortlist by training from scratch.

The supernet ranks the networks within a latency band poorly against their accuracy trained from scratch (Kendall
tau +0.07 to +0.20 on cluttered-fashion-64: bench/results/band_ranking_cluttered-fashion-64.md). With `rerank` K, a
search ends by training its K most probable networks within the goal from scratch (`tvmnas train`'s recipe, for
`rerank_epochs` epochs of the search's images per epoch, on a seed of their own) and keeps the one with the best
validation accuracy: the search's validation split, so the test split stays unseen. Each training is a `TrainRun`
in the run folder's rerank/<i>/; a rerun reuses the finished ones and continues an unfinished one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tvmnas.arch import Arch
from tvmnas.data.datasets import SearchData
from tvmnas.dist import World
from tvmnas.errors import TvmnasError
from tvmnas.registry import read_json_object
from tvmnas.search.config import SearchConfig
from tvmnas.search.derive import most_probable_within
from tvmnas.search.latency import LatencyTable
from tvmnas.space import SearchSpace
from tvmnas.run_folder import SearchRun, TrainRun
from tvmnas.train.config import TrainConfig
from tvmnas.train.run import train_network

# added to the search's seed for the shortlist's trainings: they share no seed (initial weights, batch order) with
# a later `tvmnas train --seed S` of the network kept, whose accuracy would otherwise be picked for that seed's luck
RERANK_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Ranked:
    arch: Arch
    predicted_ms: float
    log_probability: float  # under the search's final path probabilities
    valid_acc: float  # trained from scratch, on the search's validation split
    train_seconds: float

    def to_json(self) -> dict:
        return {"arch": list(self.arch.ops), "predicted_latency_ms": self.predicted_ms,
                "log_probability": self.log_probability, "valid_acc": self.valid_acc,
                "train_seconds": self.train_seconds}


def rerank_settings(cfg: SearchConfig) -> TrainConfig:
    return TrainConfig(epochs=cfg.rerank_epochs, images_per_epoch=cfg.images_per_epoch, shards=cfg.shards,
                       valid_fraction=cfg.valid_fraction, seed=cfg.seed + RERANK_SEED_OFFSET, data=cfg.data,
                       limit=cfg.limit)


def rerank(cfg: SearchConfig, space: SearchSpace, table: LatencyTable, log_probs: list[list[float]],
           arch_of: Callable[[tuple[int, ...]], Arch], data: SearchData, run_dir: Path, world: World = World(),
           workers: int = 0, on_network: Callable[[int, int, Arch], None] | None = None) -> list[Ranked]:
    """The shortlist (`cfg.rerank` networks; `arch_of` maps a derivation's choices to its Arch), each trained, best
    validation accuracy first (ties: the more probable first). `on_network(i, n, arch)` is called before each
    training."""
    shortlist = most_probable_within(log_probs, table, cfg.latency_ms, cfg.rerank)
    settings = rerank_settings(cfg)
    unseen_test = dataclasses.replace(data, test=None)
    ranked = []
    for i, derived in enumerate(shortlist):
        arch = arch_of(derived.choices)
        folder = SearchRun(run_dir).rerank(i)
        if on_network:
            on_network(i, len(shortlist), arch)
        finished = world.broadcast(finished_training(folder, arch) if world.is_main else None)
        if finished is None:
            resume = world.broadcast(folder.checkpoint.exists() if world.is_main else None)
            result = train_network(settings, space, arch, unseen_test, folder.folder, world=world,
                                   workers=workers, resume=resume)
            finished = (result.valid_acc, result.seconds)
        ranked.append(Ranked(arch, derived.latency_ms, derived.log_probability, *finished))
    return sorted(ranked, key=lambda r: -r.valid_acc)


def finished_training(folder: TrainRun, arch: Arch) -> tuple[float, float] | None:
    """A finished training's validation accuracy and seconds (None if it has not finished); a folder that trains
    another network is a TvmnasError."""
    if not folder.summary.exists():
        return None
    summary = read_json_object(folder.summary, "rerank summary")
    if summary.get("arch") != list(arch.ops) or not isinstance(summary.get("valid_acc"), float):
        raise TvmnasError(f"{folder.folder} holds a training of another network than the shortlist's "
                          f"{' '.join(arch.ops)}")
    return summary["valid_acc"], summary["train_seconds"]
