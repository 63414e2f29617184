"""The blocked convolution's design space: every schedule in it computes what the kernel computes, and its traces
replay under other sampled decisions (meta-schedule's search samples them again)."""

import numpy as np
import pytest
import torch

from tvmnas.measure.compile import fuse, import_torch
from tvmnas.measure.conv_schedule import (blocked_conv_space, copy_kernel, design_space, design_space_size,
                                          every_tiling, has_blocked_conv, tile_choices, vector_registers)


class Net(torch.nn.Module):
    """A strided regular 3x3 stem on 3 channels (NCHW in, blocked out; padding computed once), an MBConv (pointwise expand with ReLU6, a
    depthwise 5x5 with its padding per channel block, a pointwise project with a residual add), a grouped 3x3 with
    4 channels per group (not in the space: its reduction is not blocked), and a bias-free pointwise convolution
    whose result is the kernel's output (nothing fused after it). In nchw16c the expand reads 16-channel blocks
    and the last convolution writes 8-channel ones (16 does not divide 24)."""

    def __init__(self):
        super().__init__()
        self.regular = torch.nn.Conv2d(3, 16, 3, padding=1, stride=2)
        self.expand = torch.nn.Conv2d(16, 48, 1)
        self.depthwise = torch.nn.Conv2d(48, 48, 5, padding=2, groups=48)
        self.project = torch.nn.Conv2d(48, 16, 1)
        self.grouped = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.last = torch.nn.Conv2d(16, 24, 1, bias=False)

    def forward(self, x):
        x = torch.relu(self.regular(x))
        y = torch.nn.functional.relu6(self.depthwise(torch.nn.functional.relu6(self.expand(x))))
        x = x + self.project(y)
        return self.last(torch.relu(self.grouped(x))).mean((2, 3))


class Wide(torch.nn.Module):
    """A pointwise convolution whose weights (8 x 128) outweigh its input (8 channels of 8x8)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 128, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def conv_kernels_of(layout: str, net: torch.nn.Module | None = None, shape=(1, 3, 14, 14)):
    """The target and the fused kernels of `net` (default `Net`) in `layout` that compute a blocked convolution."""
    import tvm

    from tvmnas.targets import load_target

    target = load_target("x86-cpu").tvm()
    fused = fuse(import_torch((net or Net()).eval(), shape), target, layout)
    kernels = [tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
               for _, func in fused.functions_items() if isinstance(func, tvm.tirx.PrimFunc)]
    return target, [k for k in kernels if has_blocked_conv(k)]


@pytest.fixture(scope="module", params=["nchw8c", "nchw16c"])
def conv_kernels(request):
    return conv_kernels_of(request.param)



def outputs(kernel, target) -> np.ndarray:
    import tvm

    from tvmnas.tvm_compat import build_trial

    rng = np.random.default_rng(0)
    params = kernel["main"].params
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in p.shape]).astype("float32")) for p in params]
    build_trial(kernel, target)(*args)
    return args[-1].numpy()


def parallel_extents(mod) -> list[int]:
    """The extents of a scheduled kernel's parallel loops (from its TVMScript)."""
    import re

    return [int(n) for n in re.findall(r"in T\.parallel\((?:T\.int64\()?(\d+)", mod.script())]


def test_every_blocked_conv_but_the_grouped_one_is_in_the_space(conv_kernels):
    _, kernels = conv_kernels
    spaces = [design_space(copy_kernel(k)) for k in kernels]
    assert len(kernels) == 6
    assert sum(s == "post-order-apply" for s in spaces) == 1  # the grouped 3x3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_schedule_of_the_space_computes_what_the_kernel_computes(conv_kernels, seed):
    from tvm.s_tir import Schedule

    target, kernels = conv_kernels
    checked = 0
    for kernel in kernels:
        if design_space(copy_kernel(kernel)) == "post-order-apply":
            continue
        spaces = blocked_conv_space(Schedule(copy_kernel(kernel), seed=seed))
        sch = spaces[seed % len(spaces)]
        np.testing.assert_allclose(outputs(sch.mod, target), outputs(copy_kernel(kernel), target),
                                   rtol=1e-5, atol=1e-5)
        checked += 1
    assert checked == 5


def test_tiles_with_a_tail_compute_what_the_kernel_computes():
    """A tile whose width does not divide the row (3 of 7 pixels: 3 + 3 + a tail of 1) computes every pixel once."""
    target, kernels = conv_kernels_of("nchw8c")
    for kernel in kernels:
        if design_space(copy_kernel(kernel)) == "post-order-apply":
            continue
        tilings = every_tiling(copy_kernel(kernel), min_share=0)
        expected = outputs(copy_kernel(kernel), target)
        tails = [tile for tile in tilings if 7 % tile[0]]
        assert tails
        for tile in tails[:2] + tails[-1:]:
            np.testing.assert_allclose(outputs(tilings[tile], target), expected, rtol=1e-5, atol=1e-5)


def test_tiles_fill_the_vector_registers_without_spilling_accumulators():
    """16 registers (AVX2) leave 12 for accumulators: 3 x 4 blocks at most, and at least 6 of them kept busy;
    32 (AVX-512) leave 28: 7 x 4 at most, at least 14."""
    assert tile_choices(14, 8, 16) == {1: list(range(6, 13)), 2: [3, 4, 5, 6], 4: [2, 3]}
    assert tile_choices(7, 3, 16) == {1: [6, 7], 3: [2, 3, 4]}
    assert tile_choices(7, 3, 16, min_share=0) == {1: list(range(1, 8)), 3: [1, 2, 3, 4]}
    avx512 = [x * o for o, xs in tile_choices(56, 8, 32).items() for x in xs]
    assert max(avx512) == 28 and min(avx512) == 14
    assert tile_choices(56, 8, 32)[1] == [14, 15, 16]  # no wider than MAX_X_INNER


def test_a_row_too_narrow_to_fill_the_registers_keeps_its_widest_tile():
    assert tile_choices(3, 2, 16) == {1: [3], 2: [3]}
    assert tile_choices(1, 1, 32) == {1: [1]}


@pytest.mark.parametrize("target, registers", [({"kind": "llvm", "mcpu": "znver2"}, 16),
                                               ({"kind": "llvm", "mcpu": "skylake-avx512"}, 32),
                                               ({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                                 "mattr": ["+neon"]}, 32)])
def test_vector_registers_follow_the_target(target, registers):
    import tvm

    assert vector_registers(tvm.target.Target(target)) == registers


def test_traces_have_the_same_instructions_whatever_was_sampled(conv_kernels):
    """Meta-schedule replays a trace with mutated decisions and requires each instruction to give as many
    results as when it was recorded (a loop kept or dropped by a tile size of 1 would break the replay)."""
    from tvm.s_tir import Schedule

    _, kernels = conv_kernels
    for kernel in kernels:
        if design_space(copy_kernel(kernel)) == "post-order-apply":
            continue
        shapes = {}
        for seed in range(1, 13):
            for i, sch in enumerate(blocked_conv_space(Schedule(copy_kernel(kernel), seed=seed))):
                shapes.setdefault(i, set()).add(tuple((inst.kind.name, len(inst.outputs)) for inst in sch.trace.insts))
        assert all(len(found) == 1 for found in shapes.values())


def test_the_space_size_counts_every_schedule_sampling_reaches():
    """The tuning gives a kernel no more trials than its space holds (meta-schedule's search would go on drawing
    nothing new): the count is exactly the number of distinct modules that sampling the space produces."""
    import tvm_ffi
    from tvm.s_tir import Schedule

    _, kernels = conv_kernels_of("nchw16c")
    sizes = []
    for kernel in kernels:
        size = design_space_size(copy_kernel(kernel))
        if design_space(copy_kernel(kernel)) == "post-order-apply":
            assert size is None
            continue
        seen = set()
        for seed in np.random.default_rng(0).integers(1, 2**30, 60):  # (consecutive small seeds draw alike first)
            for sch in blocked_conv_space(Schedule(copy_kernel(kernel), seed=int(seed))):
                seen.add(tvm_ffi.structural_hash(sch.mod))
        assert len(seen) == size
        sizes.append(size)
    # rows of 7 pixels: tiles 6-7 wide of one channel block; where there are 3 blocks, also 2-4 wide of all 3
    assert sorted(sizes) == [2, 2, 5, 5, 5]


@pytest.mark.parametrize("shape, threads, by_rows", [((1, 3, 16, 16), 2, True), ((1, 3, 42, 42), 2, True),
                                                     ((1, 3, 16, 16), 3, False), ((1, 3, 14, 14), 2, False)])
def test_threads_split_activation_bound_convolutions_by_rows_where_the_rows_split_evenly(shape, threads, by_rows):
    """With several threads, a convolution whose input outweighs its weights runs one band of rows per thread
    (8 rows in 2 bands, 21 rows in bands of 11 and 10; not 8 rows in 3 bands, nor 7 in 2: the bands would differ by
    more than 5%), and every such schedule computes what the kernel computes and replays with the same
    instructions."""
    from tvm.s_tir import Schedule

    from tvmnas.measure import conv_schedule

    from tvm.s_tir import meta_schedule as ms

    target, kernels = conv_kernels_of("nchw8c", shape=shape)
    checked = 0
    for kernel in kernels:
        space = design_space(copy_kernel(kernel), threads)
        if space == "post-order-apply":
            continue
        probe = Schedule(copy_kernel(kernel))
        assert conv_schedule.by_rows(probe, probe.get_sblock(conv_schedule.CONV_BLOCK), threads) == by_rows
        checked += 1
        if not by_rows:  # the schedule of one thread, which the tests above check
            continue
        spaces = ms.TuneContext(mod=copy_kernel(kernel), target=target, space_generator=space,
                                task_name="conv").generate_design_space()
        assert all(threads in parallel_extents(tuned.mod) for tuned in spaces)  # batch x bands
        traces = {}
        for seed in (1, 2, 3):
            for i, sch in enumerate(blocked_conv_space(Schedule(copy_kernel(kernel), seed=seed), threads=threads)):
                if i == seed % 2:
                    np.testing.assert_allclose(outputs(sch.mod, target), outputs(copy_kernel(kernel), target),
                                               rtol=1e-5, atol=1e-5)
                traces.setdefault(i, set()).add(tuple((inst.kind.name, len(inst.outputs))
                                                      for inst in sch.trace.insts))
        assert all(len(found) == 1 for found in traces.values())
    assert checked == 5


def test_a_convolution_whose_weights_outweigh_its_input_stays_split_by_channel_blocks():
    from tvm.s_tir import Schedule

    from tvmnas.measure import conv_schedule

    _, [kernel] = conv_kernels_of("nchw8c", Wide(), (1, 8, 8, 8))
    sch = Schedule(copy_kernel(kernel))
    assert not conv_schedule.by_rows(sch, sch.get_sblock(conv_schedule.CONV_BLOCK), 2)
