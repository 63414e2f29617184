"""Compile and time any ONNX model on a target, the way tvmnas compiles searched networks (`tvmnas bench-model`).

Users compare the network they have with a searched one on the same device, compilation level and timing.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Callable

from tvmnas.errors import TvmnasError
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import import_onnx
from tvmnas.measure.level import level_name
from tvmnas.measure.protocol import SINGLE, Protocol
from tvmnas.measure.reference import REFERENCE_FILE, build_reference
from tvmnas.measure.runner.base import Runner
from tvmnas.measure.single import time_network
from tvmnas.targets import TargetSpec

Progress = Callable[[str, int, int, str], None]


def load_onnx(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise TvmnasError(f"no ONNX model at {path}") from None
    except Exception as err:
        raise TvmnasError(f"{path} is not a valid ONNX model: {str(err).splitlines()[0]}") from None
    return model


def graph_input(model, shape: tuple[int, ...] | None) -> tuple[str, tuple[int, ...]]:
    """The model's one real input (initializers excluded) and its static shape (or `shape` when given)."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise TvmnasError(f"bench-model handles models with one input; this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if shape is not None:
        if len(shape) != len(dims):
            raise TvmnasError(f"--input-shape has {len(shape)} dims, the model's input {inputs[0].name!r} has "
                              f"{len(dims)}")
        return inputs[0].name, shape
    if any(not d.HasField("dim_value") for d in dims):
        raise TvmnasError(f"the model's input {inputs[0].name!r} has dynamic dims: give --input-shape")
    return inputs[0].name, tuple(int(d.dim_value) for d in dims)


def check_input_fits(name: str, shape: tuple[int, ...], share: float = 1 / 8) -> None:
    """Refuse an input whose float32 data alone would take more than `share` of this machine's memory (the
    timing's input is made here, whatever device runs the model): one line instead of an allocation failure."""
    import psutil

    need, have = math.prod(shape) * 4, psutil.virtual_memory().total
    if need > share * have:
        raise TvmnasError(f"the input {name!r} of shape {'x'.join(map(str, shape))} would take "
                          f"{need / 2**30:.1f} GiB, over 1/{round(1 / share)} of this machine's {have / 2**30:.0f} GiB "
                          "of memory")


def bench_onnx(path: Path, spec: TargetSpec, runner: Runner, tune_dir: Path, tune_trials: int,
               input_shape: tuple[int, ...] | None = None, anchor_ms: float | None = None,
               progress: Progress | None = None, protocol: Protocol = SINGLE) -> dict:
    """Import, build (tuning what the target's database lacks) and time the model with the single-network
    protocol; `progress(phase, done, total, detail)` hears of tuning and timing."""
    model = load_onnx(path)
    name, shape = graph_input(model, input_shape)
    check_input_fits(name, shape)
    start = time.perf_counter()
    try:
        mod = import_onnx(model, name, shape)
    except Exception as err:
        raise TvmnasError(f"TVM cannot import {path}: {str(err).splitlines()[0]}") from None
    with tempfile.TemporaryDirectory(prefix="tvmnas-") as tmp:
        if progress:
            progress("compile", 0, 1, "fusing and compiling")
        built = build_module(mod, spec, tune_trials, tune_dir, runner, Path(tmp) / "network.so", started=start,
                             progress=progress)
        if progress:
            progress("compile", 1, 1, "")
        reference = build_reference(spec, Path(tmp) / REFERENCE_FILE)
        latency = time_network(runner, spec, built.lib_path, shape, reference, anchor_ms, protocol,
                               on_round=(lambda d, t: progress("measure", d, t, "")) if progress else None)
    return {"model": str(path), "input_shape": "x".join(map(str, shape)), "target": spec.name,
            "level": level_name(tune_trials), "measured_by": runner.device_label, "latency": latency,
            "kernels": built.tasks, "kernels_tuned": built.tasks_tuned, "tune_s": built.tune_s,
            "compile_s": built.compile_s}
