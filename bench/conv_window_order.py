"""Where the blocked convolution sweeps its window (issue 18): inside each input channel of a block (revision 5 on)
or outside the block's input channels (before), kernel by kernel for the regular 3x3 convolutions of ResNet-18 and
VGG-11. Every tiling of the design space (`tvmnas/measure/conv_schedule.py`) is built in both orders and checked
against the untuned kernel, then all are timed in turn (a new seeded order each round, 15 rounds) by TVM's time
evaluator: hot (10 back-to-back calls) and flushed (TVM's `cache_flush_cpu_non_first_arg` before each of 3 calls,
the tuner's cold mode: the weights and the output come from memory; a network run lies between the two). Per kernel
the best tiling of each order in each mode (the 25% quantile of its rounds, ms), and the rounds' spread of the
ratio. Times only kernels; run it alone.

    .venv/bin/python bench/conv_window_order.py
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from common import command_line, write_results
from register_tiles import checked_tilings, conv_kernel

from tvmnas.measure.runner.base import set_threads
from tvmnas.targets import load_target

NAME = "conv_window_order"
# (in channels, out channels, map size): 3x3 stride-1 convolutions of ResNet-18 at 224 and VGG-11 at 32
CONVS = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7), (512, 512, 4), (512, 512, 2)]
MODES = ("hot", "flushed")


def one_round(lib, arrays) -> dict[str, float]:
    import tvm

    hot = lib.time_evaluator(lib.entry_name, tvm.cpu(0), number=10, repeat=1)
    flushed = lib.time_evaluator(lib.entry_name, tvm.cpu(0), number=1, repeat=3,
                                 f_preproc="cache_flush_cpu_non_first_arg")
    return {"hot": hot(*arrays).mean, "flushed": min(flushed(*arrays).results)}


def main() -> None:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target", default="x86-cpu")
    args = parser.parse_args()
    spec = load_target(args.target)
    target = spec.tvm()
    set_threads(spec.runtime_threads)
    entries = []
    for cin, cout, size in CONVS:
        kernel = conv_kernel(cin, cout, 3, 1, size, spec, target)
        calls = {}
        for order, inside in (("inside", True), ("outside", False)):
            arrays, libs = checked_tilings(kernel, spec, target, inside)
            calls.update({(order, f"x{x_inner} oc{oc_inner}"): lib for (x_inner, oc_inner), lib in libs.items()})
        samples = {key: [] for key in calls}
        order_rng = np.random.default_rng(0)
        for _ in range(args.rounds):
            keys = list(calls)
            for i in order_rng.permutation(len(keys)):
                samples[keys[i]].append(one_round(calls[keys[i]], arrays))
        ms = {key: {m: float(np.percentile([r[m] for r in rounds], 25)) * 1e3 for m in MODES}
              for key, rounds in samples.items()}
        best = {order: {m: min((v[m], tiling) for (o, tiling), v in ms.items() if o == order) for m in MODES}
                for order in ("inside", "outside")}
        entry = {"conv": [cin, cout, size], "weight_mb": cin * cout * 9 * 4 / 2**20, "tilings": len(ms) // 2,
                 **{f"{order}_{m}_ms": best[order][m][0] for order in best for m in MODES},
                 **{f"{order}_{m}_tiling": best[order][m][1] for order in best for m in MODES},
                 "all_ms": {f"{o} {t}": v for (o, t), v in ms.items()}}
        entry.update({f"inside_over_outside_{m}": entry[f"inside_{m}_ms"] / entry[f"outside_{m}_ms"] for m in MODES})
        for m in MODES:  # round by round: the best tiling of each order in that round, their ratio's spread
            per_round = [min(r[i][m] for (o, _), r in samples.items() if o == "inside")
                         / min(r[i][m] for (o, _), r in samples.items() if o == "outside")
                         for i in range(args.rounds)]
            entry[f"round_ratio_p10_p90_{m}"] = [float(np.percentile(per_round, 10)),
                                                 float(np.percentile(per_round, 90))]
        entries.append(entry)
        print(f"{cin}->{cout} at {size}x{size}: " + ", ".join(
            f"{m} {entry[f'inside_{m}_ms']:.3f} vs {entry[f'outside_{m}_ms']:.3f} ms" for m in MODES), flush=True)
    summary = {f"median_inside_over_outside_{m}": statistics.median(e[f"inside_over_outside_{m}"] for e in entries)
               for m in MODES}
    summary.update({f"max_inside_over_outside_{m}": max(e[f"inside_over_outside_{m}"] for e in entries)
                    for m in MODES})
    summary["threads"] = spec.runtime_threads
    lines = [f"## Blocked 3x3 convolutions: the window inside or outside each input channel ({spec.name}, "
             f"{spec.runtime_threads} threads)", "",
             "Every tiling of the design space built in both orders, all timed in turn over "
             f"{args.rounds} rounds in a new order each; per kernel the best tiling of each order (ms, 25% quantile): "
             "hot = back to back, flushed = the arguments but the input flushed from the caches before each call "
             "(weights from memory; a network run lies between). Inside / outside: median "
             + ", ".join(f"{m} {summary[f'median_inside_over_outside_{m}']:.2f}" for m in MODES) + ".", "",
             "| conv (in, out, size) | weights MB | hot inside / outside ms | ratio [rounds p10-p90] | "
             "flushed inside / outside ms | ratio [rounds p10-p90] |", "|---|---:|---|---|---|---|"]
    lines += [f"| {tuple(e['conv'])} | {e['weight_mb']:.1f} | "
              + " | ".join(f"{e[f'inside_{m}_ms']:.3f} / {e[f'outside_{m}_ms']:.3f} | "
                           f"{e[f'inside_over_outside_{m}']:.2f} [{e[f'round_ratio_p10_p90_{m}'][0]:.2f}-"
                           f"{e[f'round_ratio_p10_p90_{m}'][1]:.2f}]" for m in MODES) + " |" for e in entries]
    write_results(NAME, summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
