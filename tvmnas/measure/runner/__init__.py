"""Runners time compiled modules on the target's device: `local.py` in this process, `rpc.py` over TVM RPC."""

from tvmnas.measure.runner.base import Batch, Runner

__all__ = ["Batch", "Runner"]
