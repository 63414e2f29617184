"""The reference module: a fixed kernel timed beside everything tvmnas measures, to see the device's speed phases.

It is a small matrix product (64x128 by 128x64, about a million multiply-adds) written directly in TIR, parallel
over the target's CPU threads (or spread over GPU blocks), so it needs no tuning, compiles in about a second and
runs in tens of microseconds. It is the same module on every run, so a window in which it runs slow is a window
in which the device ran slow.
"""

from __future__ import annotations

from pathlib import Path

from tvmnas.latency_db import LatencyDB, LatencyRow, LatencyScope
from tvmnas.measure.protocol import Estimate
from tvmnas.targets import TargetSpec
from tvmnas.tvm_compat import SCHEDULED_ATTR

REFERENCE_KEY = "reference_mm64x128x64"  # its block key in the latency database (the anchor row)
REFERENCE_SHAPES = ((64, 128), (128, 64))
REFERENCE_SHAPE_TEXT = "64x128,128x64"
REFERENCE_LEVEL = "anchor"
REFERENCE_FILE = "reference.so"


def reference_irmodule(device_kind: str):
    """The reference as a Relax module with one `main(a, b)`: a CPU kernel (parallel rows, vectorized columns)
    or a GPU kernel (a block per row, a thread per column)."""
    from tvm import relax
    from tvm.script import tirx as T

    if device_kind == "cuda":
        @T.prim_func
        def kernel(a: T.Buffer((64, 128), "float32"), b: T.Buffer((128, 64), "float32"),
                   c: T.Buffer((64, 64), "float32")):
            T.func_attr({"global_symbol": "kernel", "tir.noalias": True, SCHEDULED_ATTR: True})
            for i in T.thread_binding(64, thread="blockIdx.x"):
                for j in T.thread_binding(64, thread="threadIdx.x"):
                    c[i, j] = T.float32(0)
                    for k in range(128):
                        c[i, j] = c[i, j] + a[i, k] * b[k, j]
    else:
        @T.prim_func
        def kernel(a: T.Buffer((64, 128), "float32"), b: T.Buffer((128, 64), "float32"),
                   c: T.Buffer((64, 64), "float32")):
            T.func_attr({"global_symbol": "kernel", "tir.noalias": True})
            for i in T.parallel(64):
                for j in T.vectorized(64):
                    c[i, j] = T.float32(0)
                for k in range(128):
                    for j in T.vectorized(64):
                        c[i, j] = c[i, j] + a[i, k] * b[k, j]

    a = relax.Var("a", relax.TensorType(REFERENCE_SHAPES[0], "float32"))
    b = relax.Var("b", relax.TensorType(REFERENCE_SHAPES[1], "float32"))
    builder = relax.BlockBuilder()
    gvar = builder.add_func(kernel, "kernel")
    with builder.function("main", [a, b]):
        out = builder.emit(relax.call_tir(gvar, [a, b], relax.TensorType((64, 64), "float32")))
        builder.emit_func_output(out)
    return builder.get()


def build_reference(spec: TargetSpec, path: Path) -> Path:
    """Compile the reference for the target and export it like a candidate (cross-linked for boards)."""
    import tvm

    from tvmnas.measure.compile import export_library

    target = spec.tvm()
    with target:
        executable = tvm.compile(reference_irmodule(spec.device), target=target)
    return export_library(executable, Path(path), spec)


def read_anchor(db: LatencyDB, scope: LatencyScope) -> float | None:
    """The reference's latency when this database first measured the scope's target (None before that; the
    scope's level does not matter: the reference has a level of its own)."""
    row = db.get(scope.at_level(REFERENCE_LEVEL), REFERENCE_KEY, REFERENCE_SHAPE_TEXT)
    return row.latency_ms if row is not None and row.ok else None


def write_anchor(db: LatencyDB, scope: LatencyScope, target_name: str, device_label: str,
                 reference: Estimate) -> None:
    """Store the reference's latency of a run as the anchor that later latencies of the target are scaled to."""
    db.put(LatencyRow.measured(scope.at_level(REFERENCE_LEVEL), REFERENCE_KEY, REFERENCE_SHAPE_TEXT,
                               target_name=target_name, device=device_label, latency_ms=reference.raw_ms,
                               raw_ms=reference.raw_ms, dispersion=reference.dispersion, windows=reference.windows,
                               dropped_windows=0, speed=1.0, compile_s=0.0, tune_s=0.0, tasks_tuned=0, error=None,
                               flag=reference.flag))
