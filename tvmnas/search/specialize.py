"""Train once, specialize for many devices: a finished supernet's weights kept, its architecture parameters
learnt again for another target's latency table in a short alpha-only phase, and a network derived under that
target's budget. No weight is trained again."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tvmnas.data.datasets import SearchData
from tvmnas.data.loading import batches, epoch_batches
from tvmnas.dist import Shards, World
from tvmnas.run_folder import SearchRun, write_json, write_log
from tvmnas.search.config import SearchConfig
from tvmnas.search.derive import check_reachable
from tvmnas.search.finished import FinishedRun
from tvmnas.search.latency import LatencyTable
from tvmnas.search.run import (arch_step, derive_arch, make_arch_optimizer, path_accuracy, save_checkpoint,
                               write_outcome)


def alpha_phase(run: FinishedRun, cfg: SearchConfig, table: LatencyTable, data: SearchData, steps: int,
                on_step: Callable[[int, int], None] | None = None) -> None:
    """Reset the architecture parameters and learn them again from validation batches for `steps` steps, with
    the run's losses and the entropy push ramped over the phase; weights stay as trained."""
    net = run.state.net
    with torch.no_grad():
        for alpha in net.alphas():
            alpha.zero_()
    optimizer = make_arch_optimizer(net, cfg)
    rng, gen = np.random.default_rng([cfg.seed, 7_919]), torch.Generator().manual_seed(cfg.seed + 7_919)
    device = next(net.parameters()).device
    net.train()
    shards = Shards(cfg.shards, World(device=device))  # the run's shards, all in this process
    valid = batches(data.valid, epoch_batches(len(data.valid), cfg.batch_size, steps * cfg.arch_samples, rng,
                                              shards.world, wrap=True), device)
    with shards.steps(net):
        for step in range(steps):
            draws = [next(valid) for _ in range(cfg.arch_samples)]
            arch_step(net, optimizer, table, cfg, draws, gen, cfg.entropy_weight * (step + 1) / steps, shards)
            if on_step:
                on_step(step + 1, steps)


def specialize(run: FinishedRun, target: str, goal_ms: float, table: LatencyTable, data: SearchData,
               out_dir: Path, steps: int, level: str, measured_by: str,
               on_step: Callable[[int, int], None] | None = None) -> dict:
    """Write a run folder for `target` (config, checkpoint with the new architecture parameters, arch,
    probabilities, summary) that `tvmnas train --run` and `tvmnas export --run` take like any search run."""
    check_reachable(table, goal_ms, f" of {run.space.name} on {target}")  # before the alpha phase, not after
    cfg = replace(run.cfg, target=target, latency_ms=goal_ms, level=level, measured_by=measured_by)
    started = time.perf_counter()
    alpha_phase(run, cfg, table, data, steps, on_step)
    arch, predicted = derive_arch(run.state.net, table, cfg)
    valid_acc = path_accuracy(run.state.net, arch, data, next(run.state.net.parameters()).device)[1]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = SearchRun(out_dir)
    write_json(files.config, cfg.to_json(), indent=2)
    save_checkpoint(files.checkpoint, run.state, cfg)
    write_log(files.log, run.state.log)
    return write_outcome(out_dir, cfg, table, run.state, arch, predicted, valid_acc,
                         specialized_from={"run": str(run.run_dir), "target": run.cfg.target,
                                           "latency_goal_ms": run.cfg.latency_ms},
                         alpha_steps=steps, specialize_seconds=time.perf_counter() - started)
