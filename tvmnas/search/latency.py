"""Expected latency of the supernet from the latency database, and the ProxylessNAS latency losses.

E[LAT] = fixed parts (stem, first block, head) + sum over layers of sum_i p_i * latency_i, with `zero` costing 0;
it is differentiable in alpha through p = softmax(alpha). A block's latency is its database row times how the
space's blocks compose inside whole networks on the device (`composition_of`): the fit `tvmnas profile --calibrate`
made on sampled networks (`tvmnas.calibrate`; its intercept counted with the fixed parts), or else the ratio of the
space's reference network, timed whole beside its blocks in the profile's run, to the sum of its blocks' rows (a
network runs ~5% faster than its blocks timed alone on one CPU, 1.2x slower at 224x224 on another). The sum stays
linear in the choices, so the search, the derivation and the prediction all use the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tvmnas.errors import TvmnasError
from tvmnas.latency_db import Composition, LatencyDB, LatencyScope
from tvmnas.measure.level import parse_level
from tvmnas.search.config import LOSSES
from tvmnas.space import Candidate, SearchSpace


@dataclass(frozen=True)
class LatencyTable:
    fixed_ms: float
    layer_ms: tuple[tuple[float, ...], ...]  # per searchable layer, per choice (in the layer's choice order)
    flagged: tuple[str, ...] = ()  # the candidates whose rows the protocol flagged as noisy ("key shape")
    composition: Composition | None = None  # the calibration its numbers include, if any

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


def composition_key(space: SearchSpace) -> tuple[str, str]:
    """Where a space's composition is kept in the latency database: its name and its input shape."""
    return space.name, space.stem().shape_text


def composition_of(space: SearchSpace, db: LatencyDB, scope: LatencyScope) -> Composition | None:
    """How the space's blocks add up inside a network for the scope: the fit `tvmnas profile --calibrate` stored,
    or else `reference_composition`; None without either."""
    return db.get_composition(scope, *composition_key(space)) or reference_composition(space, db, scope)


def reference_composition(space: SearchSpace, db: LatencyDB, scope: LatencyScope) -> Composition | None:
    """The one-network composition: the space's reference network as the profile timed it whole (its network
    anchor) over the sum of its blocks' rows, as a scale on every block: the anchor an export's measurement is
    scaled by, flagged or not, so the two stay comparable. None where the profile stored no anchor or a block's row
    is missing."""
    from tvmnas.reference_network import network_anchor_row

    anchor = network_anchor_row(db, scope, space)
    if anchor is None:
        return None
    rows = [db.get(scope, c.key, c.shape_text) for c in space.blocks(space.mobilenetv2_ops)]
    if any(row is None or not row.ok for row in rows):
        return None
    return Composition(0.0, anchor.latency_ms / sum(row.latency_ms for row in rows), 0.0, 1, None,
                       anchor.measured_at)


def _in_network_ms(cand: Candidate, latency_ms: float, composition: Composition | None) -> float:
    return latency_ms if composition is None else composition.block_ms(latency_ms, cand.weight_mb)


def table_from_db(space: SearchSpace, db: LatencyDB, scope: LatencyScope) -> LatencyTable:
    """The table for one scope (calibrated where the space has a composition); names the candidates the database
    lacks, if any."""
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
    composition = composition_of(space, db, scope)
    fixed = (composition.intercept_ms if composition else 0.0) + sum(
        _in_network_ms(c, latency(c), composition) for c in space.fixed_candidates())
    layers = tuple(tuple(0.0 if op == "zero" else _in_network_ms(layer.candidate(op), latency(layer.candidate(op)),
                                                                 composition) for op in layer.choices)
                   for layer in space.layers())
    return LatencyTable(fixed, layers, tuple(f"{c.key} {c.shape_text}" for c, row in rows.items() if row.flag),
                        composition)


@dataclass(frozen=True)
class Prediction:
    """What the latency database predicts for a network: the sum of its blocks' latencies (calibrated where the
    space has a composition), and how much that sum moved between quarters of the profile's run (the blocks'
    dispersions, weighted by their latencies), at the compilation level of the rows it sums."""

    latency_ms: float
    dispersion: float
    level: str | None = None
    composition: Composition | None = None


def predict(space: SearchSpace, ops: tuple[str, ...], db: LatencyDB, scope: LatencyScope) -> Prediction | None:
    """The prediction for one network from its blocks' rows (fixed parts and chosen ops; zero costs nothing).
    None when the database lacks one of them."""
    composition = composition_of(space, db, scope)
    total, spread = (composition.intercept_ms if composition else 0.0), 0.0
    for cand in space.blocks(ops):
        row = db.get(scope, cand.key, cand.shape_text)
        if row is None or not row.ok:
            return None
        share = _in_network_ms(cand, row.latency_ms, composition)
        total += share
        spread += share * (row.dispersion or 0.0)
    return Prediction(total, spread / total, scope.level, composition)


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
