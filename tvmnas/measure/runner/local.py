"""Measure on this machine, in this process."""

from __future__ import annotations

from pathlib import Path

from tvmnas.measure.runner.base import MeasureResult, Runner, TimingSettings, time_loaded_module


def local_device(device_kind: str):
    import tvm

    return tvm.cuda(0) if device_kind == "cuda" else tvm.cpu(0)


class LocalRunner(Runner):
    device_label = "local"

    def __init__(self) -> None:
        self._ms_runner = None

    def measure(self, lib_path: Path, device_kind: str, input_shape: tuple[int, ...],
                timing: TimingSettings) -> MeasureResult:
        import tvm

        try:
            device = local_device(device_kind)
            if not device.exist:
                return MeasureResult.failed(f"no {device_kind} device on this machine")
            return time_loaded_module(tvm.runtime.load_module(str(lib_path)), device, input_shape, timing)
        except Exception as err:  # recorded with the candidate; the others go on
            return MeasureResult.failed(f"{type(err).__name__}: {err}".splitlines()[0])

    def meta_schedule_runner(self, device_kind: str):
        from tvm.s_tir import meta_schedule as ms

        if self._ms_runner is None:
            self._ms_runner = ms.runner.LocalRunner(
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20))
        return self._ms_runner
