"""Loss and accuracy of a model over a labelled image set (search, training and export checks)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.data.loading import batches, in_order


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], images, device: torch.device = torch.device("cpu"),
             batch_size: int = 256, workers: int = 0) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `forward` (a module in eval mode, or a closure over one) over an image
    set (evaluation transforms)."""
    loss_sum, correct = 0.0, 0
    for x, y in batches(images, in_order(len(images), batch_size), device, workers=workers):
        logits = forward(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(images), correct / len(images)


@torch.no_grad()
def recalibrate_batchnorm(forward: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module, images,
                          device: torch.device = torch.device("cpu"), n_batches: int = 20, batch_size: int = 64,
                          workers: int = 0) -> None:
    """Recompute BatchNorm running statistics for one path of a weight-shared supernet.

    During the search each op's statistics mix inputs from every upstream path that was sampled, so they do
    not fit the derived network; its accuracy is only meaningful after they are measured again on training
    images run through exactly that path (as single-path NAS methods do before evaluating). `n_batches` x
    `batch_size` images of a fixed seeded sample are used, so the result is deterministic (a sample, not the first
    images: an image folder's training set is in class order). Leaves `module` in eval mode.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    module.train()
    sample = np.random.default_rng(0).permutation(len(images))
    index = [sample[np.arange(b * batch_size, (b + 1) * batch_size) % len(images)] for b in range(n_batches)]
    for x, _ in batches(images, index, device, workers=workers):
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.eval()
