"""The settings of one search run; saved with the run so that a resume rebuilds exactly the same search."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from tvmnas.errors import TvmnasError
from tvmnas.measure.level import DEFAULT_TUNE_TRIALS, level_name

LOSSES = ("add#abs", "add#linear", "mul#log", "none")
DERIVATIONS = ("budget", "argmax")  # see `tvmnas.search.derive`
SUPERNET_WEIGHTS = ("shared", "separate")  # see `tvmnas.search.supernet`
WEIGHT_PATHS = ("alpha", "uniform", "sandwich", "depth", "stage-depth")
ARCH_LR_SCHEDULES = ("constant", "cosine")  # see `arch_lr_at`
METHODS = ("proxyless", "naswot")  # see `tvmnas.search.run` and `tvmnas.search.zero_cost`
# settings added since runs were first saved, with the value those earlier runs used
EARLIER_DEFAULTS = {"method": "proxyless", "evaluations": 500, "supernet": "separate", "weight_paths": "alpha",
                    "shards": 1, "arch_lr_schedule": "constant", "arch_samples": 1, "rerank": 0, "rerank_epochs": 1}


@dataclass(frozen=True)
class SearchConfig:
    space: str
    target: str
    latency_ms: float  # the latency goal T of the derived network
    # "proxyless": train a supernet whose architecture parameters learn from accuracy and latency (the settings
    # below); "naswot": no training, the network within the goal that an untrained network's NASWOT score ranks
    # first, over `evaluations` networks of a regularized evolution (`tvmnas.search.zero_cost`)
    method: str = "proxyless"
    evaluations: int = 500
    # which compilation's latencies to use (see `tvmnas profile --tune-trials`)
    level: str = level_name(DEFAULT_TUNE_TRIALS)
    measured_by: str = "local"  # the measuring device of those latencies (local, rpc:H:P, tracker-key:K)
    # add#abs by default: it pulls E[LAT] to the goal from both sides (see `search_loss` and the README)
    loss: str = "add#abs"
    loss_a: float = 0.2  # mul#log: CE * a * (log E / log T)^b
    loss_b: float = 0.3
    # add#abs / add#linear: the latency term's weight (0.3 with stage-depth scored above 0.1 and 1.0 on the
    # search-vs-random study: bench/results/search_levers_cluttered-fashion-64.md)
    loss_lambda: float = 0.3
    # the network kept at the end: "budget" = the most probable one within the goal (dynamic programming),
    # "argmax" = each layer's most probable path (ProxylessNAS)
    derive: str = "budget"
    # the supernet's candidate weights: "shared" = a layer's candidates slice one set of conv weights (each keeps
    # its BatchNorms), so every step trains what they share; "separate" = one block per candidate (ProxylessNAS),
    # which on cluttered-fashion-64 stays at chance through a 12,800-image warm-up
    # (bench/results/search_levers_cluttered-fashion-64.md)
    supernet: str = "shared"
    epochs: int = 5
    warmup_epochs: int = 1  # uniform path sampling, alpha frozen
    # which paths weight steps train: "alpha" = uniform in the warm-up, then drawn from softmax(alpha)
    # (ProxylessNAS: the paths the search favours train more, which makes them look better still), "uniform" =
    # every path alike throughout, "sandwich" = uniform plus, in the same step, the slowest path of every layer
    # (BigNAS's sandwich rule: the widest and largest weights train every step; twice the work per step),
    # "depth" = every layer that may be skipped is skipped in half the steps, else a uniform block (elastic depth),
    # "stage-depth" = a stage keeps its first d layers, d alike from 1 to all, uniform blocks (Once-for-All): with
    # loss_lambda 0.3, the best of the sets of settings the search-vs-random study compared
    weight_paths: str = "stage-depth"
    images_per_epoch: int | None = 12800  # a fresh seeded sample of the training set each epoch; None = all
    batch_size: int = 64
    # each batch computed as this many fixed shards, each with its own BatchNorm statistics (see
    # `tvmnas.dist.Shards`): the same number in 1 or N processes computes the same search, bit for bit
    shards: int = 1
    weight_lr: float = 0.05  # SGD, cosine schedule over all steps
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    # Adam with betas (0, 0.999) as in ProxylessNAS (no momentum: only the paths drawn in a step get a gate
    # gradient). Its lr 1e-3 suits ~10^4 architecture steps; a search here makes ~400 (a step
    # after every second weight step), so the step is 0.1: a layer's alphas can then move by the ~2 nats that
    # separate a decided layer (p >= 0.5 of 7 paths) from a uniform one
    arch_lr: float = 0.1
    # "cosine": the architecture step decays from arch_lr to 0 over the search after its warm-up, so the last
    # steps refine the decided paths instead of swinging them (the weights' schedule); "constant": arch_lr
    arch_lr_schedule: str = "constant"
    arch_beta2: float = 0.999
    arch_every: int = 2  # one architecture step after every this many weight steps
    # validation batches per architecture step, each with two paths drawn for it: their alpha gradients are
    # averaged before the one update. One draw's gradient is mostly noise (its signal about 0.08 of its SD per path
    # on cluttered-fashion-64: bench/results/arch_gradient_noise.md); each draw costs a forward and backward of a
    # batch (an epoch's validation batches then repeat K times as often). 4 draws did not lift the searched networks
    # there (search_levers_cluttered-fashion-64.md)
    arch_samples: int = 1
    # weight of the mean path entropy in the architecture loss, ramped from 0 after the warm-up to this at the
    # last epoch: the search ends decided within its budget, the data choosing which path each layer keeps
    entropy_weight: float = 0.1
    valid_fraction: float = 1 / 12  # of the training set, for architecture steps (5k of Fashion-MNIST's 60k)
    # after the search, train its this many most probable networks within the goal from scratch and keep the one
    # with the best validation accuracy (0: keep the most probable; see `tvmnas.search.rerank`)
    rerank: int = 0
    rerank_epochs: int = 1  # each of those trainings: this many epochs of images_per_epoch
    seed: int = 0
    data: str | None = None  # IDX folder or ImageFolder root; None = the installed Fashion-MNIST
    limit: int | None = None  # use only the first N training images (smoke tests)

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise TvmnasError(f"the latency goal must be > 0 ms, not {self.latency_ms}")
        if self.method not in METHODS:
            raise TvmnasError(f"unknown search method {self.method!r}; known: {', '.join(METHODS)}")
        if self.evaluations < 1:
            raise TvmnasError(f"evaluations must be >= 1, not {self.evaluations}")
        if self.method != "proxyless" and self.rerank:
            raise TvmnasError(f"rerank follows the proxyless method (its most probable networks), not {self.method}")
        if self.loss not in LOSSES:
            raise TvmnasError(f"unknown latency loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.supernet not in SUPERNET_WEIGHTS:
            raise TvmnasError(f"unknown supernet weights {self.supernet!r}; known: {', '.join(SUPERNET_WEIGHTS)}")
        if self.weight_paths not in WEIGHT_PATHS:
            raise TvmnasError(f"unknown weight-step paths {self.weight_paths!r}; known: {', '.join(WEIGHT_PATHS)}")
        if self.arch_lr_schedule not in ARCH_LR_SCHEDULES:
            raise TvmnasError(f"unknown architecture learning-rate schedule {self.arch_lr_schedule!r}; known: "
                              f"{', '.join(ARCH_LR_SCHEDULES)}")
        if self.derive not in DERIVATIONS:
            raise TvmnasError(f"unknown derivation {self.derive!r}; known: {', '.join(DERIVATIONS)}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise TvmnasError(f"need epochs >= 1 and 0 <= warmup epochs <= epochs (got {self.epochs}, "
                              f"{self.warmup_epochs})")
        if self.images_per_epoch is not None and self.images_per_epoch < self.batch_size:
            raise TvmnasError(f"images_per_epoch must be at least the batch size ({self.batch_size})")
        check_shards(self.batch_size, self.shards)
        if self.arch_samples < 1:
            raise TvmnasError(f"arch_samples must be >= 1, not {self.arch_samples}")
        if self.rerank < 0 or self.rerank_epochs < 1:
            raise TvmnasError(f"need rerank >= 0 and rerank_epochs >= 1 (got {self.rerank}, {self.rerank_epochs})")
        if not 0 < self.valid_fraction < 1:
            raise TvmnasError(f"valid_fraction must be in (0, 1), not {self.valid_fraction}")

    def to_json(self) -> dict:
        return asdict(self)

    def arch_lr_at(self, progress: float) -> float:
        """The architecture learning rate `progress` (0..1) of the way through the search after its warm-up."""
        if self.arch_lr_schedule == "cosine":
            return self.arch_lr * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.arch_lr

    @classmethod
    def from_json(cls, data: dict, source: str) -> SearchConfig:
        data = {**EARLIER_DEFAULTS, **data}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TvmnasError(f"{source}: unknown search settings {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as err:
            raise TvmnasError(f"{source}: {err}") from None


def check_shards(batch_size: int, shards: int) -> None:
    if shards < 1 or batch_size % shards:
        raise TvmnasError(f"a batch of {batch_size} does not split into {shards} equal shards")
