"""The network-sized reference of a space: its MobileNetV2-style network (`SearchSpace.mobilenetv2_ops`), random
weights from a fixed seed, built at the level of the measurements it serves from the same tuning records.

`tvmnas profile` times it in the same interleaved run as the candidates, the first time it profiles the space at a
level (or, for a database profiled before, beside its own blocks) and whenever it measures one of its blocks again,
and stores its latency at the speed of the rows its prediction sums (see `tvmnas.profile.network_at_table_speed`)
as the space's network anchor. From then on `tvmnas export` times the exported network in turn with it and scales
by it (see `tvmnas.measure.single`), so that single networks measured at different times compare by a ratio taken
in one run, and predictions scale the blocks' rows by its ratio to them (`tvmnas.search.latency`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tvmnas.arch import Arch
from tvmnas.latency_db import LatencyDB, LatencyRow, LatencyScope
from tvmnas.measure.protocol import Estimate
from tvmnas.measure.reference import REFERENCE_LEVEL
from tvmnas.space import SearchSpace
from tvmnas.targets import TargetSpec

if TYPE_CHECKING:  # building imports torch and TVM; reading the anchor (the search's table) needs neither
    from tvmnas.measure.build import BuiltModule

REFERENCE_NETWORK_FILE = "reference_network.so"
REFERENCE_NETWORK_SEED = 0


def reference_network_key(space: SearchSpace, level: str) -> tuple[str, str]:
    """Its (block key, shape text) in the latency database, one per space and compilation level; the row lives
    beside the reference module's anchor (at the anchor's own level), apart from the candidates' rows."""
    return f"reference_network_{space.name}_{level}", "x".join(str(d) for d in space.input_shape)


def build_reference_network(space: SearchSpace, spec: TargetSpec, tune_trials: int, tune_dir: Path, runner,
                            path: Path) -> BuiltModule:
    """Compile the space's reference network like any network of it (`build_module`, tuning what the records
    lack)."""
    import torch

    from tvmnas.measure.build import build_module
    from tvmnas.measure.compile import import_torch
    from tvmnas.model.blocks import fold_batchnorm
    from tvmnas.model.network import Network

    with torch.random.fork_rng():
        torch.manual_seed(REFERENCE_NETWORK_SEED)
        net = fold_batchnorm(Network(space, Arch(space.name, space.mobilenetv2_ops)).eval())
    return build_module(import_torch(net, space.input_shape), spec, tune_trials, tune_dir, runner, Path(path),
                        REFERENCE_NETWORK_SEED)


def network_anchor_row(db: LatencyDB, scope: LatencyScope, space: SearchSpace) -> LatencyRow | None:
    """The reference network's row, when a profile of the space at the scope's level stored it."""
    row = db.get(scope.at_level(REFERENCE_LEVEL), *reference_network_key(space, scope.level))
    return row if row is not None and row.ok else None


def read_network_anchor(db: LatencyDB, scope: LatencyScope, space: SearchSpace) -> float | None:
    """The reference network's latency at the anchor's speed (None before a profile stored it)."""
    row = network_anchor_row(db, scope, space)
    return row.latency_ms if row is not None else None


def write_network_anchor(db: LatencyDB, scope: LatencyScope, space: SearchSpace, target_name: str,
                         device_label: str, estimate: Estimate, speed: float, built: BuiltModule) -> None:
    """Store the reference network's estimate of a profile's run (scaled to the anchor like its candidates)."""
    db.put(LatencyRow.measured(scope.at_level(REFERENCE_LEVEL), *reference_network_key(space, scope.level),
                               target_name=target_name, device=device_label,
                               latency_ms=estimate.latency_ms, raw_ms=estimate.raw_ms,
                               dispersion=estimate.dispersion, windows=estimate.windows,
                               dropped_windows=estimate.dropped, speed=speed, compile_s=round(built.compile_s, 3),
                               tune_s=round(built.tune_s, 3), tasks_tuned=built.tasks_tuned, error=estimate.error,
                               flag=estimate.flag))
