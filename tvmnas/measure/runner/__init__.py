"""Runners time a compiled module on the target's device: `local.py` in this process, `rpc.py` over TVM RPC."""

from tvmnas.measure.runner.base import MeasureResult, Runner, TimingSettings

__all__ = ["MeasureResult", "Runner", "TimingSettings"]
