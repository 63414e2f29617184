"""Train the searched network on its own (from scratch or from the supernet's weights) and test it once.

The output folder (`tvmnas.run_folder.TrainRun`) holds the network file (see network_file.py; rewritten after every
epoch), a checkpoint, a log of one line per epoch and a summary (test accuracy, seconds). The test set is read
once, after the last epoch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.arch import Arch
from tvmnas.data.datasets import SearchData
from tvmnas.data.loading import batches, epoch_batches
from tvmnas.dist import Shards, World
from tvmnas.model.evaluate import evaluate, recalibrate_batchnorm
from tvmnas.model.network import Network
from tvmnas.space import SearchSpace
from tvmnas.epochs import check_same_settings, run_epochs, start_log
from tvmnas.run_folder import TrainRun, write_json
from tvmnas.torch_file import load_tagged, save_tagged
from tvmnas.train.config import TrainConfig
from tvmnas.train.network_file import save_network


@dataclass(frozen=True)
class TrainResult:
    valid_acc: float
    test_acc: float | None
    seconds: float
    log: list[dict]


def train_step(net: Network, opt: torch.optim.Optimizer, cfg: TrainConfig, x, y, shards: Shards) -> torch.Tensor:
    """One SGD step, the batch's gradient the mean of its shards' (see `Shards`); returns this rank's (loss sum,
    correct, images)."""
    params = list(net.parameters())

    def compute(shard):
        sx, sy = shard
        with shards.world.autocast():
            logits = net(sx)
        loss = F.cross_entropy(logits.float(), sy, label_smoothing=cfg.label_smoothing)
        return (torch.autograd.grad(loss, params, allow_unused=True),
                [loss.item() * len(sy), int((logits.argmax(1) == sy).sum()), len(sy)])

    results = shards.run(compute, shards.split(x, y))
    shards.set_mean_gradients(params, [grads for grads, _ in results])
    opt.step()
    return Shards.totals([stats for _, stats in results])


TRAIN_CHECKPOINT_FORMAT = "tvmnas-train-checkpoint"
TRAIN_CHECKPOINT_VERSION = 1


def train_network(cfg: TrainConfig, space: SearchSpace, arch: Arch, data: SearchData, out_dir: Path,
                  init: Network | None = None, on_step: Callable[[int, int], None] | None = None,
                  on_epoch: Callable[[dict], None] | None = None, world: World = World(), workers: int = 0,
                  resume: bool = False) -> TrainResult:
    """Train (or, `resume`, continue training) in out_dir. Every batch is computed as `cfg.shards` shards (see
    `Shards`: 1 or N processes train the same network, bit for bit); with more than one, the BatchNorm statistics
    are measured again before every evaluation. In a distributed world only rank 0 writes."""
    out_dir = Path(out_dir)
    world.check_same(cfg.to_json(), "training settings")
    shards = Shards(cfg.shards, world)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = init if init is not None else Network(space, arch)
    net = net.to(world.device, memory_format=torch.channels_last)
    n_images = len(data.train) if cfg.images_per_epoch is None else min(len(data.train), cfg.images_per_epoch)
    steps = math.ceil(n_images / cfg.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
    info = {"classes": list(data.train.classes), "train_config": cfg.to_json(), "valid_acc": None,
            "test_acc": None, "test_images": None}
    log, first_epoch, seconds_before = [], 0, 0.0
    files = TrainRun(out_dir)
    ckpt_path = files.checkpoint
    if resume:
        ckpt = world.broadcast(load_tagged(ckpt_path, TRAIN_CHECKPOINT_FORMAT, TRAIN_CHECKPOINT_VERSION,
                                           "training checkpoint") if world.is_main else None)
        check_same_settings(TrainConfig.from_json(ckpt["config"], str(ckpt_path)).to_json(), cfg.to_json(),
                            ckpt_path)
        net.load_state_dict({k: v.to(world.device) for k, v in ckpt["network"].items()})
        opt.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        log, info = json.loads(ckpt["log"]), json.loads(ckpt["info"])
        first_epoch, seconds_before = len(log), sum(e["seconds"] for e in log)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    start_log(files.log, log, world)
    started = time.perf_counter()

    def one_epoch(epoch: int) -> dict:
        rng = np.random.default_rng([cfg.seed, epoch])
        index = epoch_batches(len(data.train), cfg.batch_size, None, rng, world, take=n_images,
                              multiple=shards.count)
        net.train()
        totals = torch.zeros(3, dtype=torch.float64)
        with shards.steps(net):
            for step, (x, y) in enumerate(batches(data.train, index, world.device, train=True, seed=cfg.seed,
                                                  epoch=epoch, workers=workers)):
                totals += train_step(net, opt, cfg, x, y, shards)
                schedule.step()
                if on_step:
                    on_step(step + 1, len(index))
        world.average([totals])
        if not shards.plain:  # no running statistics were kept during the steps
            recalibrate_batchnorm(net, net, data.train, world.device, workers=workers)
        net.eval()
        valid_loss, valid_acc = evaluate(net, data.valid, world.device, workers=workers)
        info["valid_acc"] = valid_acc
        return {"train_loss": totals[0].item() / totals[2].item(), "train_acc": totals[1].item() / totals[2].item(),
                "valid_loss": valid_loss, "valid_acc": valid_acc}

    def save() -> None:
        save_network(files.network, space, arch, net, info)
        save_tagged(ckpt_path, TRAIN_CHECKPOINT_FORMAT, TRAIN_CHECKPOINT_VERSION,
                    {"config": cfg.to_json(), "network": net.state_dict(), "optimizer": opt.state_dict(),
                     "schedule": schedule.state_dict(), "log": json.dumps(log), "info": json.dumps(info)})

    run_epochs(range(first_epoch, cfg.epochs), one_epoch, save, log, files.log, "train-epoch-saved", world, on_epoch)
    if data.test is not None:
        info["test_acc"] = evaluate(net, data.test, world.device, workers=workers)[1]
        info["test_images"] = len(data.test)
    seconds = seconds_before + time.perf_counter() - started
    info["train_seconds"] = seconds
    if world.is_main:
        save_network(files.network, space, arch, net, info)
        summary = {"arch": list(arch.ops), "space": space.name, "valid_acc": info["valid_acc"],
                   "test_acc": info["test_acc"], "test_images": info["test_images"], "epochs": cfg.epochs,
                   "init": cfg.init, "train_seconds": seconds}
        write_json(files.summary, summary)
    return TrainResult(info["valid_acc"], info["test_acc"], seconds, log)
