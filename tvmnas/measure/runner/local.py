"""Measure on this machine, in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tvmnas.measure.protocol import Interleaved, Protocol
from tvmnas.measure.runner.base import Batch, Runner, run_loaded_module, set_threads, time_loaded


def local_device(device_kind: str):
    import tvm

    return tvm.cuda(0) if device_kind == "cuda" else tvm.cpu(0)


def _load(path: Path):
    import tvm

    try:
        return tvm.runtime.load_module(str(path))
    except Exception:  # noqa: BLE001 - that library fails alone
        return None


class LocalRunner(Runner):
    device_label = "local"
    tunes_in_process = True

    def __init__(self, trial_cache: str = "hot") -> None:
        self.trial_cache = trial_cache  # how tuning times its trials: hot, cold or auto (`make_in_process_runner`)

    def measure(self, batch: Batch, protocol: Protocol,
                on_round: Callable[[int, int], None] | None = None) -> Interleaved:
        """Time the batch in this process (errors come back in the estimates)."""
        device = local_device(batch.device_kind)
        if not device.exist:
            return Interleaved.failed(len(batch.libs), f"no {batch.device_kind} device on this machine")
        set_threads(batch.threads)
        reference = None if batch.reference is None else _load(batch.reference)
        return time_loaded([_load(p) for p in batch.libs], reference, device, batch, protocol, on_round)

    def outputs(self, lib_path: Path, device_kind: str, data) -> np.ndarray:
        import tvm

        return run_loaded_module(tvm.runtime.load_module(str(lib_path)), local_device(device_kind), data)

    def meta_schedule_runner(self, device_kind: str, threads: int = 0):
        """Trials built in memory and timed in this process (see `tuning.make_in_process_runner`)."""
        from tvmnas.measure.tuning import make_in_process_runner

        return make_in_process_runner(device_kind, threads, self.trial_cache)
