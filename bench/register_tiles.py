"""Register tiles of the blocked convolution (issue 18): every tile that fits the vector registers
(`tvmnas/measure/conv_schedule.py`), kernel by kernel, for the convolutions where ResNet-18 and MobileNetV2 at
224x224 spend their time. Each tiling is built, checked against the untuned kernel, and timed hot (TVM's time
evaluator, calls of about 20 ms, 15 rounds in a new seeded order each, 2 threads); reported per kernel: the best
tile whose width divides the row (the space before revision 7), the best of all (a tail where the width does not
divide it) and the best of the design space (revision 8: the tiles that fill at least half of the registers), in
GFLOP/s. Times only kernels; run it alone.

    .venv/bin/python bench/register_tiles.py
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from common import command_line, write_results

from tvmnas.measure.compile import fuse, import_torch
from tvmnas.measure.conv_schedule import copy_kernel, every_tiling, has_blocked_conv, vector_registers
from tvmnas.measure.runner.base import set_threads
from tvmnas.targets import load_target
from tvmnas.tvm_compat import build_trial

NAME = "register_tiles"
# (name, in channels, out channels, kernel, groups, map size): ResNet-18's 3x3 convolutions at 224, MobileNetV2's
# pointwise expansions and projections and a depthwise 3x3 at 224
CONVS = [("resnet18 3x3", 64, 64, 3, 1, 56), ("resnet18 3x3", 128, 128, 3, 1, 28),
         ("resnet18 3x3", 256, 256, 3, 1, 14), ("resnet18 3x3", 512, 512, 3, 1, 7),
         ("mobilenetv2 expand", 24, 144, 1, 1, 56), ("mobilenetv2 project", 576, 96, 1, 1, 14),
         ("mobilenetv2 project", 960, 160, 1, 1, 7), ("mobilenetv2 depthwise", 144, 144, 3, 144, 56)]


def conv_kernel(cin: int, cout: int, kernel: int, groups: int, size: int, spec, target):
    import torch
    import tvm

    net = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups),
                              torch.nn.ReLU()).eval()
    fused = fuse(import_torch(net, (1, cin, size, size)), target, spec.layout, interior=True)
    kernels = [tvm.IRModule({"main": f.with_attr("global_symbol", "main")})
               for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return next(k for k in kernels if has_blocked_conv(k))


def checked_tilings(kernel, spec, target, window_inside: bool = True, min_share: float | None = None
                    ) -> tuple[list, dict]:
    """The kernel's arguments (seeded) and every tiling of its design space (or of `tile_choices` at `min_share`)
    built and checked against the untuned kernel: {(x_inner, oc_inner): library}."""
    import tvm

    rng = np.random.default_rng(0)
    arrays = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in p.shape]).astype("float32"))
              for p in kernel["main"].params]
    build_trial(copy_kernel(kernel), target)(*arrays)
    expected = arrays[-1].numpy().copy()
    libs = {}
    share = {} if min_share is None else {"min_share": min_share}
    tilings = every_tiling(kernel, spec.runtime_threads, vector_registers(target), window_inside, **share)
    for tile, mod in tilings.items():
        lib = build_trial(mod, target)
        arrays[-1] = tvm.runtime.tensor(np.zeros_like(expected))
        lib(*arrays)
        if not np.allclose(arrays[-1].numpy(), expected, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"tile {tile} (window {'inside' if window_inside else 'outside'}) computes something "
                             "else")
        libs[tile] = lib
    return arrays, libs


def main() -> None:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", default="x86-cpu")
    args = parser.parse_args()
    spec = load_target(args.target)
    target = spec.tvm()
    registers = vector_registers(target)
    set_threads(spec.runtime_threads)
    entries = []
    for name, cin, cout, k, groups, size in CONVS:
        kernel = conv_kernel(cin, cout, k, groups, size, spec, target)
        arrays, libs = checked_tilings(kernel, spec, target, min_share=0)
        first = next(iter(libs.values()))
        once_s = first.time_evaluator(first.entry_name, tvm.cpu(0), number=5, repeat=1)(*arrays).mean
        number = max(1, int(0.02 / once_s))
        samples = {tile: [] for tile in libs}
        order_rng = np.random.default_rng(0)
        for _ in range(args.rounds):
            tiles = list(libs)
            for i in order_rng.permutation(len(tiles)):
                lib = libs[tiles[i]]
                evaluator = lib.time_evaluator(lib.entry_name, tvm.cpu(0), number=number, repeat=1)
                samples[tiles[i]].append(evaluator(*arrays).mean)
        us = {tile: float(np.percentile(s, 25)) * 1e6 for tile, s in samples.items()}
        flop = 2 * cin * cout // groups * k * k * size * size
        width = size  # stride 1, same padding: the output row is the input's
        perfect = {tile: t for tile, t in us.items() if width % tile[0] == 0}
        space = {tile: us[tile] for tile in every_tiling(kernel, spec.runtime_threads, registers)}
        best_perfect, best, best_space = (min(d, key=d.get) for d in (perfect, us, space))
        entry = {"conv": name, "in": cin, "out": cout, "kernel": k, "groups": groups, "size": size,
                 "tilings": len(us), "space_tilings": len(space),
                 "best_divisor_tile": list(best_perfect), "best_divisor_us": us[best_perfect],
                 "best_tile": list(best), "best_us": us[best], "gain": us[best_perfect] / us[best],
                 "best_space_tile": list(best_space), "best_space_us": us[best_space],
                 "space_loss": us[best_space] / us[best],
                 "best_divisor_gflops": flop / us[best_perfect] / 1e3, "best_gflops": flop / us[best] / 1e3,
                 "all_us": {f"{x}x{o}": t for (x, o), t in us.items()}}
        entries.append(entry)
        print(f"{name} {cin}->{cout} k{k} at {size}: divisor tile {best_perfect} {us[best_perfect]:.1f} us, "
              f"best {best} {us[best]:.1f} us ({entry['gain']:.2f}x), best of the space {best_space} "
              f"({entry['space_loss']:.2f}x the best)", flush=True)
    gains = [e["gain"] for e in entries]
    summary = {"threads": spec.runtime_threads, "vector_registers": registers, "kernels": len(entries),
               "gain_median": statistics.median(gains), "gain_min": min(gains), "gain_max": max(gains),
               "best_tile_has_tail": sum(e["size"] % e["best_tile"][0] != 0 for e in entries),
               "space_loss_max": max(e["space_loss"] for e in entries),
               "space_tilings_max": max(e["space_tilings"] for e in entries)}
    lines = [f"## Register tiles of the blocked convolution ({spec.name}, {spec.runtime_threads} threads, "
             f"{registers} vector registers)", "",
             "Every tile (x_inner pixels of a row x oc_inner channel blocks) that fits the registers built and timed "
             f"hot in turn ({args.rounds} rounds, 25% quantile). The best tile whose width divides the row (the space "
             "before revision 7) against the best of all (with a tail where the width does not divide the row): "
             f"median {summary['gain_median']:.2f}x faster ({summary['gain_min']:.2f}-{summary['gain_max']:.2f}x); "
             f"the best tile has a tail in {summary['best_tile_has_tail']} of {len(entries)} kernels. The design space "
             "keeps the tiles that fill at least half of the accumulator registers (the widest where the row is "
             f"narrower): at most {summary['space_tilings_max']} tiles a kernel; its best is at most "
             f"{summary['space_loss_max']:.2f}x the best of all.", "",
             "| convolution | in -> out, kernel, map | tiles | best dividing tile | us | GFLOP/s | best tile | us | "
             "GFLOP/s | gain | space's tiles | space's best | x the best |",
             "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for e in entries:
        lines.append(f"| {e['conv']} | {e['in']} -> {e['out']}, {e['kernel']}x{e['kernel']}, {e['size']}x{e['size']} "
                     f"| {e['tilings']} | {e['best_divisor_tile'][0]} x {e['best_divisor_tile'][1]} | "
                     f"{e['best_divisor_us']:.1f} | {e['best_divisor_gflops']:.0f} | {e['best_tile'][0]} x "
                     f"{e['best_tile'][1]} | {e['best_us']:.1f} | {e['best_gflops']:.0f} | {e['gain']:.2f} | "
                     f"{e['space_tilings']} | {e['best_space_tile'][0]} x {e['best_space_tile'][1]} | "
                     f"{e['space_loss']:.2f} |")
    write_results(NAME, summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
