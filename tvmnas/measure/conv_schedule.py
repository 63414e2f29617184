"""The design space meta-schedule tunes a blocked convolution's kernel in (CPU).

Meta-schedule's generic rules tile every loop of a kernel at several levels; sampled at random, few of those
schedules keep the output tile in registers, so at the few trials per kernel that a latency table affords
(tuned-8) the best one found is often 2-3x slower than a register-blocked schedule. For a convolution in NCHW{b}c
(`tvmnas.measure.layout.conv2d_blocked`) the good schedules are well known (TVM's former x86 `conv2d_NCHWc`
templates, oneDNN's direct convolution): keep a tile of `oc_inner` channel blocks x `x_inner` output pixels of one
row in vector registers, sweep the reduction (input channel blocks, the block's input channels, the window) around
it, vectorize the `b` channels of a block, and parallelize over output channel blocks (and rows), or, where the
input outweighs the weights, over bands of output rows (`by_rows`: a network's activations then stay with the core
that wrote them: `bench/results/mobilenetv2_znver2*.md`, MobileNetV2 at 224x224 on 2 threads of a Zen 2 1.22x ->
1.14x onnxruntime). `blocked_conv_space` builds that schedule for every register tile that fits the target's
vector registers (revision 7: tile widths that leave a tail where they do not divide the row, since the best tile
of 16 registers, 3 pixels x 4 blocks, divides no row of 7, 14, 28 or 56 pixels: `bench/results/register_tiles*.md`;
revision 8: only the tiles that fill at least half of them), one design space per `oc_inner` with the width a
sampled decision, so meta-schedule's search and cost model choose among them; the bias, activation and residual add
fused after the convolution run on the tile while it is in cache; the padding is computed per channel block
(depthwise; per band and channel block where split by rows) or once (others). The window is swept inside each input
channel: the weights are OIHW{b}o, so one input channel's window of `b`-wide output vectors is contiguous and the
tile reads each channel block's weights as one forward stream
(`bench/results/conv_window_order.md`: ResNet-18's and VGG-11's 3x3 convolutions 1-7% faster hot, 3-19% with
their weights flushed from the caches, most where 9 MB of weights come from memory).
"""

from __future__ import annotations

import math

CONV_BLOCK = "conv2d_nchwc"  # the name of the blocked convolution's compute (see `layout.conv2d_blocked`)

# Largest sampled tiles: x_inner output pixels of a row x oc_inner channel blocks, one vector accumulator each.
MAX_X_INNER = 16
MAX_OC_INNER = 4
# Vector registers a tile leaves free of accumulators: the weights' vectors and the input's broadcast. A tile of
# more accumulators spills to the stack; one of fewer leaves the FMA units idle (Zen 2, Skylake: 2 FMAs per cycle
# of 4-5 cycles latency want 8-10 independent sums), so the best tile is as large as the registers allow, which
# takes a tail where its width does not divide the row (3 x 4 blocks on a row of 14).
RESERVED_REGISTERS = 4
# The smallest share of those accumulators a tile keeps (where the row is too narrow, the widest tile is kept): the
# best tile of every kernel timed (`bench/results/register_tiles.md`) keeps at least 7 of AVX2's 12, so the smaller
# tiles only dilute a search of a few trials (the space on AVX-512's 28 accumulators would otherwise double).
MIN_ACCUMULATOR_SHARE = 0.5


def vector_registers(target) -> int:
    """How many vector registers a TVM CPU target's code has: 32 with AVX-512 or on AArch64, else 16 (x86 AVX2)."""
    from tvm.target.codegen import target_has_features

    if str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return 32
    return 32 if target_has_features("avx512f", target) else 16


def has_blocked_conv(kernel) -> bool:
    """Whether a fused kernel (an IRModule of one TIR function) computes a blocked convolution."""
    from tvm.s_tir import Schedule

    try:
        Schedule(kernel).get_sblock(CONV_BLOCK)
    except Exception:  # noqa: BLE001 - TVM raises its own error for a missing block
        return False
    return True


def copy_kernel(kernel):
    """A deep copy of a kernel module: a schedule may rewrite the function it was made from in place."""
    import tvm

    return tvm.ir.load_json(tvm.ir.save_json(kernel))


def schedules_blocked_conv(kernel, threads: int = 1) -> bool:
    """Whether `blocked_conv_space` schedules `kernel`: a blocked convolution whose fused kernel has its shape (the
    shape decides, not the tile: one tile is tried)."""
    from tvm.s_tir import Schedule

    if not has_blocked_conv(kernel):
        return False
    try:
        blocked_conv_schedule(Schedule(copy_kernel(kernel)), 1, 1, threads=threads)
    except Exception:  # noqa: BLE001 - a fused kernel of another shape (a reduction after the convolution)
        return False
    return True


def design_space(kernel, threads: int = 1, registers: int = 16):
    """The design space meta-schedule tunes `kernel` (an IRModule of one fused TIR function) in, for a target of
    `threads` threads and `registers` vector registers: `blocked_conv_space` for a blocked convolution it can
    schedule, meta-schedule's generic rules ("post-order-apply") for everything else."""
    import functools

    from tvm.s_tir import meta_schedule as ms

    if schedules_blocked_conv(kernel, threads):
        return ms.space_generator.ScheduleFn(functools.partial(blocked_conv_space, threads=threads,
                                                               registers=registers))
    return "post-order-apply"


def design_space_size(kernel, threads: int = 1, registers: int = 16) -> int | None:
    """How many distinct schedules `design_space(kernel, threads, registers)` holds, where that is known: one per
    register tile (`tile_choices`). None for the generic rules (too many to count). Meta-schedule's evolutionary
    search does not know when it has measured a space whole: it goes on drawing for several rounds that find
    nothing new, at about the cost of a round that does."""
    from tvm.s_tir import Schedule

    if not schedules_blocked_conv(kernel, threads):
        return None
    sch = Schedule(copy_kernel(kernel))
    return sum(len(xs) for xs in tile_choices(*_tiled_extents(sch), registers).values())


def tile_choices(x: int, oc: int, registers: int, min_share: float = MIN_ACCUMULATOR_SHARE) -> dict[int, list[int]]:
    """The register tiles of a convolution whose output rows are `x` pixels and which has `oc` channel blocks: per
    oc_inner (a divisor of `oc` up to MAX_OC_INNER), the x_inner (any width up to MAX_X_INNER and the row, with a
    tail where it does not divide the row) whose tile of accumulators fits the registers and fills at least
    `min_share` of them (the widest alone where none does); `min_share` 0 gives every tile that fits."""
    accumulators = max(registers - RESERVED_REGISTERS, 1)
    choices = {}
    for o in range(1, min(oc, MAX_OC_INNER, accumulators) + 1):
        if oc % o == 0:
            widest = min(x, MAX_X_INNER, accumulators // o)
            choices[o] = list(range(min(widest, max(1, math.ceil(min_share * accumulators / o))), widest + 1))
    return choices


def _tiled_extents(sch) -> tuple[int, int]:
    """The convolution's row width (output pixels) and output channel blocks."""
    spatial, _ = _loops_by_kind(sch, sch.get_sblock(CONV_BLOCK))
    _, oc, _, x, _ = (int(sch.get(loop).extent) for loop in spatial)
    return x, oc


def blocked_conv_space(sch, window_inside: bool = True, threads: int = 1, registers: int = 16) -> list:
    """The design space of the fused kernel in `sch` (pad -> blocked conv -> element-wise epilogue): one schedule per
    oc_inner of `tile_choices`, each sampling its x_inner (a categorical decision: the tile's width) and scheduled
    by `blocked_conv_schedule`. `sch` itself is left as it was."""
    spaces = []
    for oc_inner, widths in tile_choices(*_tiled_extents(sch), registers).items():
        space = sch.copy()
        x_inner = space.sample_categorical(candidates=widths, probs=[1 / len(widths)] * len(widths))
        blocked_conv_schedule(space, x_inner, oc_inner, window_inside, threads)
        spaces.append(space)
    return spaces


def every_tiling(kernel, threads: int = 1, registers: int = 16, window_inside: bool = True,
                 min_share: float = MIN_ACCUMULATOR_SHARE) -> dict:
    """(x_inner, oc_inner) -> the kernel scheduled with that tile, for every tile of `tile_choices` (the design
    space's by default; `min_share` 0: every tile that fits the registers)."""
    from tvm.s_tir import Schedule

    tilings = {}
    extents = _tiled_extents(Schedule(copy_kernel(kernel)))
    for oc_inner, widths in tile_choices(*extents, registers, min_share).items():
        for x_inner in widths:
            sch = Schedule(copy_kernel(kernel))
            blocked_conv_schedule(sch, x_inner, oc_inner, window_inside, threads)
            tilings[x_inner, oc_inner] = sch.mod
    return tilings


def blocked_conv_schedule(sch, x_inner, oc_inner: int, window_inside: bool = True, threads: int = 1) -> None:
    """Schedule the fused kernel in `sch` as described above with a tile of `x_inner` pixels (an int, or a sampled
    decision) x `oc_inner` channel blocks (`window_inside=False`: the window outside the block's input channels, the
    order before revision 5, kept for `bench/conv_window_order.py`). `threads`: the thread count it runs on (see
    `by_rows`)."""
    conv = sch.get_sblock(CONV_BLOCK)
    producers = sch.get_producers(conv)
    pads = [p for p in producers if sch.get(p).name_hint.startswith("pad")]
    spatial, reduction = _loops_by_kind(sch, conv)
    b, oc, y, x, o = spatial
    depthwise = len(reduction) == 2  # (ry, rx); otherwise (icc, icb, ry, rx)
    rows = by_rows(sch, conv, threads)

    x_outer, x_inner = sch.split(x, [None, x_inner])
    oc_outer, oc_inner = sch.split(oc, [None, oc_inner])
    if depthwise:
        window = reduction
    else:
        icc, icb, ry, rx = reduction
        window = [icc, icb, ry, rx] if window_inside else [icc, ry, rx, icb]
    if rows:  # one band of output rows per thread, each sweeping every channel block over its band
        y_band, y = sch.split(y, [threads, None])
        sch.reorder(b, y_band, oc_outer, y, x_outer, *window, oc_inner, x_inner, o)
    else:
        sch.reorder(b, oc_outer, y, x_outer, *window, oc_inner, x_inner, o)

    epilogue = _epilogue(sch, conv)
    sch.reverse_compute_at(epilogue, x_outer, preserve_unit_loops=True)
    if pads and depthwise:  # a channel block's padded map (of the band), computed where its outputs are
        parallel = sch.fuse(b, y_band) if rows else sch.fuse(b, oc_outer)
        sch.compute_at(pads[0], oc_outer if rows else parallel, preserve_unit_loops=True)
    else:  # a regular convolution reads every input channel block: pad once
        parallel = sch.fuse(b, y_band) if rows else sch.fuse(b, oc_outer, y)
        for pad in pads:
            _parallel_vectorized(sch, pad, rows)
    sch.parallel(parallel)
    sch.vectorize(o)
    sch.unroll(x_inner)
    sch.unroll(oc_inner)
    init = sch.decompose_reduction(conv, window[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(epilogue)[-1])
    for pad in pads if depthwise else []:
        sch.vectorize(sch.get_loops(pad)[-1])


def _loops_by_kind(sch, block):
    """The block's spatial loops (b, oc, y, x, o) and its reduction loops, from its iteration variables."""
    from tvm import tirx

    loops = sch.get_loops(block)
    kinds = [v.iter_type for v in sch.get(block).iter_vars]
    spatial = [lp for lp, k in zip(loops, kinds) if k == tirx.IterVar.DataPar]
    reduction = [lp for lp, k in zip(loops, kinds) if k == tirx.IterVar.CommReduce]
    if len(spatial) != 5 or len(reduction) not in (2, 4):
        raise ValueError(f"unexpected loops in {CONV_BLOCK}: {len(spatial)} spatial, {len(reduction)} reduction")
    return spatial, reduction


def _epilogue(sch, conv):
    """One block computing everything element-wise after the convolution (bias, activations, residual add),
    which writes the kernel's output from the convolution's result; a plain copy where nothing follows."""
    from tvm import tirx

    consumers = sch.get_consumers(conv)
    if not consumers:
        return sch.cache_write(conv, 0, "global")
    if len(consumers) != 1:
        raise ValueError(f"{CONV_BLOCK} has {len(consumers)} consumers")
    epilogue = consumers[0]
    if any(v.iter_type != tirx.IterVar.DataPar for v in sch.get(epilogue).iter_vars):
        raise ValueError(f"{CONV_BLOCK} is followed by a reduction")
    while True:
        following = sch.get_consumers(epilogue)
        if len(following) != 1:
            break
        sch.reverse_compute_inline(following[0])  # raises where the consumer is not element-wise
    if sch.get_consumers(epilogue):
        raise ValueError("the convolution's epilogue is not a chain")
    return epilogue


def by_rows(sch, conv, threads: int) -> bool:
    """Whether `threads` threads split the convolution's output by rows (each thread one band of rows, every
    channel) rather than by channel blocks: where its weights are no larger than its input and the rows split
    evenly (bands within 5% of equal). A network's activations then stay with the core that wrote them from one
    kernel to the next: a band of output rows reads the same band of the input (plus a window's halo), which the
    same thread wrote; split by channel blocks, every thread reads the whole input, half of it written by the other
    core. Each thread then reads all the weights instead of its share, hence the size rule."""
    import math

    if threads < 2:
        return False
    data, weights = (math.prod(int(d) for d in region.source.shape) for region in sch.get(conv).reads[:2])
    rows = int(sch.get(_loops_by_kind(sch, conv)[0][2]).extent)
    return weights <= data and threads * math.ceil(rows / threads) <= 1.05 * rows


def _parallel_vectorized(sch, block, rows: bool = False) -> None:
    """Vectorize the innermost loop, parallelize the others (by rows first where `rows`: (b, c, y, ...) loops)."""
    loops = sch.get_loops(block)
    sch.vectorize(loops[-1])
    if rows and len(loops) >= 4:
        sch.reorder(loops[2], loops[1])
        loops = sch.get_loops(block)
    sch.parallel(sch.fuse(*loops[:-2]) if len(loops) > 2 else loops[0])
