"""Time one network with the single-network protocol (export, bench-model, the benches): the network against the
reference module, spread over at least 10 s (`single_protocol` for longer), scaled to the latency database's anchor.

With a `NetworkReference` (a network of the same space, whose latency at the anchor's speed the database holds),
the network is timed in turn with it in the same run and its latency is the ratio of the two times that reference
latency; the ratio's own movement between quarters of the run is its dispersion (`ratio_estimate`). A slow phase of the device slows a whole network more than the one-kernel reference module (1.5x against
1.25x in `bench/results/estimator_repeat_fashion-mnist_kernel-reference.md`); another network slows alike, so the
ratio repeats between measurements where the reference module's scaling does not (Kendall tau between two passes
over 20 networks 0.74 against 0.07: `estimator_repeat_fashion-mnist.md`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tvmnas.errors import TvmnasError
from tvmnas.measure.protocol import SINGLE, Protocol, ratio_estimate
from tvmnas.measure.reference import REFERENCE_FILE
from tvmnas.measure.runner.base import Batch, Runner
from tvmnas.targets import TargetSpec


@dataclass(frozen=True)
class NetworkReference:
    """A network-sized reference: its library, its input and its latency at the anchor's speed of the device."""

    lib_path: Path
    input_shape: tuple[int, ...]
    anchor_ms: float


def time_network(runner: Runner, spec: TargetSpec, lib_path: Path, input_shape: tuple[int, ...],
                 reference: Path, anchor_ms: float | None, protocol: Protocol = SINGLE,
                 on_round: Callable[[int, int], None] | None = None,
                 network_reference: NetworkReference | None = None) -> dict:
    """The measured latency as the manifest and bench-model record it (raises a TvmnasError when it fails)."""
    libs, shapes = [Path(lib_path)], [tuple(input_shape)]
    if network_reference is not None:
        libs.append(Path(network_reference.lib_path))
        shapes.append(tuple(network_reference.input_shape))
    run = runner.measure(Batch(tuple(libs), tuple(shapes), spec.device, spec.runtime_threads, Path(reference),
                               anchor_ms), protocol, on_round)
    timed = run.estimates[0]
    if timed.error:
        raise TvmnasError(f"timing the compiled module failed: {timed.error}")
    measured_ms, speed, flag, dispersion = timed.latency_ms, run.speed, timed.flag, timed.dispersion
    ref_info = {"file": REFERENCE_FILE, "anchor_ms": anchor_ms,
                "this_run_ms": run.reference.raw_ms if run.reference else None}
    if network_reference is not None:
        other = run.estimates[1]
        if other.error:
            raise TvmnasError(f"timing the reference network failed: {other.error}")
        speed = other.raw_ms / network_reference.anchor_ms
        ratio, dispersion, flag = ratio_estimate(timed, other, protocol)
        measured_ms = ratio * network_reference.anchor_ms
        ref_info["network"] = {"file": Path(network_reference.lib_path).name,
                               "input_shape": list(network_reference.input_shape),
                               "anchor_ms": network_reference.anchor_ms, "this_run_ms": other.raw_ms}
    return {"measured_ms": measured_ms, "measured_raw_ms": timed.raw_ms,
            "measured_dispersion": dispersion, "windows": timed.windows, "dropped_windows": timed.dropped,
            "flag": flag, "speed": speed, "seconds": run.seconds, "reference": ref_info,
            "measured_by": runner.device_label, "protocol": protocol.to_json()}
