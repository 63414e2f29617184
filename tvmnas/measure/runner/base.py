"""The runner interface, and the timing of loaded modules that every runner shares.

A runner loads a batch of compiled libraries (and the reference module) on its device and times them with the
measurement protocol (`tvmnas.measure.protocol`), interleaved; local and RPC runners differ only in where the
libraries are loaded.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tvmnas.measure.protocol import Interleaved, Protocol, measure_interleaved
from tvmnas.measure.reference import REFERENCE_SHAPES


@dataclass(frozen=True)
class Batch:
    """Libraries to time together on one device, with `threads` CPU threads (see `set_threads`)."""

    libs: tuple[Path, ...]
    input_shapes: tuple[tuple[int, ...], ...]  # one per library (each module's `main` takes one float32 input)
    device_kind: str
    threads: int = 0
    reference: Path | None = None  # the reference module's library (see `tvmnas.measure.reference`)
    anchor_ms: float | None = None  # the reference's anchor latency in the database, when it has one


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


class VmTimer:
    """A `WindowTimer` over `main` of a Relax VM module on a (local or remote) device, with seeded random inputs."""

    def __init__(self, lib, device, input_shapes: tuple[tuple[int, ...], ...]) -> None:
        import tvm
        from tvm import relax

        self._vm, self._device = relax.VirtualMachine(lib, device), device
        rng = np.random.default_rng(0)
        self._args = [tvm.runtime.tensor(rng.standard_normal(shape, dtype=np.float32), device=device)
                      for shape in input_shapes]
        self._evaluators: dict[tuple[int, int], Callable] = {}

    def warm_up(self, warmup_ms: float) -> float:
        self._vm["main"](*self._args)
        result = self._vm.time_evaluator("main", self._device, number=1, repeat=1,
                                         min_repeat_ms=max(1, int(warmup_ms)))(*self._args)
        return result.mean * 1e3

    def window(self, calls: int, samples: int) -> list[float]:
        if (calls, samples) not in self._evaluators:
            self._evaluators[calls, samples] = self._vm.time_evaluator("main", self._device, number=calls,
                                                                       repeat=samples)
        return [s * 1e3 for s in self._evaluators[calls, samples](*self._args).results]


class CallableTimer:
    """A `WindowTimer` over any Python callable that runs one inference (onnxruntime, PyTorch, a Python-called TVM
    module), timed with the clock around back-to-back calls, so other runtimes go through the same protocol."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._call = call

    def warm_up(self, warmup_ms: float) -> float:
        import time

        calls, start = 0, time.perf_counter()
        while (elapsed := (time.perf_counter() - start) * 1e3) < warmup_ms or calls == 0:
            self._call()
            calls += 1
        return elapsed / calls

    def window(self, calls: int, samples: int) -> list[float]:
        import time

        out = []
        for _ in range(samples):
            start = time.perf_counter()
            for _ in range(calls):
                self._call()
            out.append((time.perf_counter() - start) * 1e3 / calls)
        return out


def time_loaded(modules: list, reference, device, batch: Batch, protocol: Protocol,
                on_round: Callable[[int, int], None] | None = None) -> Interleaved:
    """Time loaded modules (one per library of the batch, None where loading failed) with the protocol."""
    timers = [_Failed("the library did not load") if m is None else VmTimer(m, device, (shape,))
              for m, shape in zip(modules, batch.input_shapes)]
    ref = None if reference is None else VmTimer(reference, device, REFERENCE_SHAPES)
    return measure_interleaved(timers, ref, protocol, batch.anchor_ms, on_round=on_round)


class _Failed:
    def __init__(self, error: str) -> None:
        self.error = error

    def warm_up(self, warmup_ms: float) -> float:
        raise RuntimeError(self.error)

    def window(self, calls: int, samples: int) -> list[float]:
        raise RuntimeError(self.error)


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
    """Times compiled libraries on one device, and gives meta-schedule a runner for the same device."""

    #: names the measuring device in the latency database's target fingerprint
    device_label: str
    #: meta-schedule's trials are built in memory and timed in this process (no library files)
    tunes_in_process: bool = False

    @abstractmethod
    def measure(self, batch: Batch, protocol: Protocol,
                on_round: Callable[[int, int], None] | None = None) -> Interleaved:
        """Time the batch's libraries interleaved, with the protocol. Errors come back in the estimates: a
        library that fails to load or run fails alone; a device that cannot be reached fails them all."""

    @abstractmethod
    def outputs(self, lib_path: Path, device_kind: str, data: np.ndarray) -> np.ndarray:
        """Run the library once on `data` and return its output (raises on failure)."""

    @abstractmethod
    def meta_schedule_runner(self, device_kind: str, threads: int = 0):
        """A meta-schedule runner that times tuning candidates on the same device, with the same threads."""

    def close(self) -> None:
        """Release sessions and worker processes (a server reached through a tracker is free for others again
        only once its session is closed: do not leave that to the garbage collector)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
