"""One search run: alternate weight and architecture steps, checkpoint every epoch, prune to one network.

A run directory (`tvmnas.run_folder.SearchRun`) holds the exact settings, a checkpoint (supernet, optimizers,
schedule, completed epochs), a log of one line per epoch and, at the end, the architecture, its probabilities and a
summary.
Every epoch draws its randomness from (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.arch import Arch, save_arch
from tvmnas.data.datasets import SearchData
from tvmnas.data.loading import batches, epoch_batches, first_images
from tvmnas.dist import Shards, World
from tvmnas.errors import TvmnasError
from tvmnas.model.evaluate import evaluate, recalibrate_batchnorm
from tvmnas.model.network import Network
from tvmnas.search.config import EARLIER_DEFAULTS, SearchConfig
from tvmnas.search.derive import derive
from tvmnas.search.latency import LatencyTable, search_loss
from tvmnas.search import zero_cost
from tvmnas.search.rerank import rerank
from tvmnas.search.supernet import (LayerPaths, Supernet, extract_subnet, rescale_paths, sample_single_paths,
                                    sample_two_paths, two_path_alpha_grad)
from tvmnas.space import SearchSpace
from tvmnas.epochs import check_same_settings, run_epochs, start_log
from tvmnas.run_folder import SearchRun, write_json
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


def make_state(space: SearchSpace, cfg: SearchConfig, n_train: int, world: World = World()) -> SearchState:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        # channels-last: faster depthwise convolutions
        net = Supernet(space, cfg.supernet).to(world.device, memory_format=torch.channels_last)
    weight_opt = torch.optim.SGD(net.weights(), lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                 weight_decay=cfg.weight_decay, nesterov=True)
    arch_opt = make_arch_optimizer(net, cfg)
    total_steps = cfg.epochs * steps_per_epoch(n_train, cfg)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weight_opt, T_max=total_steps)
    return SearchState(net, weight_opt, arch_opt, schedule)


def make_arch_optimizer(net: Supernet, cfg: SearchConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.alphas(), lr=cfg.arch_lr, betas=(0.0, cfg.arch_beta2), eps=1e-8)


def epoch_generators(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    return np.random.default_rng([seed, epoch]), torch.Generator().manual_seed(seed * 100_003 + epoch)


def arch_step(net: Supernet, arch_opt: torch.optim.Optimizer, table: LatencyTable, cfg: SearchConfig,
              draws: Sequence[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator, entropy_weight: float = 0.0,
              shards: Shards = Shards(1)) -> float:
    """One architecture update from validation batches (`draws`, this rank's part of each; `cfg.arch_samples`
    of them in a search), each with two paths per layer drawn for it: binary gates on them plus the
    expected-latency term and `entropy_weight` x the mean path entropy, the alpha gradient the mean over the
    draws; afterwards the drawn alphas of each layer are shifted so that their total probability is unchanged.
    A batch's cross-entropy is the mean of its shards' (see `Shards`); its gradient reaches each shard's gates,
    from which the alpha gradients come (the weights get none). Returns the loss, mean over the draws."""
    if not draws:
        raise ValueError("an architecture step needs at least one validation batch")
    alphas = net.alphas()
    old = [alpha.detach().clone() for alpha in alphas]
    grads = [torch.zeros_like(alpha) for alpha in alphas]
    sampled: list[dict[int, None]] = [{} for _ in alphas]  # per layer, the paths drawn (in order)
    losses = []
    for x, y in draws:
        paths, gates = sample_two_paths(net, gen)

        def forward(shard):
            sx, sy = shard
            shard_gates = [g.to(sx.device, copy=True).requires_grad_() for g in gates]
            with shards.world.autocast():
                logits = net(sx, paths, shard_gates)
            return F.cross_entropy(logits.float(), sy), shard_gates

        outs = shards.run(forward, shards.split(x, y))
        ce_sum, = shards.sum([[ce.detach().reshape(())] for ce, _ in outs])
        ce = (ce_sum / shards.count).requires_grad_()
        probabilities = net.probabilities()
        loss = search_loss(ce, table.expected_ms(probabilities), cfg.latency_ms, cfg.loss,
                           cfg.loss_a, cfg.loss_b, cfg.loss_lambda)
        if entropy_weight > 0:
            loss = loss + entropy_weight * mean_entropy(probabilities)
        arch_opt.zero_grad(set_to_none=True)
        loss.backward()  # alpha.grad now holds the latency term's gradient (None without one), ce.grad dloss/dCE
        per_shard = ce.grad / shards.count
        gate_grads = shards.sum(shards.run(lambda out: torch.autograd.grad(out[0], out[1], per_shard), outs))
        with torch.no_grad():
            for grad, alpha, layer_paths, gate_grad, drawn in zip(grads, alphas, paths, gate_grads, sampled):
                grad += two_path_alpha_grad(alpha, layer_paths, gate_grad)
                if alpha.grad is not None:
                    grad += alpha.grad
                drawn.update({layer_paths.active: None, layer_paths.other: None})
        losses.append(loss.item())
    for alpha, grad in zip(alphas, grads):
        alpha.grad = grad / len(draws)
    arch_opt.step()
    for alpha, drawn, before in zip(alphas, sampled, old):
        rescale_paths(alpha, list(drawn), before)
    return sum(losses) / len(losses)


def weight_step(state: SearchState, cfg: SearchConfig, x, y, paths: list[LayerPaths],
                slowest: list[LayerPaths] | None, shards: Shards) -> torch.Tensor:
    """One weight update on the sampled paths (plus, `slowest` given, the slowest network's loss: the sandwich
    rule), the batch's gradient the mean of its shards' (see `Shards`); returns this rank's (loss sum, correct,
    images)."""
    net, weights = state.net, state.net.weights()

    def compute(shard):
        sx, sy = shard
        with shards.world.autocast():
            logits = net(sx, paths)
        loss = F.cross_entropy(logits.float(), sy)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        if slowest is not None:
            with shards.world.autocast():
                largest = net(sx, slowest)
            more = torch.autograd.grad(F.cross_entropy(largest.float(), sy), weights, allow_unused=True)
            grads = [b if a is None else a if b is None else a + b for a, b in zip(grads, more)]
        return grads, [loss.item() * len(sy), int((logits.argmax(1) == sy).sum()), len(sy)]

    results = shards.run(compute, shards.split(x, y))
    shards.set_mean_gradients(weights, [grads for grads, _ in results])
    state.weight_opt.step()
    state.schedule.step()
    return Shards.totals([stats for _, stats in results])


def weight_step_sampling(weight_paths: str, warm: bool) -> str:
    """How a weight step draws its paths (see `sample_single_paths`): "alpha" draws from softmax(alpha) once the
    warm-up is over; "depth" and "stage-depth" keep elastic depth throughout; the others draw uniformly."""
    if weight_paths in ("depth", "stage-depth") or (weight_paths == "alpha" and not warm):
        return weight_paths
    return "uniform"


def train_epoch(state: SearchState, data: SearchData, table: LatencyTable, cfg: SearchConfig, epoch: int,
                on_step: Callable[[int, int], None] | None = None, shards: Shards = Shards(1),
                workers: int = 0) -> dict:
    net, world = state.net, shards.world
    net.train()
    rng, gen = epoch_generators(cfg.seed, epoch)
    train_batches = epoch_batches(len(data.train), cfg.batch_size, None, rng, world,
                                  take=epoch_size(len(data.train), cfg), multiple=shards.count)
    n_steps = len(train_batches)
    warm = epoch < cfg.warmup_epochs
    n_arch = 0 if warm else n_steps // cfg.arch_every
    valid_batches = epoch_batches(len(data.valid), cfg.batch_size, n_arch * cfg.arch_samples, rng, world, wrap=True)
    valid = batches(data.valid, valid_batches, world.device, train=False, seed=cfg.seed, epoch=epoch,
                    workers=workers)
    train = batches(data.train, train_batches, world.device, train=True, seed=cfg.seed, epoch=epoch,
                    workers=workers)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
    arch_steps = 0
    slowest = [LayerPaths(max(range(len(ms)), key=ms.__getitem__)) for ms in table.layer_ms]
    with shards.steps(net):
        for step, (x, y) in enumerate(train):
            paths = sample_single_paths(net, gen, weight_step_sampling(cfg.weight_paths, warm))
            totals += weight_step(state, cfg, x, y, paths, slowest if cfg.weight_paths == "sandwich" else None,
                                  shards)
            if not warm and (step + 1) % cfg.arch_every == 0:
                draws = [next(valid) for _ in range(cfg.arch_samples)]
                ramp = (epoch - cfg.warmup_epochs + (step + 1) / n_steps) / (cfg.epochs - cfg.warmup_epochs)
                for group in state.arch_opt.param_groups:
                    group["lr"] = cfg.arch_lr_at(ramp)
                arch_step(net, state.arch_opt, table, cfg, draws, gen, cfg.entropy_weight * ramp, shards)
                arch_steps += 1
            if on_step:
                on_step(step + 1, n_steps)
    world.average([totals])  # the mean over ranks of the sums: scaled alike, so the ratios are global
    loss_sum, correct, seen = totals.tolist()
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "arch_steps": arch_steps}


def mean_entropy(probabilities: list[torch.Tensor]) -> torch.Tensor:
    """Mean entropy (nats) of the layers' path distributions."""
    return sum(-(p * torch.log(p)).sum() for p in probabilities) / len(probabilities)


@torch.no_grad()
def entropy(net: Supernet) -> float:
    return float(mean_entropy(net.probabilities()))


def save_checkpoint(path: Path, state: SearchState, cfg: SearchConfig) -> None:
    save_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                {"config": cfg.to_json(), "epochs_done": state.epochs_done, "log": json.dumps(state.log),
                 "supernet": {k: v.detach().cpu() for k, v in state.net.state_dict().items()},
                 "weight_opt": state.weight_opt.state_dict(), "arch_opt": state.arch_opt.state_dict(),
                 "schedule": state.schedule.state_dict()})


def load_checkpoint(path: Path, state: SearchState, cfg: SearchConfig, world: World = World()) -> None:
    """Restore the state from the checkpoint: rank 0 reads the file and hands it to the others (they need not
    see the run folder)."""
    ckpt = world.broadcast(load_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
                           if world.is_main else None)
    check_same_settings({**EARLIER_DEFAULTS, **(ckpt.get("config") or {})}, cfg.to_json(), path)
    try:
        state.net.load_state_dict({k: v.to(world.device) for k, v in ckpt["supernet"].items()})
        state.weight_opt.load_state_dict(ckpt["weight_opt"])
        state.arch_opt.load_state_dict(ckpt["arch_opt"])
        state.schedule.load_state_dict(ckpt["schedule"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise TvmnasError(f"{path} does not fit space {cfg.space!r}: {str(err).splitlines()[0]}") from None
    state.epochs_done = int(ckpt["epochs_done"])
    state.log = json.loads(ckpt.get("log", "[]"))


def network_from_search(checkpoint: Path, space: SearchSpace, arch: Arch) -> Network:
    """The architecture's network with the supernet's weights of the chosen paths (a search checkpoint)."""
    ckpt = load_tagged(checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
    try:
        supernet = Supernet(space, SearchConfig.from_json(ckpt["config"], str(checkpoint)).supernet)
        supernet.load_state_dict(ckpt["supernet"])
    except (KeyError, RuntimeError) as err:
        raise TvmnasError(f"{checkpoint} does not fit space {space.name!r}: {str(err).splitlines()[0]}") from None
    return extract_subnet(supernet, arch)


def derive_arch(net: Supernet, table: LatencyTable, cfg: SearchConfig, budget_ms: float | None = None
                ) -> tuple[Arch, float]:
    """The network the supernet's probabilities give (the run's derivation; under `budget_ms`, default its goal),
    and its predicted latency."""
    derived = derive(log_probabilities(net), table, cfg.latency_ms if budget_ms is None else budget_ms, cfg.derive)
    return net.arch_of(derived.choices), derived.latency_ms


def path_accuracy(net: Supernet, arch: Arch, data: SearchData, device: torch.device = torch.device("cpu"),
                  workers: int = 0) -> tuple[float, float]:
    """Validation loss and accuracy of one path of the supernet, its BatchNorm statistics measured again (every
    rank computes the same, on all the data)."""
    paths = net.arch_paths(arch)
    recalibrate_batchnorm(lambda x: net(x, paths), net, data.train, device, workers=workers)
    return evaluate(lambda x: net(x, paths), data.valid, device, workers=workers)


@torch.no_grad()
def log_probabilities(net: Supernet) -> list[list[float]]:
    return [torch.log_softmax(layer.alpha, 0).tolist() for layer in net.layers]


@torch.no_grad()
def probabilities_json(net: Supernet) -> list[dict[str, float]]:
    """Per layer, each path's probability by its op string."""
    return [{op: float(p) for op, p in zip(layer.choices, probs)}
            for layer, probs in zip(net.layers, net.probabilities())]


@dataclass(frozen=True)
class SearchResult:
    arch_ops: tuple[str, ...]
    predicted_latency_ms: float
    valid_acc: float | None  # the supernet's, on the search's validation split (None: no supernet trained)
    log: list[dict]


def run_search(cfg: SearchConfig, space: SearchSpace, table: LatencyTable, data: SearchData, run_dir: Path,
               resume: bool = False, stop_after_epochs: int | None = None,
               on_step: Callable[[int, int], None] | None = None,
               on_epoch: Callable[[dict], None] | None = None, world: World = World(),
               workers: int = 0, on_rerank: Callable[[int, int, Arch], None] | None = None) -> SearchResult:
    """Search (or continue a search) in run_dir. `stop_after_epochs` ends early after that many epochs in total,
    as a kill would (tests). In a distributed world every rank runs this; only rank 0 writes files (and should
    get the callbacks); `workers` decode images in DataLoader worker processes (image sets streamed from files).
    With `cfg.rerank`, the finished search trains its shortlist (`tvmnas.search.rerank`) and keeps the best of it;
    the network's supernet accuracy (`valid_acc`) is then that of the network kept."""
    run_dir = Path(run_dir)
    files = SearchRun(run_dir)
    ckpt_path, log_path = files.checkpoint, files.log
    world.check_same(cfg.to_json(), "search settings")
    shards = Shards(cfg.shards, world)
    state = make_state(space, cfg, len(data.train), world)
    if resume:
        load_checkpoint(ckpt_path, state, cfg, world)
    elif world.broadcast(ckpt_path.exists() if world.is_main else None):
        raise TvmnasError(f"{run_dir} already holds a search; resume it with --resume or choose another --out")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(files.config, cfg.to_json(), indent=2)
    start_log(log_path, state.log, world)

    def one_epoch(epoch: int) -> dict:
        stats = train_epoch(state, data, table, cfg, epoch, on_step, shards, workers)
        derived, latency = derive_arch(state.net, table, cfg)
        valid_loss, valid_acc = path_accuracy(state.net, derived, data, world.device, workers)
        with torch.no_grad():
            expected = float(table.expected_ms(state.net.probabilities()))
        state.epochs_done = epoch + 1
        return {**stats, "valid_loss": valid_loss, "valid_acc": valid_acc, "expected_latency_ms": expected,
                "derived_latency_ms": latency, "alpha_entropy": entropy(state.net), "arch": list(derived.ops),
                "probabilities": probabilities_json(state.net)}

    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    run_epochs(range(state.epochs_done, last_epoch), one_epoch, lambda: save_checkpoint(ckpt_path, state, cfg),
               state.log, log_path, "search-epoch-saved", world, on_epoch)
    log = state.log
    derived, predicted = derive_arch(state.net, table, cfg)
    valid_acc, extra = log[-1]["valid_acc"] if log else None, {}
    if state.epochs_done == cfg.epochs and cfg.rerank:
        ranked = rerank(cfg, space, table, log_probabilities(state.net), state.net.arch_of, data, run_dir, world,
                        workers, on_rerank)
        extra = {"rerank": [r.to_json() for r in ranked]}
        if ranked[0].arch != derived:
            derived, predicted = ranked[0].arch, ranked[0].predicted_ms
            valid_acc = path_accuracy(state.net, derived, data, world.device, workers)[1]
    if state.epochs_done == cfg.epochs and world.is_main:
        write_outcome(run_dir, cfg, table, state, derived, predicted, valid_acc, **extra)
    return SearchResult(derived.ops, predicted, valid_acc or 0.0, log)


def write_outcome(run_dir: Path, cfg: SearchConfig, table: LatencyTable, state: SearchState, arch: Arch,
                  predicted_ms: float, valid_acc: float | None, **extra) -> dict:
    """A finished run's arch.json, probabilities.json and summary.json (the goal, the derived network's predicted
    latency and the share of the goal it uses, how decided each layer is)."""
    files = SearchRun(run_dir)
    save_arch(arch, files.arch)
    probabilities = probabilities_json(state.net)
    write_json(files.probabilities, probabilities)
    log = state.log
    summary = {"arch": list(arch.ops), "derivation": cfg.derive, "latency_goal_ms": cfg.latency_ms,
               "predicted_latency_ms": predicted_ms, "goal_share": predicted_ms / cfg.latency_ms,
               "valid_acc": valid_acc, "epochs": cfg.epochs, "search_seconds": sum(e["seconds"] for e in log),
               "target": cfg.target, "level": cfg.level, "min_reachable_ms": table.min_ms,
               "max_reachable_ms": table.max_ms, "top_probabilities": [max(p.values()) for p in probabilities],
               "stable_last_epochs": len(log) >= 2 and log[-1]["arch"] == log[-2]["arch"], **extra}
    write_json(files.summary, summary)
    return summary


def initialized_network(space: SearchSpace, arch: Arch, seed: int, init: int) -> Network:
    """The untrained network a naswot search scores as initialization `init` of its `seed` (the same for every
    network of the search)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed * 1000 + init)
        return Network(space, arch)


def naswot_batch(data: SearchData, batch_size: int, seed: int) -> np.ndarray:
    """The indices of the training images a naswot search of `seed` scores every network on."""
    return np.random.default_rng((seed, 0)).choice(len(data.train), min(batch_size, len(data.train)), replace=False)


def naswot_scorer(space: SearchSpace, data: SearchData, batch_size: int, seed: int) -> Callable[[Arch], float]:
    """The score a naswot search ranks networks by: NASWOT on the images of `naswot_batch`, the mean over
    `zero_cost.INITS` initializations (seeded by `seed`, the same for every network)."""
    images = torch.from_numpy(first_images(data.train, naswot_batch(data, batch_size, seed)))

    def score(arch: Arch) -> float:
        return float(np.mean([zero_cost.naswot_score(initialized_network(space, arch, seed, init), images)
                              for init in range(zero_cost.INITS)]))

    return score


def run_zero_cost_search(cfg: SearchConfig, space: SearchSpace, table: LatencyTable, data: SearchData,
                         run_dir: Path, on_evaluation: Callable[[int, int, zero_cost.Scored], None] | None = None
                         ) -> SearchResult:
    """`cfg.method` naswot: the network within the goal that `naswot_scorer` scores best, found by regularized
    evolution (`tvmnas.search.zero_cost`); no weight is trained. Writes the run's config, arch.json, its summary
    and zero_cost.json (every network scored, best first)."""
    files = SearchRun(run_dir)
    if files.arch.exists() or files.checkpoint.exists():
        raise TvmnasError(f"{run_dir} already holds a search; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(files.config, cfg.to_json(), indent=2)
    layers = space.layers()

    def arch_of(choices: tuple[int, ...]) -> Arch:
        return Arch(space.name, tuple(layer.choices[i] for layer, i in zip(layers, choices)))

    score = naswot_scorer(space, data, cfg.batch_size, cfg.seed)
    started = time.monotonic()
    scored = zero_cost.evolve(lambda choices: score(arch_of(choices)), table.fixed_ms, table.layer_ms,
                              cfg.latency_ms, cfg.evaluations, np.random.default_rng((cfg.seed, 1)), on_evaluation)
    seconds = time.monotonic() - started
    best = scored[0]
    arch = arch_of(best.choices)
    save_arch(arch, files.arch)
    write_json(files.zero_cost, {"method": cfg.method, "inits": zero_cost.INITS, "batch_size": cfg.batch_size,
                                 "networks": [{"arch": list(arch_of(s.choices).ops), "latency_ms": s.latency_ms,
                                               "score": s.score} for s in scored]})
    write_json(files.summary, {
        "arch": list(arch.ops), "method": cfg.method, "derivation": cfg.method, "latency_goal_ms": cfg.latency_ms,
        "predicted_latency_ms": best.latency_ms, "goal_share": best.latency_ms / cfg.latency_ms, "valid_acc": None,
        "score": best.score, "evaluations": len(scored), "epochs": 0, "search_seconds": seconds,
        "target": cfg.target, "level": cfg.level, "min_reachable_ms": table.min_ms, "max_reachable_ms": table.max_ms})
    return SearchResult(arch.ops, best.latency_ms, None, [])
