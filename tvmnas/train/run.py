"""Train the searched network on its own (from scratch or from the supernet's weights) and test it once.

The output folder holds network.pt (see network_file.py; rewritten after every epoch), log.jsonl (one line per
epoch) and summary.json (test accuracy, seconds). The test set is read once, after the last epoch.
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
from tvmnas.data.datasets import SearchData, batch_tensors
from tvmnas.errors import TvmnasError
from tvmnas.model.evaluate import evaluate
from tvmnas.model.network import Network
from tvmnas.space import SearchSpace
from tvmnas.torch_file import load_tagged
from tvmnas.train.config import TrainConfig
from tvmnas.train.network_file import save_network


@dataclass(frozen=True)
class TrainResult:
    valid_acc: float
    test_acc: float | None
    seconds: float
    log: list[dict]


def network_from_search(checkpoint: Path, space: SearchSpace, arch: Arch) -> Network:
    """The architecture's network with the supernet's weights of the chosen paths (a search checkpoint)."""
    from tvmnas.search.run import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from tvmnas.search.supernet import Supernet, extract_subnet

    ckpt = load_tagged(checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
    supernet = Supernet(space)
    try:
        supernet.load_state_dict(ckpt["supernet"])
    except (KeyError, RuntimeError) as err:
        raise TvmnasError(f"{checkpoint} does not fit space {space.name!r}: {str(err).splitlines()[0]}") from None
    return extract_subnet(supernet, arch)


def train_network(cfg: TrainConfig, space: SearchSpace, arch: Arch, data: SearchData, out_dir: Path,
                  init: Network | None = None, on_step: Callable[[int, int], None] | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = init if init is not None else Network(space, arch)
    net = net.to(memory_format=torch.channels_last)
    n_images = len(data.train) if cfg.images_per_epoch is None else min(len(data.train), cfg.images_per_epoch)
    steps = math.ceil(n_images / cfg.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
    info = {"classes": list(data.train.classes), "train_config": cfg.to_json(), "valid_acc": None,
            "test_acc": None, "test_images": None}
    log, started = [], time.perf_counter()
    (out_dir / "log.jsonl").write_text("")
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(data.train))[:n_images]
        net.train()
        loss_sum, correct = 0.0, 0
        for step in range(steps):
            x, y = batch_tensors(data.train, order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            if on_step:
                on_step(step + 1, steps)
        net.eval()
        valid_loss, valid_acc = evaluate(net, data.valid)
        entry = {"epoch": epoch, "train_loss": loss_sum / n_images, "train_acc": correct / n_images,
                 "valid_loss": valid_loss, "valid_acc": valid_acc, "seconds": time.perf_counter() - start}
        log.append(entry)
        with (out_dir / "log.jsonl").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        info["valid_acc"] = valid_acc
        save_network(out_dir / "network.pt", space, arch, net, info)
        if on_epoch:
            on_epoch(entry)
    if data.test is not None:
        info["test_acc"] = evaluate(net, data.test)[1]
        info["test_images"] = len(data.test)
    seconds = time.perf_counter() - started
    info["train_seconds"] = seconds
    save_network(out_dir / "network.pt", space, arch, net, info)
    summary = {"arch": list(arch.ops), "space": space.name, "valid_acc": info["valid_acc"],
               "test_acc": info["test_acc"], "test_images": info["test_images"], "epochs": cfg.epochs,
               "init": cfg.init, "train_seconds": seconds}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return TrainResult(info["valid_acc"], info["test_acc"], seconds, log)
