"""Loss and accuracy of a model over a labelled image set (search, training and export checks)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.data.datasets import ImageSet, batch_tensors


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], images: ImageSet,
             batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `forward` (a module in eval mode, or a closure over one)."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        x, y = batch_tensors(images, np.arange(start, min(start + batch_size, len(images))))
        logits = forward(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(images), correct / len(images)


@torch.no_grad()
def recalibrate_batchnorm(forward: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
                          images: ImageSet, batches: int = 20, batch_size: int = 64) -> None:
    """Recompute BatchNorm running statistics for one path of a weight-shared supernet.

    During the search each op's statistics mix inputs from every upstream path that was sampled, so they do
    not fit the derived network; its accuracy is only meaningful after they are measured again on training
    images run through exactly that path (as single-path NAS methods do before evaluating). The first
    `batches` x `batch_size` images are used, so the result is deterministic. Leaves `module` in eval mode.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    module.train()
    for b in range(batches):
        x, _ = batch_tensors(images, np.arange(b * batch_size, (b + 1) * batch_size) % len(images))
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.eval()
