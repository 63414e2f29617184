"""Measure on this machine, in this process."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tvmnas.errors import error_line
from tvmnas.measure.runner.base import (MeasureResult, Runner, TimingSettings, run_loaded_module, set_threads,
                                        time_loaded_module)


def local_device(device_kind: str):
    import tvm

    return tvm.cuda(0) if device_kind == "cuda" else tvm.cpu(0)


class LocalRunner(Runner):
    device_label = "local"

    def __init__(self) -> None:
        self._ms_runner = None

    def measure(self, lib_path: Path, device_kind: str, input_shape: tuple[int, ...],
                timing: TimingSettings, threads: int = 0) -> MeasureResult:
        import tvm

        try:
            set_threads(threads)
            device = local_device(device_kind)
            if not device.exist:
                return MeasureResult.failed(f"no {device_kind} device on this machine")
            return time_loaded_module(tvm.runtime.load_module(str(lib_path)), device, input_shape, timing)
        except Exception as err:  # recorded with the candidate; the others go on
            return MeasureResult.failed(error_line(err))

    def outputs(self, lib_path: Path, device_kind: str, data) -> np.ndarray:
        import tvm

        return run_loaded_module(tvm.runtime.load_module(str(lib_path)), local_device(device_kind), data)

    def meta_schedule_runner(self, device_kind: str, threads: int = 0):
        from tvm.s_tir import meta_schedule as ms

        if self._ms_runner is None:
            self._ms_runner = ms.runner.LocalRunner(
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20),
                initializer=functools.partial(set_threads, threads))
        return self._ms_runner
