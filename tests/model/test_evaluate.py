"""Evaluation helpers: accuracy of a model, and BatchNorm recalibration for one supernet path."""

import numpy as np
import torch

from tvmnas.data.datasets import ImageSet
from tvmnas.data.loading import batches
from tvmnas.model.evaluate import evaluate, recalibrate_batchnorm


def images(n=40):
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 255, (n, 1, 4, 4)).astype(np.uint8), rng.integers(0, 2, n), ("a", "b"))


def test_recalibration_measures_the_path_statistics():
    torch.manual_seed(0)
    conv, norm = torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3, momentum=0.1)
    model = torch.nn.Sequential(conv, norm)
    norm.running_mean.fill_(5.0)  # stale statistics from other paths
    data = images()
    recalibrate_batchnorm(model, model, data, n_batches=4, batch_size=10)
    with torch.no_grad():
        x, _ = next(batches(data, [np.arange(40)], torch.device("cpu")))
        out = conv(x)
    # four equal batches with a cumulative average: the mean over all 40 images
    assert torch.allclose(norm.running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert norm.momentum == 0.1 and not model.training


def test_evaluate_counts_correct_predictions():
    data = images()
    always_b = lambda x: torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)
    loss, acc = evaluate(always_b, data, batch_size=16)
    assert acc == float(np.mean(data.labels == 1))
    assert loss > 0


def test_recalibration_samples_across_a_set_in_class_order():
    """An image folder's training set is sorted by class: the statistics come from a seeded sample of all of it,
    not from its first images (which would all be of the first class)."""
    rng = np.random.default_rng(1)
    dark, bright = rng.integers(0, 50, (200, 1, 4, 4)), rng.integers(200, 255, (200, 1, 4, 4))
    data = ImageSet(np.concatenate([dark, bright]).astype(np.uint8), np.repeat([0, 1], 200), ("dark", "bright"))
    norm = torch.nn.BatchNorm2d(1)
    recalibrate_batchnorm(norm, norm, data, n_batches=2, batch_size=20)  # 40 of the 400 images
    with torch.no_grad():
        x, _ = next(batches(data, [np.arange(400)], torch.device("cpu")))
    dark_mean, bright_mean = float(x[:200].mean()), float(x[200:].mean())
    assert dark_mean + 0.25 * (bright_mean - dark_mean) < float(norm.running_mean) < \
        bright_mean - 0.25 * (bright_mean - dark_mean)
