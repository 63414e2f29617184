"""The runner for a target: this machine, or the RPC endpoint the user named (checked reachable first)."""

from __future__ import annotations

from tvmnas.errors import TvmnasError
from tvmnas.measure.runner.base import Runner
from tvmnas.measure.runner.local import LocalRunner, local_device
from tvmnas.measure.runner.rpc import RpcEndpoint, RpcRunner, check_reachable
from tvmnas.targets import TargetSpec


def make_runner(spec: TargetSpec, endpoint: RpcEndpoint | None) -> Runner:
    if endpoint is not None:
        check_reachable(endpoint)
        return RpcRunner(endpoint)
    if spec.rpc_key:
        raise TvmnasError(f"target {spec.name!r} runs on a remote device: give --tracker HOST:PORT "
                          f"(key {spec.rpc_key!r}) or --rpc HOST:PORT")
    if spec.device == "cuda" and not local_device("cuda").exist:
        raise TvmnasError(f"target {spec.name!r} needs a CUDA GPU and this machine has none: "
                          "measure through --rpc or --tracker")
    return LocalRunner()
