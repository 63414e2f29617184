"""Convolution layouts: every layout computes what NCHW computes, and the blocked region is not cut at activations."""

import numpy as np
import pytest
import torch

from tvmnas.measure.compile import compile_fused, fuse, import_onnx, import_torch
from tvmnas.measure.layout import (
    LAYOUTS,
    blocked_conv_layouts,
    check_layout,
    input_shape,
    pad_inner_channels,
    resolve_layout,
)


class Mixed(torch.nn.Module):
    """A one-channel stem, an MBConv with ReLU6 and a depthwise 7x7, a residual add, a strided grouped 3x3 with
    ReLU, a strided depthwise 5x5, channels that 16 does not divide (24), and a head: the shapes a layout must
    handle. With `sliced`, the residual is added to a strided slice (a shape ConvertLayout cannot follow in ONNX)."""

    def __init__(self, sliced: bool = False):
        super().__init__()
        self.sliced = sliced
        self.stem = torch.nn.Conv2d(1, 16, 3, padding=1, stride=2)
        self.expand = torch.nn.Conv2d(16, 24, 1)
        self.depthwise = torch.nn.Conv2d(24, 24, 7, padding=3, groups=24, stride=2 if sliced else 1)
        self.project = torch.nn.Conv2d(24, 16, 1)
        self.grouped = torch.nn.Conv2d(16, 32, 3, padding=1, groups=4, stride=1 if sliced else 2)
        self.down = torch.nn.Conv2d(32, 32, 5, padding=2, groups=32, stride=2)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.nn.functional.relu6(self.depthwise(torch.nn.functional.relu6(self.expand(x))))
        y = (x[:, :, ::2, ::2] if self.sliced else x) + self.project(y)
        y = torch.nn.functional.relu6(self.down(torch.relu(self.grouped(y))))
        return self.head(y.mean((2, 3)))


def onnx_model(net: torch.nn.Module, x: torch.Tensor):
    import io
    import warnings

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, input_names=["x"], dynamo=False, opset_version=13)
    model = onnx.load_from_string(buffer.getvalue())
    assert any(node.op_type == "Clip" for node in model.graph.node)
    return model


def run(fused, x: np.ndarray, target) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(compile_fused(fused, target), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


def kernels(fused) -> list[str]:
    import tvm

    return [gvar.name_hint for gvar, func in fused.functions_items() if isinstance(func, tvm.tirx.PrimFunc)]


def tvm_target():
    import tvm

    return tvm.target.Target({"kind": "llvm", "num-cores": 1})


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(0)
    net = Mixed().eval()
    x = torch.randn(1, 1, 28, 28)
    return net(x).detach().numpy(), import_torch(net, (1, 1, 28, 28)), x.numpy(), tvm_target()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_computes_what_pytorch_computes(mixed, layout):
    expected, mod, x, target = mixed
    np.testing.assert_allclose(run(fuse(mod, target, layout), x, target), expected, rtol=1e-4, atol=1e-5)


def blocked_region_is_whole(fused) -> None:
    names = kernels(fused)
    transforms = [n for n in names if "layout_transform" in n]
    # into the blocked region after the stem (its one input channel stays NCHW) and out of it before the head;
    # a ReLU6 that layouts could not follow would add two more each
    assert len(transforms) <= 2, names
    assert sum("conv2d" in n and "maximum" in n for n in names) == 3, names  # each ReLU6 fused into its conv


def test_blocked_region_is_not_cut_by_relu6(mixed):
    _, mod, _, target = mixed
    blocked_region_is_whole(fuse(mod, target, "nchw8c"))
    assert "R.clip" in mod.script()  # the caller's module is left as it was


def test_onnx_relu6_follows_the_layout_too():
    """TVM's ONNX frontend lowers Clip to kernels of its own; imported as relax.clip it follows the layout."""
    torch.manual_seed(0)
    net, x = Mixed().eval(), torch.randn(1, 1, 28, 28)
    target = tvm_target()
    fused = fuse(import_onnx(onnx_model(net, x), "x", (1, 1, 28, 28)), target, "nchw8c")
    blocked_region_is_whole(fused)
    np.testing.assert_allclose(run(fused, x.numpy(), target), net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_strided_slice_residual_computes_the_same():
    torch.manual_seed(0)
    net, x = Mixed(sliced=True).eval(), torch.randn(1, 1, 28, 28)
    target = tvm_target()
    fused = fuse(import_onnx(onnx_model(net, x), "x", (1, 1, 28, 28)), target, "nchw8c")
    np.testing.assert_allclose(run(fused, x.numpy(), target), net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_module_tvm_cannot_convert_compiles_in_nchw(mixed, monkeypatch, caplog):
    """Where TVM's layout pass fails on some op of a user's model, the model still compiles, in NCHW, and says so."""
    import tvmnas.measure.layout

    def failing(mod, layout):
        raise RuntimeError("Check failed: (res != std::string::npos) is false: Invalid SLayout")

    monkeypatch.setattr(tvmnas.measure.layout, "convert_layout", failing)
    expected, mod, x, target = mixed
    fused = fuse(mod, target, "nchw8c")
    assert "convolutions stay in NCHW: TVM cannot move this module to nchw8c (Check failed" in caplog.text
    assert not [n for n in kernels(fused) if "layout_transform" in n]
    np.testing.assert_allclose(run(fused, x, target), expected, rtol=1e-4, atol=1e-5)


def test_each_tensor_takes_the_largest_block_that_divides_its_channels():
    blocks = LAYOUTS["nchw16c"]
    assert blocked_conv_layouts(blocks, 24, 144) == ["NCHW8c", "OIHW16o", "NCHW16c"]  # expand of a 24-channel stage
    assert blocked_conv_layouts(blocks, 144, 24) == ["NCHW16c", "OIHW8o", "NCHW8c"]  # its projection
    assert blocked_conv_layouts(blocks, 3, 32) == ["NCHW", "OIHW16o", "NCHW16c"]  # an RGB stem writes blocked
    assert blocked_conv_layouts(blocks, 16, 12) == ["NCHW", "OIHW", "NCHW"]  # no block divides 12: stays NCHW
    assert blocked_conv_layouts(LAYOUTS["nchw8c"], 32, 144) == ["NCHW8c", "OIHW8o", "NCHW8c"]


def test_auto_layout_follows_the_cpu_vectors():
    import tvm

    def target(**fields):
        return tvm.target.Target({"num-cores": 1, **fields})

    assert resolve_layout("auto", target(kind="llvm", mcpu="skylake-avx512")) == "nchw16c"
    assert resolve_layout("auto", target(kind="llvm", mcpu="znver3")) == "nchw8c"  # AVX2: 8 float lanes
    assert resolve_layout("auto", tvm.target.Target({"kind": "cuda", "arch": "sm_90"})) == "nchw"
    assert resolve_layout("nchw8c", target(kind="llvm", mcpu="skylake-avx512")) == "nchw8c"


@pytest.mark.parametrize("layout", ["nchw8c", "nchw16c"])
@pytest.mark.parametrize("channels, out_channels, groups, kernel, stride, dilation, padding", [
    (16, 32, 1, 3, 1, 1, (1, 0, 2, 1)),     # plain, asymmetric padding
    (16, 16, 16, 5, 2, 1, (2, 2, 2, 2)),    # depthwise, strided
    (8, 16, 8, 3, 1, 2, (2, 2, 2, 2)),      # depthwise with channel multiplier 2, dilated
    (32, 16, 4, 3, 2, 1, (1, 1, 0, 0)),     # grouped: groups of 8 channels in, 4 out
    (24, 48, 1, 1, 1, 1, (0, 0, 0, 0)),     # pointwise, 8-blocks in, 16-blocks out (nchw16c)
    (3, 16, 1, 3, 2, 1, (1, 1, 1, 1)),      # an RGB stem: NCHW in, blocked out
])
def test_blocked_conv2d_computes_what_nchw_computes(layout, channels, out_channels, groups, kernel, stride,
                                                    dilation, padding):
    import tvm
    from tvm import relax

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, 13, 11)).astype("float32")
    weight = rng.standard_normal((out_channels, channels // groups, kernel, kernel)).astype("float32")
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(data, relax.const(weight), strides=stride, padding=padding,
                                                    dilation=dilation, groups=groups))
        bb.emit_func_output(out)
    mod, target = bb.get(), tvm_target()
    expected = run(fuse(mod, target, "nchw"), x, target)
    fused = fuse(mod, target, layout)
    assert any("layout_transform" in name for name in kernels(fused))  # it did run blocked
    np.testing.assert_allclose(run(fused, x, target), expected, rtol=1e-4, atol=1e-4)


class MBConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(16, 48, 1)
        self.depthwise = torch.nn.Conv2d(48, 48, 5, padding=2, groups=48)
        self.project = torch.nn.Conv2d(48, 16, 1)

    def forward(self, x):
        relu6 = torch.nn.functional.relu6
        return x + self.project(relu6(self.depthwise(relu6(self.expand(x)))))


def test_candidate_block_takes_and_returns_the_blocked_layout():
    """Inside a network the tensors stay blocked from block to block: a candidate measured alone must not pay
    for a transform in and one out, which the network does not run."""
    torch.manual_seed(0)
    net, x = MBConv().eval(), torch.randn(1, 16, 14, 14)
    target = tvm_target()
    fused = fuse(import_torch(net, (1, 16, 14, 14)), target, "nchw8c", interior=True)
    assert input_shape(fused) == (1, 2, 14, 14, 8)
    assert not [n for n in kernels(fused) if "layout_transform" in n], kernels(fused)
    blocked = x.numpy().reshape(1, 2, 8, 14, 14).transpose(0, 1, 3, 4, 2)  # NCHW -> NCHW8c
    out = run(fused, np.ascontiguousarray(blocked), target)
    expected = net(x).detach().numpy().reshape(1, 2, 8, 14, 14).transpose(0, 1, 3, 4, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # in NCHW there is nothing to strip: the module is the imported one
    assert input_shape(fuse(import_torch(net, (1, 16, 14, 14)), target, "nchw", interior=True)) == (1, 16, 14, 14)


class Expand3(torch.nn.Module):
    """An MBConv with expansion 3 (72 channels inside, which 16 does not divide) and a SiLU-free activation chain,
    followed by a 1x1 whose input is also a residual (its 24 channels must stay 24)."""

    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(24, 72, 1)
        self.depthwise = torch.nn.Conv2d(72, 72, 5, padding=2, groups=72)
        self.project = torch.nn.Conv2d(72, 24, 1)
        self.tail = torch.nn.Conv2d(24, 24, 1)

    def forward(self, x):
        relu6 = torch.nn.functional.relu6
        y = x + self.project(relu6(self.depthwise(relu6(self.expand(x)))))
        return y + self.tail(y)


def conv_channels(mod) -> list[int]:
    return [int(b.value.ty.shape[1]) for b in mod["main"].body.blocks[0].bindings
            if getattr(b.value, "op", None) is not None and getattr(b.value.op, "name", "") == "relax.nn.conv2d"]


def test_inner_channels_are_padded_to_the_block_and_compute_the_same():
    from tvm import relax

    torch.manual_seed(0)
    net, x = Expand3().eval(), torch.randn(1, 24, 14, 14)
    mod = relax.transform.FoldConstant()(import_torch(net, (1, 24, 14, 14)))
    padded = pad_inner_channels(mod, 16)
    assert conv_channels(mod) == [72, 72, 24, 24]
    assert conv_channels(padded) == [80, 80, 24, 24]  # the block's output and the residual's keep 24
    assert conv_channels(pad_inner_channels(mod, 8)) == [72, 72, 24, 24]  # 8 divides 72: nothing to pad
    target = tvm_target()
    expected = net(x).detach().numpy()
    np.testing.assert_allclose(run(fuse(padded, target), x.numpy(), target), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run(fuse(mod, target, "nchw16c"), x.numpy(), target), expected, rtol=1e-4, atol=1e-5)


def test_a_convolution_between_two_padded_chains_pads_its_input_and_its_output():
    from tvm import relax

    torch.manual_seed(0)
    relu = torch.nn.ReLU
    net = torch.nn.Sequential(
        torch.nn.Conv2d(16, 72, 1), relu(), torch.nn.Conv2d(72, 72, 3, padding=1, groups=72), relu(),
        torch.nn.Conv2d(72, 40, 1), torch.nn.Conv2d(40, 40, 3, padding=1, groups=40), relu(),
        torch.nn.Conv2d(40, 24, 1)).eval()
    x = torch.randn(1, 16, 7, 7)
    mod = relax.transform.FoldConstant()(import_torch(net, (1, 16, 7, 7)))
    padded = pad_inner_channels(mod, 16)
    assert conv_channels(padded) == [80, 80, 48, 48, 24]
    target = tvm_target()
    np.testing.assert_allclose(run(fuse(padded, target), x.numpy(), target), net(x).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
