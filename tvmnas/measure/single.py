"""Time one network with the single-network protocol (export, bench-model, the benches): the network against the
reference module, spread over at least 10 s (`single_protocol` for longer), scaled to the latency database's anchor."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tvmnas.errors import TvmnasError
from tvmnas.measure.protocol import SINGLE, Protocol
from tvmnas.measure.reference import REFERENCE_FILE
from tvmnas.measure.runner.base import Batch, Runner
from tvmnas.targets import TargetSpec


def time_network(runner: Runner, spec: TargetSpec, lib_path: Path, input_shape: tuple[int, ...],
                 reference: Path, anchor_ms: float | None, protocol: Protocol = SINGLE,
                 on_round: Callable[[int, int], None] | None = None) -> dict:
    """The measured latency as the manifest and bench-model record it (raises a TvmnasError when it fails)."""
    run = runner.measure(Batch((Path(lib_path),), (tuple(input_shape),), spec.device, spec.runtime_threads,
                               Path(reference), anchor_ms), protocol, on_round)
    timed = run.estimates[0]
    if timed.error:
        raise TvmnasError(f"timing the compiled module failed: {timed.error}")
    return {"measured_ms": timed.latency_ms, "measured_raw_ms": timed.raw_ms,
            "measured_dispersion": timed.dispersion, "windows": timed.windows, "dropped_windows": timed.dropped,
            "flag": timed.flag, "speed": run.speed, "seconds": run.seconds,
            "reference": {"file": REFERENCE_FILE, "anchor_ms": anchor_ms,
                          "this_run_ms": run.reference.raw_ms if run.reference else None},
            "measured_by": runner.device_label, "protocol": protocol.to_json()}
