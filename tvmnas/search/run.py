"""One search run: alternate weight and architecture steps, checkpoint every epoch, prune to one network.

A run directory holds: config.json (the exact settings), checkpoint.pt (supernet, optimizers, schedule, completed
epochs), log.jsonl (one line per epoch) and, at the end, arch.json, probabilities.json and summary.json.
Every epoch draws its randomness from (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.arch import save_arch
from tvmnas.data.datasets import SearchData, batch_tensors
from tvmnas.errors import TvmnasError
from tvmnas.model.evaluate import evaluate, recalibrate_batchnorm
from tvmnas.search.config import SearchConfig
from tvmnas.search.latency import LatencyTable, search_loss
from tvmnas.search.supernet import (Supernet, rescale_two_paths, sample_single_paths,
                                    sample_two_paths, two_path_alpha_grad)
from tvmnas.space import SearchSpace
from tvmnas.torch_file import load_tagged, save_tagged

CHECKPOINT_FORMAT = "tvmnas-search-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class SearchState:
    net: Supernet
    weight_opt: torch.optim.Optimizer
    arch_opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    epochs_done: int = 0
    log: list[dict] = field(default_factory=list)  # one entry per epoch done (saved with the checkpoint)


def epoch_size(n_train: int, cfg: SearchConfig) -> int:
    return n_train if cfg.images_per_epoch is None else min(n_train, cfg.images_per_epoch)


def steps_per_epoch(n_train: int, cfg: SearchConfig) -> int:
    return math.ceil(epoch_size(n_train, cfg) / cfg.batch_size)


def make_state(space: SearchSpace, cfg: SearchConfig, n_train: int) -> SearchState:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = Supernet(space).to(memory_format=torch.channels_last)  # faster depthwise convs on CPU
    weight_opt = torch.optim.SGD(net.weights(), lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                 weight_decay=cfg.weight_decay, nesterov=True)
    arch_opt = torch.optim.Adam(net.alphas(), lr=cfg.arch_lr, betas=(0.0, cfg.arch_beta2), eps=1e-8)
    total_steps = cfg.epochs * steps_per_epoch(n_train, cfg)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weight_opt, T_max=total_steps)
    return SearchState(net, weight_opt, arch_opt, schedule)


def epoch_generators(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    return np.random.default_rng([seed, epoch]), torch.Generator().manual_seed(seed * 100_003 + epoch)


def arch_step(state: SearchState, table: LatencyTable, cfg: SearchConfig, x, y, gen: torch.Generator) -> float:
    """One architecture update from a validation batch: binary gates over two sampled paths per layer plus the
    expected-latency term; the two alphas of each layer are rescaled afterwards."""
    net = state.net
    paths, gates = sample_two_paths(net, gen)
    old_pairs = [a.detach()[[p.active, p.other]].clone() for a, p in zip(net.alphas(), paths)]
    ce = F.cross_entropy(net(x, paths, gates), y)
    loss = search_loss(ce, table.expected_ms(net.probabilities()), cfg.latency_ms, cfg.loss,
                       cfg.loss_a, cfg.loss_b, cfg.loss_lambda)
    state.arch_opt.zero_grad(set_to_none=True)
    loss.backward()  # alpha.grad now holds the latency term's gradient (None without one)
    with torch.no_grad():
        for alpha, layer_paths, gate in zip(net.alphas(), paths, gates):
            gate_part = two_path_alpha_grad(alpha, layer_paths, gate.grad)
            alpha.grad = gate_part if alpha.grad is None else alpha.grad + gate_part
    state.arch_opt.step()
    for alpha, layer_paths, old in zip(net.alphas(), paths, old_pairs):
        rescale_two_paths(alpha, layer_paths, old)
    state.weight_opt.zero_grad(set_to_none=True)  # weights learn only in weight steps
    return loss.item()


def train_epoch(state: SearchState, data: SearchData, table: LatencyTable, cfg: SearchConfig, epoch: int,
                on_step: Callable[[int, int], None] | None = None) -> dict:
    net = state.net
    net.train()
    rng, gen = epoch_generators(cfg.seed, epoch)
    order = rng.permutation(len(data.train))[:epoch_size(len(data.train), cfg)]
    valid_order = rng.permutation(len(data.valid))
    warm = epoch < cfg.warmup_epochs
    n_steps = steps_per_epoch(len(data.train), cfg)
    loss_sum, correct, seen, arch_steps, valid_pos = 0.0, 0, 0, 0, 0
    for step in range(n_steps):
        x, y = batch_tensors(data.train, order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        logits = net(x, sample_single_paths(net, gen, uniform=warm))
        loss = F.cross_entropy(logits, y)
        state.weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        state.weight_opt.step()
        state.schedule.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if not warm and (step + 1) % cfg.arch_every == 0:
            if valid_pos + cfg.batch_size > len(valid_order):
                valid_pos = 0
            vx, vy = batch_tensors(data.valid, valid_order[valid_pos:valid_pos + cfg.batch_size])
            valid_pos += cfg.batch_size
            arch_step(state, table, cfg, vx, vy, gen)
            arch_steps += 1
        if on_step:
            on_step(step + 1, n_steps)
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "arch_steps": arch_steps}


@torch.no_grad()
def entropy(net: Supernet) -> float:
    """Mean entropy (nats) of the layers' path distributions."""
    ent = [float(-(p * torch.log(p)).sum()) for p in net.probabilities()]
    return sum(ent) / len(ent)


def save_checkpoint(path: Path, state: SearchState, cfg: SearchConfig) -> None:
    save_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                {"config": cfg.to_json(), "epochs_done": state.epochs_done, "log": json.dumps(state.log),
                 "supernet": state.net.state_dict(),
                 "weight_opt": state.weight_opt.state_dict(), "arch_opt": state.arch_opt.state_dict(),
                 "schedule": state.schedule.state_dict()})


def load_checkpoint(path: Path, state: SearchState, cfg: SearchConfig) -> None:
    ckpt = load_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
    if ckpt.get("config") != cfg.to_json():
        saved = ckpt.get("config") or {}
        diff = sorted(k for k in cfg.to_json() if saved.get(k) != cfg.to_json()[k])
        raise TvmnasError(f"{path} was made with other settings ({', '.join(diff)} differ)")
    try:
        state.net.load_state_dict(ckpt["supernet"])
        state.weight_opt.load_state_dict(ckpt["weight_opt"])
        state.arch_opt.load_state_dict(ckpt["arch_opt"])
        state.schedule.load_state_dict(ckpt["schedule"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise TvmnasError(f"{path} does not fit space {cfg.space!r}: {str(err).splitlines()[0]}") from None
    state.epochs_done = int(ckpt["epochs_done"])
    state.log = json.loads(ckpt.get("log", "[]"))


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def arch_latency_ms(table: LatencyTable, space: SearchSpace, ops: tuple[str, ...]) -> float:
    """Predicted latency of the network with these ops (one per searchable layer)."""
    return table.arch_ms([layer.choices.index(op) for layer, op in zip(space.layers(), ops)])


@dataclass(frozen=True)
class SearchResult:
    arch_ops: tuple[str, ...]
    predicted_latency_ms: float
    valid_acc: float
    log: list[dict]


def run_search(cfg: SearchConfig, space: SearchSpace, table: LatencyTable, data: SearchData, run_dir: Path,
               resume: bool = False, stop_after_epochs: int | None = None,
               on_step: Callable[[int, int], None] | None = None,
               on_epoch: Callable[[dict], None] | None = None) -> SearchResult:
    """Search (or continue a search) in run_dir. `stop_after_epochs` ends early after that many epochs in total,
    as a kill would (tests)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    state = make_state(space, cfg, len(data.train))
    if resume:
        load_checkpoint(ckpt_path, state, cfg)
        # the checkpoint's log: an epoch cut short (or one whose line a kill kept out of the file) is as saved
        log_path.write_text("".join(json.dumps(e) + "\n" for e in state.log))
    else:
        if ckpt_path.exists():
            raise TvmnasError(f"{run_dir} already holds a search; resume it with --resume or choose another --out")
        (run_dir / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
        log_path.write_text("")
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    for epoch in range(state.epochs_done, last_epoch):
        start = time.perf_counter()
        stats = train_epoch(state, data, table, cfg, epoch, on_step)
        derived = state.net.derived_arch()
        paths = state.net.arch_paths(derived)
        recalibrate_batchnorm(lambda x: state.net(x, paths), state.net, data.train)
        valid_loss, valid_acc = evaluate(lambda x: state.net(x, paths), data.valid)
        with torch.no_grad():
            expected = float(table.expected_ms(state.net.probabilities()))
        entry = {"epoch": epoch, **stats, "valid_loss": valid_loss, "valid_acc": valid_acc,
                 "expected_latency_ms": expected,
                 "derived_latency_ms": arch_latency_ms(table, space, derived.ops),
                 "alpha_entropy": entropy(state.net), "arch": list(derived.ops),
                 "seconds": time.perf_counter() - start}
        state.epochs_done = epoch + 1
        state.log.append(entry)
        save_checkpoint(ckpt_path, state, cfg)
        with log_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        if on_epoch:
            on_epoch(entry)
    log = state.log
    derived = state.net.derived_arch()
    predicted = arch_latency_ms(table, space, derived.ops)
    if state.epochs_done == cfg.epochs:
        save_arch(derived, run_dir / "arch.json")
        with torch.no_grad():
            probs = [{op: float(p) for op, p in zip(layer.choices, layer_probs)}
                     for layer, layer_probs in zip(space.layers(), state.net.probabilities())]
        (run_dir / "probabilities.json").write_text(json.dumps(probs, indent=1) + "\n")
        summary = {"arch": list(derived.ops), "predicted_latency_ms": predicted, "latency_goal_ms": cfg.latency_ms,
                   "valid_acc": log[-1]["valid_acc"] if log else None, "epochs": cfg.epochs,
                   "search_seconds": sum(e["seconds"] for e in log), "target": cfg.target, "level": cfg.level,
                   "min_reachable_ms": table.min_ms}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return SearchResult(derived.ops, predicted, log[-1]["valid_acc"] if log else 0.0, log)
