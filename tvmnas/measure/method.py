"""The method tag of a latency row: which measurement protocol and which compile pipeline produced it.

A row of another method is kept in the database but never used: changing either (a new protocol, another layout or
fusion in the pipeline) makes `tvmnas profile` measure again.
"""

from tvmnas.latency_db import LatencyScope
from tvmnas.measure.compile import PIPELINE_VERSION
from tvmnas.measure.protocol import PROTOCOL_VERSION
from tvmnas.versions import tvm_version

METHOD = f"protocol{PROTOCOL_VERSION}-pipeline{PIPELINE_VERSION}"


def latency_scope(spec, device_label: str, level: str) -> LatencyScope:
    """The scope of the latencies `spec` (a `TargetSpec`) gets when measured by `device_label` ("local", or an RPC
    endpoint's label) at `level`, with this TVM and this method: how every reader and writer names its rows."""
    return LatencyScope(spec.fingerprint(device_label), tvm_version(), METHOD, level)
