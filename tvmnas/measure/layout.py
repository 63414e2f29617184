"""The layout of a compiled module's convolutions: NCHW (as imported), NHWC, or blocked channels (activations in
NCHW{b}c, weights in OIHW{b}o).

A convolution in NCHW vectorizes along the image's width (14 or 28 pixels in these networks, with a 7-wide
window) or not at all; in a blocked layout the innermost axis is `b` consecutive channels, so every multiply-add
is a full vector and depthwise convolutions, which have no channel reduction to vectorize, get one too (the layout
onnxruntime's CPU convolutions use). Relax's `ConvertLayout` moves each convolution (and the element-wise ops,
means and pools around it) to the blocked layout and keeps layout transforms only where a tensor enters or leaves
the blocked region. The block is chosen per tensor from its channel count: the layout's first block size that
divides it (`nchw16c`: 16 channels, one AVX-512 vector, where 16 divides the channels, else 8), so a network with
24-channel stages still runs its 144-channel layers 16 wide, and a convolution may read one block size and write
another. A tensor that only carries channels from one convolution to the next (inside an MBConv block: the
expansion, its depthwise convolution) is padded with zero channels to the largest block first
(`pad_inner_channels`: 72 -> 80 channels costs 11% more work and runs 16 lanes wide). A convolution whose input
channels no block divides (a one- or three-channel stem) reads NCHW and writes blocked; one whose output channels no
block divides stays in NCHW. The weights' transform is a constant folded at
compile time: they are packed once, not per call. A target may name `auto`: nchw16c where its CPU has AVX-512,
else nchw8c.

TVM 0.27 has no lowering for a blocked conv2d (its legalization leaves it unlowered) and no layout rule for
`clip` (a ReLU6 would cut the converted region at every activation, in NHWC too): `convert_layout` rewrites clip
as maximum/minimum, and `LEGALIZE` lowers the blocked conv2d to the compute below, which meta-schedule then tunes.
Where ConvertLayout fails on some op of a user's model, `tvmnas.measure.compile.fuse` compiles it in NCHW and
says so.
"""

from __future__ import annotations

import math
import re

# Each layout: the (activation, weight) layouts of a plain layout for Relax's ConvertLayout, or a blocked layout's
# block sizes, the first that divides a tensor's channels taken. A name here is part of what a latency was measured
# for.
LAYOUTS = {"nchw": None, "nhwc": ("NHWC", "OHWI"), "nchw8c": (8,), "nchw16c": (16, 8)}
AUTO = "auto"  # a target's conv_layout: nchw16c where its CPU has 16 float lanes (AVX-512), else nchw8c (NCHW off CPUs)


# What a blocked layout compiles to (its conv2d compute and design space, see `tvmnas.measure.conv_schedule`):
# raised whenever that changes, so its latencies and tuning records are made again.
BLOCKED_REVISION = 8  # 5: the window swept inside each input channel; 6: threads split activation-bound convs by
# rows; 7: register tiles sized to the vector registers, with a tail where they do not divide the row; 8: only tiles
# that fill at least half of those registers


def layout_tag(layout: str) -> str:
    """The layout as a latency's fingerprint names it (blocked layouts with their revision)."""
    return f"{layout}-r{BLOCKED_REVISION}" if layout.startswith("nchw") and layout != "nchw" else layout


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    return layout


def resolve_layout(layout: str, tvm_target) -> str:
    """A target's conv_layout with `auto` resolved for its TVM target."""
    if layout != AUTO:
        return check_layout(layout)
    from tvm.target.codegen import target_has_features

    if tvm_target.kind.name != "llvm":
        return "nchw"
    return "nchw16c" if target_has_features("avx512f", tvm_target) else "nchw8c"


def blocked_conv_layouts(blocks: tuple[int, ...], in_channels: int, out_channels: int) -> list[str]:
    """The (data, weight, output) layouts of a convolution in a blocked layout of `blocks`: NCHW where no block
    divides its output channels, NCHW data where none divides its input channels."""
    def block(channels: int) -> int | None:
        return next((b for b in blocks if channels % b == 0), None)

    data, out = block(in_channels), block(out_channels)
    if out is None:
        return ["NCHW", "OIHW", "NCHW"]
    return ["NCHW" if data is None else f"NCHW{data}c", f"OIHW{out}o", f"NCHW{out}c"]


def convert_layout(mod, layout: str):
    """The Relax module with its convolutions in `layout` (unchanged for "nchw")."""
    from tvm import relax

    spec = LAYOUTS[check_layout(layout)]
    if spec is None:
        return mod
    if isinstance(spec[0], str):  # a plain layout
        return relax.transform.ConvertLayout({"relax.nn.conv2d": list(spec)})(_clip_as_min_max(mod))

    mod = pad_inner_channels(relax.transform.FoldConstant()(mod), spec[0])

    def per_conv(call) -> dict:
        if getattr(call.op, "name", "") != "relax.nn.conv2d":
            return {}
        data, weight = call.args[0].ty.shape, call.args[1].ty.shape
        return {"relax.nn.conv2d": blocked_conv_layouts(spec, int(data[1]), int(weight[0]))}

    return relax.transform.ConvertLayout({}, layout_cb=per_conv)(_clip_as_min_max(mod))


def pad_inner_channels(mod, multiple: int):
    """The module with every tensor that only carries channels from one convolution to the next padded with zero
    channels to a multiple of `multiple` (an expansion of 72 channels to 80), so that it gets the largest block.

    The chain: a convolution (constant weights, groups 1) whose output channels `multiple` does not divide, then
    element-wise ops (activations, a per-channel constant such as a bias) and at least one depthwise convolution,
    ending in the input of a convolution with groups 1 and constant weights, every value used once (the inside of
    an MBConv block; tensors between blocks are left alone, as a block measured alone sees them). The first
    convolution gets zero filters (and its per-channel constants zeros), depthwise ones zero filters, the last one
    zero weights for the added input channels: what those channels hold never reaches an output, so the module
    computes what it did. Tensors that leave a chain (a block's output, a residual) keep their channels."""
    import numpy as np
    import tvm
    from tvm import relax

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    elementwise = {tvm.ir.Op.get(f"relax.{name}") for name in (
        "add", "subtract", "multiply", "maximum", "minimum", "clip", "nn.relu", "nn.gelu", "sigmoid", "tanh")}

    def const_of(expr):
        return expr if isinstance(expr, tvm.ir.expr.Constant) else None

    def shape_of(expr) -> tuple[int, ...]:  # a constant's shape; () for a scalar (a float, a PrimValue)
        value = getattr(expr, "value", None)
        return tuple(int(d) for d in getattr(value, "shape", ()))

    def padded(array: np.ndarray, axis: int, size: int) -> np.ndarray:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, size - array.shape[axis])
        return np.pad(array, widths)

    func = mod["main"]
    if not isinstance(func, relax.Function) or len(func.body.blocks) != 1:
        return mod
    bindings = list(func.body.blocks[0].bindings)
    users: dict = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            users.setdefault(v, []).append(b)
    outputs = set(relax.analysis.free_vars(func.body.body))

    def conv(b):
        value = b.value
        if not (isinstance(value, relax.Call) and value.op.same_as(conv2d)) or const_of(value.args[1]) is None:
            return None
        return value

    # binding var -> what to pad to which size: a convolution's filters ("out") and input channels ("in"), a
    # depthwise convolution ("depthwise"), an element-wise op's per-channel constants ("elementwise")
    rewrites: dict = {}
    for start in bindings:
        first = conv(start)
        if first is None or int(first.attrs.groups) != 1 or str(first.attrs.data_layout) != "NCHW":
            continue
        channels = int(first.args[1].value.shape[0])
        if channels % multiple == 0:
            continue
        size = -(-channels // multiple) * multiple
        chain, var, ok = [("first", start)], start.var, False
        while var not in outputs and len(users.get(var, [])) == 1:
            b = users[var][0]
            value = b.value
            c = conv(b)
            if c is not None and c.args[0].same_as(var):
                groups, weight = int(c.attrs.groups), c.args[1].value.shape
                if groups == 1 and int(weight[1]) == channels:
                    chain.append(("last", b))
                    ok = True
                    break
                if groups == channels and int(weight[0]) == channels and int(weight[1]) == 1:
                    chain.append(("depthwise", b))
                    var = b.var
                    continue
                break
            if isinstance(value, relax.Call) and any(value.op.same_as(op) for op in elementwise):
                others = [a for a in value.args if not a.same_as(var)]
                if not any(isinstance(a, relax.Var) for a in others) and all(
                        shape_of(a) in ((), (1, channels, 1, 1)) or int(np.prod(shape_of(a))) == 1 for a in others):
                    chain.append(("elementwise", b))
                    var = b.var
                    continue
            break
        if ok and any(kind == "depthwise" for kind, _ in chain):  # inside a block, not between blocks
            for kind, b in chain:  # a convolution may end one chain and start the next
                change = {"first": {"out": size}, "last": {"in": size}}.get(kind, {kind: size})
                rewrites.setdefault(b.var, {}).update(change)

    if not rewrites:
        return mod

    @relax.expr_functor.mutator
    class Pad(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            if binding.var not in rewrites:
                return super().visit_var_binding_(binding)
            change = rewrites[binding.var]
            call = binding.value
            args = [self.visit_expr(a) for a in call.args]
            if "elementwise" in change:
                args = [relax.const(padded(a.value.numpy(), 1, change["elementwise"])) if len(shape_of(a)) == 4
                        and shape_of(a)[1] > 1 else a for a in args]
                new = relax.Call(call.op, args, call.attrs)
            else:
                weight = call.args[1].value.numpy()
                out, into = change.get("out", change.get("depthwise")), change.get("in")
                weight = padded(weight, 0, out) if out else weight
                weight = padded(weight, 1, into) if into else weight
                a = call.attrs
                new = relax.op.nn.conv2d(args[0], relax.const(weight), a.strides, a.padding, a.dilation,
                                         change.get("depthwise", int(a.groups)), a.data_layout, a.kernel_layout,
                                         a.out_layout, a.out_dtype)
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(new))

    padded_mod = mod.clone()
    padded_mod["main"] = Pad().visit_expr(func)
    return padded_mod


def _clip_as_min_max(mod):
    import tvm
    from tvm import relax, tirx

    clip = tvm.ir.Op.get("relax.clip")

    @relax.expr_functor.mutator
    class ClipAsMinMax(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op != clip or not all(isinstance(b, (tirx.IntImm, tirx.FloatImm)) for b in call.args[1:]):
                return call
            x, low, high = call.args
            dtype = str(x.ty.dtype)
            if not dtype.startswith(("float", "bfloat")):
                return call
            if math.isfinite(float(low.value)):  # an infinite bound (a ReLU) is no operation
                x = relax.op.maximum(x, relax.const(float(low.value), dtype))
            if math.isfinite(float(high.value)):
                x = relax.op.minimum(x, relax.const(float(high.value), dtype))
            return x

    rewritten = mod.clone()  # the caller's module stays as it was
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewritten[gvar] = ClipAsMinMax().visit_expr(func)
    return rewritten


def without_boundary_transforms(mod):
    """The module as a block inside a network sees it: `main` takes its input already in the layout the converted
    region uses and returns its output in it, without the layout transforms at entry and exit.

    A candidate block compiled alone gets a transform into the blocked layout at its input and one out of it at its
    output; in a network of such blocks the tensors stay blocked from block to block and those transforms happen
    once, not once per block. A latency table of whole candidates would add them up block by block. Only an input
    whose every use is the same transform, and an output that is a transform's result, are stripped; otherwise
    the module is left as it is."""
    import tvm
    from tvm import relax

    transform = tvm.ir.Op.get("relax.layout_transform")
    func = mod["main"]
    if len(func.params) != 1 or len(func.body.blocks) != 1:
        return mod
    (param,), block = func.params, func.body.blocks[0]

    def is_transform(value) -> bool:
        return isinstance(value, relax.Call) and value.op.same_as(transform)

    users = [b for b in block.bindings if any(v.same_as(param) for v in relax.analysis.free_vars(b.value))]
    remap, new_param = {}, param
    if users and all(is_transform(b.value) for b in users) \
            and len({str(b.value.attrs.index_map) for b in users}) == 1:
        new_param = relax.Var(param.name, users[0].var.ty)
        remap.update({b.var: new_param for b in users})
    values = relax.analysis.get_var2val(func)
    output = values.get(func.body.body)
    last = output.fields[0] if isinstance(output, relax.Tuple) and len(output.fields) == 1 else func.body.body
    if is_transform(values.get(last)):
        remap[last] = values[last].args[0]
    if not remap:
        return mod

    @relax.expr_functor.mutator
    class Strip(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            if binding.var in remap:  # its uses now read what it transformed
                self.set_var_remap(binding.var, self.visit_expr(remap[binding.var]))
                return
            super().visit_var_binding_(binding)

        def visit_var_(self, var):
            return new_param if var.same_as(param) else super().visit_var_(var)

    stripped = mod.clone()
    stripped["main"] = relax.Function([new_param], Strip().visit_expr(func.body), attrs=func.attrs)
    return stripped


def input_shape(mod) -> tuple[int, ...]:
    """The shape of the one input of the module's `main`."""
    return tuple(int(d) for d in mod["main"].params[0].ty.shape)


def conv2d_blocked(data, kernel, strides, padding, dilation, groups: int, out_dtype: str):
    """conv2d of NCHW{a}c data (or NCHW data: one block of all its channels) with OIHW{b}o weights (per-group
    input channels unblocked), output NCHW{b}c."""
    from tvm import te, topi

    plain = len(data.shape) == 4
    if plain:
        n, channels, height, width = (int(d) for d in data.shape)
        c_chunks, block = 1, channels
    else:
        n, c_chunks, height, width, block = (int(d) for d in data.shape)
    o_chunks, per_group_in, kh, kw, o_block = (int(d) for d in kernel.shape)
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    out_per_group = o_chunks * o_block // groups
    padded = data
    if top or left or bottom or right:
        tail = [] if plain else [0]
        padded = topi.nn.pad(data, [0, 0, top, left, *tail], [0, 0, bottom, right, *tail], name="pad")
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")

    # Each sum reads the data before the weights: the schedule finds them in that order (conv_schedule.by_rows).
    def at(b, chunk, y, x, c):  # the (padded) input's channel `c` of block `chunk`
        return (padded[b, chunk * block + c, y, x] if plain else padded[b, chunk, y, x, c]).astype(out_dtype)

    if per_group_in == 1 and out_per_group == 1 and o_block == block:  # depthwise: output channel = input channel
        def depthwise(b, oc, y, x, o):
            return te.sum(at(b, oc, y * sh + ry * dh, x * sw + rx * dw, o)
                          * kernel[oc, 0, ry, rx, o].astype(out_dtype), axis=[ry, rx])
        return te.compute((n, o_chunks, out_h, out_w, o_block), depthwise, name="conv2d_nchwc")

    if groups == 1:  # input channels as (block of `block`, channel in it): no division in the data's index
        icc, icb = te.reduce_axis((0, c_chunks), "icc"), te.reduce_axis((0, block), "icb")

        def regular(b, oc, y, x, o):
            return te.sum(at(b, icc, y * sh + ry * dh, x * sw + rx * dw, icb)
                          * kernel[oc, icc * block + icb, ry, rx, o].astype(out_dtype), axis=[icc, icb, ry, rx])
        return te.compute((n, o_chunks, out_h, out_w, o_block), regular, name="conv2d_nchwc")

    ric = te.reduce_axis((0, per_group_in), "ric")

    def grouped(b, oc, y, x, o):
        cin = (oc * o_block + o) // out_per_group * per_group_in + ric
        return te.sum(at(b, cin // block, y * sh + ry * dh, x * sw + rx * dw, cin % block)
                      * kernel[oc, ric, ry, rx, o].astype(out_dtype), axis=[ric, ry, rx])
    return te.compute((n, o_chunks, out_h, out_w, o_block), grouped, name="conv2d_nchwc")


def _legalize_conv2d(bb, call):
    import tvm

    attrs = call.attrs
    if len(attrs.out_layout) == 4:  # plain layouts: TVM's own lowering
        return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, call)
    block = attrs.out_layout[4:-1]
    if not (re.fullmatch(r"NCHW(\d+c)?", attrs.data_layout) and attrs.kernel_layout == f"OIHW{block}o"
            and attrs.out_layout == f"NCHW{block}c"):
        raise ValueError(f"no lowering for conv2d in {attrs.data_layout}/{attrs.kernel_layout}/{attrs.out_layout}")
    return bb.call_te(conv2d_blocked, call.args[0], call.args[1], attrs.strides, attrs.padding, attrs.dilation,
                      int(attrs.groups), _dtype_or(attrs.out_dtype, call.args[0].ty.dtype),
                      primfunc_name_hint="conv2d")


def _dtype_or(out_dtype, data_dtype) -> str:
    """conv2d's out_dtype, or the data's where it is unset (None or "" by frontend; "void" in TVM's own terms)."""
    name = "" if out_dtype is None else str(out_dtype)
    return name if name not in ("", "void", "None") else str(data_dtype)


LEGALIZE = {"relax.nn.conv2d": _legalize_conv2d}
