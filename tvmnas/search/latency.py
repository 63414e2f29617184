"""Expected latency of the supernet from the latency database, and the ProxylessNAS latency losses.

E[LAT] = fixed parts (stem, first block, head) + sum over layers of sum_i p_i * latency_i, with `zero` costing 0;
it is differentiable in alpha through p = softmax(alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tvmnas.errors import TvmnasError
from tvmnas.latency_db import LatencyDB, LatencyScope
from tvmnas.measure.level import parse_level
from tvmnas.search.config import LOSSES
from tvmnas.space import SearchSpace


@dataclass(frozen=True)
class LatencyTable:
    fixed_ms: float
    layer_ms: tuple[tuple[float, ...], ...]  # per searchable layer, per choice (in the layer's choice order)
    flagged: tuple[str, ...] = ()  # the candidates whose rows the protocol flagged as noisy ("key shape")

    def expected_ms(self, probabilities: list[torch.Tensor]) -> torch.Tensor:
        total = torch.tensor(self.fixed_ms, device=probabilities[0].device)
        for probs, lat in zip(probabilities, self.layer_ms):
            total = total + (probs * torch.tensor(lat, dtype=probs.dtype, device=probs.device)).sum()
        return total

    def arch_ms(self, choice_indices: list[int]) -> float:
        return self.fixed_ms + sum(lat[i] for lat, i in zip(self.layer_ms, choice_indices))

    @property
    def min_ms(self) -> float:
        return self.fixed_ms + sum(min(lat) for lat in self.layer_ms)

    @property
    def max_ms(self) -> float:
        return self.fixed_ms + sum(max(lat) for lat in self.layer_ms)


def load_table(db_path: Path, space: SearchSpace, scope: LatencyScope) -> LatencyTable:
    """The search's latency table from the database file (one clear line when there is no such file)."""
    if not Path(db_path).is_file():
        raise TvmnasError(f"no latency database at {db_path}: run `tvmnas profile --space {space.name} "
                          f"--tune-trials {parse_level(scope.level)}` for the target first")
    with LatencyDB(db_path) as db:
        return table_from_db(space, db, scope)


def table_from_db(space: SearchSpace, db: LatencyDB, scope: LatencyScope) -> LatencyTable:
    """The table for one scope; names the candidates the database lacks, if any."""
    level = scope.level
    rows = {c: db.get(scope, c.key, c.shape_text) for c in space.candidates()}

    def latency(cand) -> float | None:
        row = rows[cand]
        return row.latency_ms if row is not None and row.ok else None

    missing = [c for c in space.candidates() if latency(c) is None]
    if missing:
        first = missing[0]
        raise TvmnasError(f"the latency database lacks {len(missing)} of {len(space.candidates())} candidates of "
                          f"{space.name!r} at level {level} (first: {first.key} {first.shape_text}); run "
                          f"`tvmnas profile --space {space.name} --tune-trials {parse_level(level)}` with the same "
                          "--target and endpoint")
    fixed = sum(latency(c) for c in space.fixed_candidates())
    layers = tuple(tuple(0.0 if op == "zero" else latency(layer.candidate(op)) for op in layer.choices)
                   for layer in space.layers())
    return LatencyTable(fixed, layers, tuple(f"{c.key} {c.shape_text}" for c, row in rows.items() if row.flag))


@dataclass(frozen=True)
class Prediction:
    """What the latency database predicts for a network: the sum of its blocks' latencies, and how much that sum
    moved between quarters of the profile's run (the blocks' dispersions, weighted by their latencies), at the
    compilation level of the rows it sums."""

    latency_ms: float
    dispersion: float
    level: str | None = None


def predict(space: SearchSpace, ops: tuple[str, ...], db: LatencyDB, scope: LatencyScope) -> Prediction | None:
    """The prediction for one network from its blocks' rows (fixed parts and chosen ops; zero costs nothing).
    None when the database lacks one of them."""
    total, spread = 0.0, 0.0
    blocks = space.fixed_candidates() + [layer.candidate(op) for layer, op in zip(space.layers(), ops)
                                         if op != "zero"]
    for cand in blocks:
        row = db.get(scope, cand.key, cand.shape_text)
        if row is None or not row.ok:
            return None
        total += row.latency_ms
        spread += row.latency_ms * (row.dispersion or 0.0)
    return Prediction(total, spread / total, scope.level)


def search_loss(ce: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, kind: str,
                a: float = 0.2, b: float = 0.3, lam: float = 0.1) -> torch.Tensor:
    """`add#abs`: CE + lam * |E[LAT] / T - 1| (TuNAS's absolute reward: pulls the expected latency to the goal
    from both sides, so the search ends near the budget it was given); `add#linear`: CE + lam * (E[LAT] - T) / T
    (always pushes latency down, the harder the tighter T); `mul#log`: CE * a * (log E[LAT] / log T)^b
    (ProxylessNAS's; logs of microseconds: the kernels of small spaces run under 1 ms, where log(ms) changes
    sign); `none`: CE.
    """
    if kind == "add#abs":
        return ce + lam * torch.abs(expected_ms / target_ms - 1)
    if kind == "mul#log":
        return ce * a * (torch.log(expected_ms * 1e3) / math.log(target_ms * 1e3)) ** b
    if kind == "add#linear":
        return ce + lam * (expected_ms - target_ms) / target_ms
    if kind == "none":
        return ce
    raise TvmnasError(f"unknown latency loss {kind!r}; known: {', '.join(LOSSES)}")
