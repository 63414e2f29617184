"""Export a trained network as a deploy bundle for a target.

ONNX model (checked with onnx.checker and against PyTorch in onnxruntime), the TVM module compiled the same way
the candidates were profiled (fused kernels tuned with meta-schedule, records reused from the target's database,
cross-linked for boards), checked against PyTorch and timed on the target's device, and the manifest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tvmnas.data.datasets import PIXEL_MEAN, PIXEL_STD
from tvmnas.deploy.bundle import MODULE_FILE, NETWORK_FILE, ONNX_FILE, SAMPLE_FILE, write_manifest
from tvmnas.errors import TvmnasError
from tvmnas.failpoints import stop_point
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import gpu_binary_paths, import_torch
from tvmnas.measure.level import level_name
from tvmnas.measure.protocol import SINGLE, Protocol
from tvmnas.measure.reference import REFERENCE_FILE, build_reference
from tvmnas.measure.runner.base import Runner
from tvmnas.measure.single import NetworkReference, time_network
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.reference_network import REFERENCE_NETWORK_FILE, build_reference_network
from tvmnas.search.latency import Prediction
from tvmnas.targets import TargetSpec
from tvmnas.train.network_file import TrainedNetwork
from tvmnas.versions import tvm_version


@dataclass(frozen=True)
class ExportSettings:
    tune_trials: int = 8
    protocol: Protocol = field(default_factory=lambda: SINGLE)
    rtol: float = 1e-3  # compiled / ONNX outputs against PyTorch's
    atol: float = 1e-3
    seed: int = 0


def sample_input(trained: TrainedNetwork) -> np.ndarray | None:
    """The first test image of the network's data, preprocessed (the bundle's example input), when readable."""
    from tvmnas.data.datasets import load_search_data
    from tvmnas.data.loading import first_images

    space = trained.space
    try:
        data = load_search_data(trained.info.get("train_config", {}).get("data"), space.input_channels,
                                space.input_size, 0.5, 0, limit=2)
    except TvmnasError:
        return None
    return None if data.test is None else first_images(data.test, np.arange(1))


def export_onnx(net: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """ONNX (opset 17) of the network in deploy form (BatchNorm folded), input `input`, output `logits`."""
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter; no onnxscript needed
        torch.onnx.export(fold_batchnorm(net), (torch.zeros(input_shape),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=17)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def onnx_outputs(path: Path, data: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: data})[0]


def check_close(name: str, got: np.ndarray, want: np.ndarray, settings: ExportSettings) -> float:
    diff = float(np.max(np.abs(got - want)))
    if got.shape != want.shape or not np.allclose(got, want, rtol=settings.rtol, atol=settings.atol):
        raise TvmnasError(f"the {name} output differs from PyTorch's by up to {diff:.3g} "
                          f"(tolerance atol {settings.atol:g}, rtol {settings.rtol:g})")
    return diff


def export_bundle(trained: TrainedNetwork, network_file: Path, spec: TargetSpec, runner: Runner | None,
                  tune_dir: Path, out_dir: Path, settings: ExportSettings, sample: np.ndarray | None = None,
                  predicted: Prediction | None = None, anchor_ms: float | None = None,
                  on_round: Callable[[int, int], None] | None = None,
                  network_anchor_ms: float | None = None) -> dict:
    """Write the bundle into out_dir and return its manifest. `sample` is one preprocessed input (for the runner's
    example command); a seeded random one when not given. The module is timed with the measurement protocol
    against the reference module (kept in the bundle for the native runner), scaled to the latency database's
    `anchor_ms` like the predicted latency's blocks; where the database holds the space's `network_anchor_ms`
    (see `tvmnas.reference_network`), in turn with the space's reference network (kept in the bundle too) and
    scaled by it. Without a runner (no device here) the module is compiled at
    the default level only, and neither checked nor timed (the manifest says so).

    The bundle is written into a hidden `.NAME.partial-*` folder beside out_dir and takes out_dir's place only
    when complete: an export that fails or is killed leaves the bundle that was there before as it was (a kill
    leaves the partial folder, which the next export of out_dir removes)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        manifest = _write_bundle(trained, network_file, spec, runner, tune_dir, staging, settings, sample,
                                 predicted, anchor_ms, on_round, network_anchor_ms)
        stop_point("export-bundle-written")
        old = staging.with_name(staging.name + "-old")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_bundle(trained: TrainedNetwork, network_file: Path, spec: TargetSpec, runner: Runner | None,
                  tune_dir: Path, out_dir: Path, settings: ExportSettings, sample: np.ndarray | None,
                  predicted: Prediction | None, anchor_ms: float | None,
                  on_round: Callable[[int, int], None] | None, network_anchor_ms: float | None) -> dict:
    space, net = trained.space, trained.net.eval()
    shape = space.input_shape
    if sample is None:
        sample = np.random.default_rng(settings.seed).standard_normal(shape).astype(np.float32)
    sample = np.ascontiguousarray(sample.reshape(shape), dtype=np.float32)
    np.save(out_dir / SAMPLE_FILE, sample)
    shutil.copyfile(network_file, out_dir / NETWORK_FILE)
    with torch.no_grad():
        want = net(torch.from_numpy(sample)).numpy()

    export_onnx(net, shape, out_dir / ONNX_FILE)
    onnx_diff = check_close("ONNX (onnxruntime)", onnx_outputs(out_dir / ONNX_FILE, sample), want, settings)

    if runner is None and settings.tune_trials > 0:
        raise TvmnasError("tuning needs the target's device: give a runner, or export at --tune-trials 0")
    start = time.perf_counter()
    built = build_module(import_torch(fold_batchnorm(net), shape), spec, settings.tune_trials, tune_dir, runner,
                         out_dir / MODULE_FILE, settings.seed, started=start)
    reference = build_reference(spec, out_dir / REFERENCE_FILE)
    files = [MODULE_FILE, ONNX_FILE, NETWORK_FILE, SAMPLE_FILE, REFERENCE_FILE]
    tvm_diff, latency = None, {"measured_ms": None, "note": "compile-only export: no device to run on"}
    if runner is not None:
        tvm_diff = check_close("compiled TVM module", runner.outputs(built.lib_path, spec.device, sample), want,
                               settings)
        network_reference = None
        if network_anchor_ms is not None:
            other = build_reference_network(space, spec, settings.tune_trials, tune_dir, runner,
                                            out_dir / REFERENCE_NETWORK_FILE)
            network_reference = NetworkReference(other.lib_path, other.input_shape, network_anchor_ms)
            files.append(REFERENCE_NETWORK_FILE)
        latency = time_network(runner, spec, built.lib_path, shape, reference, anchor_ms, settings.protocol,
                               on_round, network_reference)

    fields = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "module": MODULE_FILE, "onnx": ONNX_FILE, "network": NETWORK_FILE, "sample_input": SAMPLE_FILE,
        "input": {"name": "input", "shape": list(shape), "dtype": "float32",
                  "preprocessing": f"pixels / 255, then (x - {PIXEL_MEAN}) / {PIXEL_STD}; NCHW"},
        "output": {"name": "logits", "shape": list(want.shape), "dtype": "float32"},
        "classes": list(trained.info.get("classes") or [str(i) for i in range(space.num_classes)]),
        "space": space.name, "arch": list(trained.arch.ops),
        "target": {"name": spec.name, "tvm": spec.resolved(), "host": spec.tvm_host},
        "device": spec.device, "threads": spec.runtime_threads,
        "tvm_version": tvm_version(), "level": level_name(settings.tune_trials),
        "accuracy": {"test": trained.info.get("test_acc"), "test_images": trained.info.get("test_images"),
                     "valid": trained.info.get("valid_acc")},
        "latency": with_prediction(latency, predicted, level_name(settings.tune_trials)),
        "expected_output": {"top_class": int(np.argmax(want)), "score": float(np.max(want))},
        "checks": {"onnx_max_abs_diff": onnx_diff, "tvm_max_abs_diff": tvm_diff},
        "seconds": {"tune": round(built.tune_s, 2), "compile": round(built.compile_s, 2),
                    "kernels": built.tasks, "kernels_tuned": built.tasks_tuned},
    }
    gpu_binaries = [p.name for name in (MODULE_FILE, REFERENCE_FILE, REFERENCE_NETWORK_FILE)
                    for p in gpu_binary_paths(out_dir / name)]
    if gpu_binaries:
        fields["gpu_binaries"] = gpu_binaries
    return write_manifest(out_dir, fields, [*files, *gpu_binaries])


def with_prediction(latency: dict, predicted: Prediction | None, module_level: str | None = None) -> dict:
    """The manifest's latency: what was measured (see `time_network`), the database's prediction (the sum of the
    blocks' latencies, calibrated where the space has a composition: its fit is kept as `predicted_composition`)
    and whether the two agree within the noise band."""
    composition = predicted.composition if predicted else None
    latency = {"predicted_ms": predicted.latency_ms if predicted else None,
               "predicted_dispersion": predicted.dispersion if predicted else None,
               "predicted_level": predicted.level if predicted else None,
               "predicted_composition": asdict(composition) if composition else None, **latency}
    latency["agreement"] = agreement(latency, module_level)
    return latency


def agreement(latency: dict, module_level: str | None = None) -> dict | None:
    """Predicted vs measured: their relative difference, and the noise band it is judged against (the sum of the
    two dispersions: how much each estimate moved between quarters of its run, with a floor of 2%). When the
    module was compiled at another level than the table's rows (tuned deeper at export), the difference is what
    that tuning changed, not an error of the prediction: `within_band` is then None."""
    pred, meas = latency.get("predicted_ms"), latency.get("measured_ms")
    if pred is None or meas is None:
        return None
    band = max(NOISE_FLOOR, (latency.get("predicted_dispersion") or 0.0) + (latency.get("measured_dispersion") or 0.0))
    error = (meas - pred) / pred
    table_level = latency.get("predicted_level")
    same = module_level is None or table_level is None or table_level == module_level
    return {"error": error, "band": band, "within_band": abs(error) <= band if same else None}


NOISE_FLOOR = 0.02
