"""PyTorch module -> Relax -> compiled TVM module, at one of two levels.

`default`: TVM's default pipeline for the target (no schedules on CPU, dlight on GPU).
`tuned-N`: the same fused kernels with the best meta-schedule records from the target's database, each kernel
tuned with N trials. The exported network later goes through exactly these functions, so a latency measured here
comes from the compilation that deploys.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import torch

from tvmnas.targets import TargetSpec
from tvmnas.tvm_compat import apply_tuning_records, load_tensor_intrinsics, onnx_clip_as_relax_clip

LOG = logging.getLogger(__name__)

# Bumped whenever what a candidate compiles to changes (passes, layouts, schedules): its latencies are then
# measured again (see `tvmnas.measure.method`).
PIPELINE_VERSION = 1


def import_torch(module: torch.nn.Module, input_shape: tuple[int, ...]):
    """Export an eval-mode module with torch.export and import it into a Relax IRModule (weights as constants).

    The module is compiled as given: callers pass what deploys (a network with its BatchNorm folded, see
    `tvmnas.model.blocks.fold_batchnorm`)."""
    from tvm.relax.frontend.torch import from_exported_program

    example = torch.zeros(input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notices
        exported = torch.export.export(module.eval(), (example,))
        return from_exported_program(exported)


def import_onnx(model, input_name: str, input_shape: tuple[int, ...]):
    """Import an ONNX model into a Relax IRModule, its Clip nodes with constant bounds (ReLU6) as `relax.clip`,
    which a layout pass can follow (see `onnx_clip_as_relax_clip`)."""
    from tvm.relax.frontend.onnx import from_onnx

    with onnx_clip_as_relax_clip():
        return from_onnx(model, shape_dict={input_name: list(input_shape)})


def fuse(mod, target, layout: str = "nchw", interior: bool = False):
    """Legalize and fuse into the TIR kernels that meta-schedule tunes (TVM's "zero" pipeline, without tuning),
    with the convolutions in `layout` (see `tvmnas.measure.layout`); `interior`: a candidate block, which takes and
    returns that layout as its neighbours in a network do (`without_boundary_transforms`)."""
    import tvm
    from tvm import relax

    from tvmnas.measure.layout import LEGALIZE, check_layout, convert_layout, without_boundary_transforms

    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(LEGALIZE),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    check_layout(layout)
    with target:
        try:
            converted = convert_layout(mod, layout)
        except Exception as err:  # noqa: BLE001 - TVM's ConvertLayout cannot handle some op of a user's model
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            LOG.warning("convolutions stay in NCHW: TVM cannot move this module to %s (%s)", layout, reason)
            converted = mod
        return passes(without_boundary_transforms(converted) if interior else converted)


def compile_fused(fused_mod, target, database=None):
    """Compile a fused module; with a meta-schedule database, its best records are applied first."""
    import tvm

    if database is not None:
        fused_mod = apply_tuning_records(fused_mod, database)
    if spec_device(target) == "cuda":  # the default GPU pipeline may ask for the CUDA intrinsics
        load_tensor_intrinsics(("cuda",))
    with target:
        return tvm.compile(fused_mod, target=target)


def spec_device(target) -> str:
    return "cuda" if target.kind.name == "cuda" else "cpu"


def export_library(executable, path: Path, spec: TargetSpec) -> Path:
    """Write a shared library that the target's machine can load (cross-linked when the target says so), and for
    GPU targets the compiled GPU code beside it (see `write_gpu_binaries`)."""
    path = Path(path)
    if spec.cross_compiler:
        from tvm.support.cc import cross_compiler

        executable.export_library(str(path), fcompile=cross_compiler(spec.cross_compiler))
    else:
        executable.export_library(str(path))
    if spec.device == "cuda":
        write_gpu_binaries(executable, path, spec)
    return path


def gpu_source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def gpu_binary_paths(lib_path: Path) -> list[Path]:
    """The compiled GPU code written beside a library: `<library>.<source key>.fatbin`."""
    lib_path = Path(lib_path)
    return sorted(lib_path.parent.glob(f"{lib_path.name}.*.fatbin"))


def write_gpu_binaries(executable, lib_path: Path, spec: TargetSpec) -> list[Path]:
    """Compile each CUDA module of the library with nvcc into a fatbin named by the hash of its source.

    This TVM build's compiler keeps CUDA modules as source; loading one makes the runtime call
    `tvm_callback_cuda_compile(source)`, which Python TVM answers with NVRTC or nvcc on the GPU machine. The
    native runner answers it with these files instead, so a GPU machine needs neither Python TVM nor a CUDA
    compiler.
    """
    from tvm.support.nvcc import compile_cuda

    paths = []
    for module in _modules_of_kind(executable.mod, "cuda"):
        source = str(module.inspect_source(""))
        with spec.tvm():  # nvcc's -arch comes from the current target
            binary = compile_cuda(source, target_format="fatbin", compiler="nvcc")
        path = Path(f"{lib_path}.{gpu_source_key(source)}.fatbin")
        path.write_bytes(bytes(binary))
        paths.append(path)
    return paths


def _modules_of_kind(module, kind: str) -> list:
    found = [module] if module.kind == kind else []
    for child in module.imports:
        found += _modules_of_kind(child, kind)
    return found
