"""Window timers of sampled networks and of the reference module, for the benches that time them in one
interleaved run themselves (`tvmnas.measure.protocol.measure_interleaved`) rather than through the verbs."""

from __future__ import annotations

from pathlib import Path

import torch

from tvmnas.arch import Arch
from tvmnas.measure.build import BuiltModule, build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.reference import REFERENCE_FILE, REFERENCE_SHAPES, build_reference
from tvmnas.measure.runner.base import VmTimer
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.model.network import Network
from tvmnas.space import SearchSpace
from tvmnas.targets import TargetSpec


def network_timer(space: SearchSpace, ops: tuple[str, ...], seed: int, spec: TargetSpec, tune_trials: int,
                  tune_dir: Path, runner, lib_path: Path) -> tuple[VmTimer, BuiltModule]:
    """A network of the space (weights seeded), built like an export builds it, loaded for timing on the CPU."""
    import tvm

    torch.manual_seed(seed)
    net = Network(space, Arch(space.name, tuple(ops))).eval()
    built = build_module(import_torch(fold_batchnorm(net), space.input_shape), spec, tune_trials, tune_dir, runner,
                         Path(lib_path))
    return VmTimer(tvm.runtime.load_module(str(built.lib_path)), tvm.cpu(), (built.input_shape,)), built


def reference_timer(spec: TargetSpec, folder: Path) -> VmTimer:
    """The reference module, built into folder and loaded for timing on the CPU."""
    import tvm

    lib = build_reference(spec, Path(folder) / REFERENCE_FILE)
    return VmTimer(tvm.runtime.load_module(str(lib)), tvm.cpu(), REFERENCE_SHAPES)
