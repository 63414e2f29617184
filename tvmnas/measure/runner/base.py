"""The runner interface, the timing settings and the timing of a loaded module (shared by every runner)."""

from __future__ import annotations

import os
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


def set_threads(threads: int) -> None:
    """Run this process's TVM CPU thread pool with `threads` threads (0 leaves TVM's default: half the cores on
    x86).

    Tuned CPU schedules are parallel over the target's `num-cores`; measuring, tuning and deploying all use that
    many threads so that a latency means the same everywhere. The threads share every core this process may
    use (TVM's "big cores" mode would keep its halved default count on x86).
    """
    if threads > 0:
        import tvm

        cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
        tvm.get_global_func("runtime.config_threadpool")(THREADS_SHARE_CORES, threads, cpus)


def set_remote_threads(session, threads: int) -> None:
    """The same on an RPC server, where no CPU list can be passed: TVM's "big cores" mode, which reaches
    `threads` on ARM boards; x86 servers need TVM_NUM_THREADS set when they start (see loopback.start_server)."""
    if threads > 0:
        session.get_function("runtime.config_threadpool")(THREADS_BIG_CORES, threads)


THREADS_SHARE_CORES = -3  # TVM's affinity mode kSpecifyThreadShareAllCore: each thread may use every listed core
THREADS_BIG_CORES = 1


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


def run_loaded_module(lib, device, data: np.ndarray, get_item=None) -> np.ndarray:
    """One call of `main` of a Relax VM module on `device`; the first output, copied back as numpy.
    `get_item(tuple, i)` indexes a result tuple (over RPC it is a remote object: the session's ffi.ArrayGetItem)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(lib, device)
    out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(data, dtype=np.float32), device=device))
    if not hasattr(out, "numpy"):  # torch-imported modules return a tuple
        out = get_item(out, 0) if get_item is not None else out[0]
    return out.numpy()


class Runner(ABC):
    """Times compiled candidate libraries on one device, and gives meta-schedule a runner for the same device."""

    #: names the measuring device in the latency database's target fingerprint
    device_label: str

    @abstractmethod
    def measure(self, lib_path: Path, device_kind: str, input_shape: tuple[int, ...],
                timing: TimingSettings, threads: int = 0) -> MeasureResult:
        """Time one exported library with `threads` CPU threads (see `set_threads`); errors come back in the
        result, not as exceptions."""

    @abstractmethod
    def outputs(self, lib_path: Path, device_kind: str, data: np.ndarray) -> np.ndarray:
        """Run the library once on `data` and return its output (raises on failure)."""

    @abstractmethod
    def meta_schedule_runner(self, device_kind: str, threads: int = 0):
        """A meta-schedule runner that times tuning candidates on the same device, with the same threads."""

    def close(self) -> None:
        """Release sessions and worker processes."""
