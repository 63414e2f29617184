"""`bench_onnx`: any ONNX model compiled and timed the tvmnas way; bad models are refused clearly."""

import pytest
import torch

from tvmnas.errors import TvmnasError
from tvmnas.measure.model_bench import bench_onnx
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.targets import load_target

from tests.helpers import FAST


def small_onnx(path, dynamic: bool = False):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}} if dynamic else None, opset_version=17)
    return path


def test_bench_onnx_times_the_model(tmp_path):
    result = bench_onnx(small_onnx(tmp_path / "m.onnx"), load_target("x86-cpu"), LocalRunner(), tmp_path / "tune",
                        0, protocol=FAST)
    assert result["input_shape"] == "1x3x16x16" and result["level"] == "default"
    latency = result["latency"]
    assert latency["measured_ms"] > 0 and latency["windows"] + latency["dropped_windows"] >= FAST.windows
    assert result["kernels"] == 0 and result["kernels_tuned"] == 0


def test_dynamic_input_needs_a_shape(tmp_path):
    path = small_onnx(tmp_path / "m.onnx", dynamic=True)
    with pytest.raises(TvmnasError, match="dynamic dims: give --input-shape"):
        bench_onnx(path, load_target("x86-cpu"), LocalRunner(), tmp_path / "tune", 0, protocol=FAST)
    result = bench_onnx(path, load_target("x86-cpu"), LocalRunner(), tmp_path / "tune", 0, (2, 3, 16, 16),
                        protocol=FAST)
    assert result["input_shape"] == "2x3x16x16"


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(TvmnasError, match="is not a valid ONNX model"):
        bench_onnx(tmp_path / "bad.onnx", load_target("x86-cpu"), LocalRunner(), tmp_path / "tune", 0)
    with pytest.raises(TvmnasError, match="no ONNX model at"):
        bench_onnx(tmp_path / "none.onnx", load_target("x86-cpu"), LocalRunner(), tmp_path / "tune", 0)
