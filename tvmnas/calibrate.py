"""Calibrate how a space's blocks add up inside whole networks: time sampled networks, fit a `Composition`.

A profile times every block alone, call after call, with its own weights and input left in cache by the call before;
inside a network a block follows other blocks. At 224x224 sampled networks took 1.22x the sum of their blocks, a
nearly constant factor (bench/results/composition_proxyless-imagenet.md). Here `networks` whole networks (random
weights, built as `tvmnas export` builds them, from the same tuning records) are timed together with the reference
in one interleaved run, and fitted by `fit_composition`: a network = intercept + scale x (the sum of its blocks'
rows) + ms per MB x (its weights' megabytes), every coefficient >= 0. The networks are the fastest and the slowest
the table allows and the rest sampled with the seed, so the fit spans the space's whole range. The fit is stored per
space and scope in the latency database; every prediction and every search table then includes it
(`tvmnas.search.latency`).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tvmnas.arch import Arch
from tvmnas.errors import TvmnasError
from tvmnas.latency_db import MIN_CALIBRATION_NETWORKS, Composition, LatencyDB
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.level import level_name
from tvmnas.measure.method import latency_scope
from tvmnas.measure.protocol import PROFILE, Protocol
from tvmnas.measure.reference import REFERENCE_FILE, build_reference, read_anchor
from tvmnas.measure.runner.base import Batch, Runner
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.model.network import Network
from tvmnas.search.latency import composition_key
from tvmnas.space import Layer, SearchSpace
from tvmnas.targets import TargetSpec


@dataclass(frozen=True)
class CalibrationNetwork:
    ops: tuple[str, ...]
    blocks_ms: float  # the sum of its blocks' rows
    weight_mb: float
    measured_ms: float | None  # whole, at the anchor's speed (None: failed)
    flag: str | None = None  # the protocol's doubt about the measurement, or why it failed


@dataclass(frozen=True)
class Calibration:
    composition: Composition
    networks: list[CalibrationNetwork]
    seconds: float  # building and timing


def calibration_archs(space: SearchSpace, op_ms: Callable[[Layer, str], float], n: int,
                      rng: np.random.Generator) -> list[tuple[str, ...]]:
    """n distinct networks: every layer at its fastest op, every layer at its slowest (by `op_ms`), the rest
    sampled with the generator."""
    layers = space.layers()

    def extreme(pick) -> tuple[str, ...]:
        return tuple(pick(layer.choices, key=lambda op, layer=layer: op_ms(layer, op)) for layer in layers)

    archs = list(dict.fromkeys([extreme(min), extreme(max)]))
    tries = 0
    while len(archs) < n and tries < 100 * n:
        ops = tuple(str(rng.choice(layer.choices)) for layer in layers)
        if ops not in archs:
            archs.append(ops)
        tries += 1
    return archs[:n]


def fit_composition(blocks_ms: list[float], weight_mb: list[float], measured_ms: list[float]) -> Composition:
    """Least squares of measured = intercept + scale x blocks + ms_per_weight_mb x weight MB with every
    coefficient >= 0 (exactly: the best unconstrained fit over each subset of the three terms whose coefficients
    all come out >= 0), and its leave-one-out error. Pure."""
    n = len(measured_ms)
    if n < MIN_CALIBRATION_NETWORKS:
        raise TvmnasError(f"a composition needs at least {MIN_CALIBRATION_NETWORKS} measured networks, got {n}")
    x = np.column_stack([np.ones(n), np.asarray(blocks_ms, float), np.asarray(weight_mb, float)])
    y = np.asarray(measured_ms, float)
    coef = _nonnegative_lstsq(x, y)
    left_out = []
    for i in range(n):
        keep = np.arange(n) != i
        left_out.append(abs(x[i] @ _nonnegative_lstsq(x[keep], y[keep]) / y[i] - 1))
    return Composition(float(coef[0]), float(coef[1]), float(coef[2]), n, float(np.mean(left_out)))


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    best, best_residual = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    for size in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), size):
            sub, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.all(sub >= -1e-12):
                coef = np.zeros(x.shape[1])
                coef[list(cols)] = np.maximum(sub, 0.0)
                residual = float(np.sum((x @ coef - y) ** 2))
                if residual < best_residual:
                    best, best_residual = coef, residual
    return best


def calibrate(space: SearchSpace, spec: TargetSpec, runner: Runner, db: LatencyDB, tune_trials: int,
              tune_dir: Path, networks: int, seed: int = 0, protocol: Protocol = PROFILE,
              progress: Callable[[str, int, int, str], None] | None = None) -> Calibration:
    """Build and time `networks` whole networks of the space (its candidates profiled at the level of
    `tune_trials`), fit their composition and store it in the database. Networks the protocol flags or cannot
    time are left out of the fit."""
    start = time.perf_counter()
    scope = latency_scope(spec, runner.device_label, level_name(tune_trials))
    rows = {}
    for cand in space.candidates():
        row = db.get(scope, cand.key, cand.shape_text)
        if row is None or not row.ok:
            raise TvmnasError(f"calibrating {space.name!r} needs every candidate profiled at {scope.level}; "
                              f"{cand.key} {cand.shape_text} is not")
        rows[cand.ident] = row.latency_ms

    def blocks_ms(ops: tuple[str, ...]) -> float:
        return sum(rows[c.ident] for c in space.blocks(ops))

    def op_ms(layer: Layer, op: str) -> float:
        cand = layer.candidate(op)
        return 0.0 if op == "zero" else rows[cand.ident]

    archs = calibration_archs(space, op_ms, networks, np.random.default_rng(seed))
    with tempfile.TemporaryDirectory(prefix="tvmnas-calibrate-") as tmp:
        libs, shapes = [], []
        for i, ops in enumerate(archs):
            with torch.random.fork_rng():
                torch.manual_seed(seed + i)
                net = fold_batchnorm(Network(space, Arch(space.name, ops)))
            built = build_module(import_torch(net, space.input_shape), spec, tune_trials, tune_dir, runner,
                                 Path(tmp) / f"network{i}.so", seed)
            libs.append(built.lib_path)
            shapes.append(built.input_shape)
            if progress:
                progress("compile", i + 1, len(archs), " ".join(ops))
        batch = Batch(tuple(libs), tuple(shapes), spec.device, spec.runtime_threads,
                      build_reference(spec, Path(tmp) / REFERENCE_FILE), read_anchor(db, scope))
        timed = runner.measure(batch, protocol, on_round=(lambda done, total: progress("measure", done, total, ""))
                               if progress else None)
    measured = [CalibrationNetwork(ops, blocks_ms(ops), sum(c.weight_mb for c in space.blocks(ops)),
                                   est.latency_ms if est.ok else None, est.error or est.flag)
                for ops, est in zip(archs, timed.estimates)]
    kept = [m for m in measured if m.measured_ms is not None and m.flag is None]
    composition = fit_composition([m.blocks_ms for m in kept], [m.weight_mb for m in kept],
                                  [m.measured_ms for m in kept])
    composition = db.put_composition(scope, *composition_key(space), composition)
    return Calibration(composition, measured, time.perf_counter() - start)

