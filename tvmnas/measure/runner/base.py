"""The runner interface, the timing settings and the timing of a loaded module (shared by every runner)."""

from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TimingSettings:
    """How a module is timed. Samples come in rounds; the latency is the median of the fastest round.

    On these shared machines the speed of a small kernel drifts in phases that last about a second, so the
    median of one long run depends on when it ran; rounds spread over time and the fastest one repeats well.
    """

    warmup_runs: int = 3  # plain calls before timing starts
    warmup_ms: float = 200.0  # then the module loops this long untimed (caches, thread pool, clocks settle)
    rounds: int = 5
    repeat: int = 5  # timed samples per round
    min_repeat_ms: float = 25.0  # each sample loops the module until it lasts at least this long


@dataclass(frozen=True)
class MeasureResult:
    median_ms: float | None  # median of the fastest round
    stdev_ms: float | None  # spread of the samples in that round
    repeats: int  # samples taken in all rounds
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> MeasureResult:
        return cls(None, None, 0, error)


def time_loaded_module(lib, device, input_shape: tuple[int, ...], timing: TimingSettings) -> MeasureResult:
    """Warm up, then time `main` of a Relax VM module on `device` (a local or a remote device)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(lib, device)
    rng = np.random.default_rng(0)
    data = tvm.runtime.tensor(rng.standard_normal(input_shape, dtype=np.float32), device=device)
    for _ in range(timing.warmup_runs):
        vm["main"](data)
    if timing.warmup_ms > 0:
        vm.time_evaluator("main", device, number=1, repeat=1, min_repeat_ms=int(timing.warmup_ms))(data)
    evaluator = vm.time_evaluator("main", device, number=1, repeat=timing.repeat,
                                  min_repeat_ms=int(timing.min_repeat_ms))
    rounds = [[s * 1e3 for s in evaluator(data).results] for _ in range(timing.rounds)]
    fastest = min(rounds, key=statistics.median)
    stdev = statistics.stdev(fastest) if len(fastest) > 1 else 0.0
    return MeasureResult(statistics.median(fastest), stdev, sum(len(r) for r in rounds))


class Runner(ABC):
    """Times compiled candidate libraries on one device, and gives meta-schedule a runner for the same device."""

    #: names the measuring device in the latency database's target fingerprint
    device_label: str

    @abstractmethod
    def measure(self, lib_path: Path, device_kind: str, input_shape: tuple[int, ...],
                timing: TimingSettings) -> MeasureResult:
        """Time one exported library; errors come back in the result, not as exceptions."""

    @abstractmethod
    def meta_schedule_runner(self, device_kind: str):
        """A meta-schedule runner that times tuning candidates on the same device."""

    def close(self) -> None:
        """Release sessions and worker processes."""
