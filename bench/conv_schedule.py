"""Meta-schedule's generic rules against the blocked-convolution design space (`tvmnas/measure/conv_schedule.py`),
kernel by kernel (issue 18): every blocked convolution of a few MBConv blocks, fused as a network compiles it
(NCHW8c, a block inside a network), tuned from nothing (an empty database, a new cost model) at the same trials in
each space, then the best schedule of each timed on the same arguments, the two in turn; the outputs are checked
against the untuned kernel. Times are the 10% quantile of 15 repeats of 200 calls, in microseconds, 2 threads.

    .venv/bin/python bench/conv_schedule.py [--trials 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from common import command_line, write_results

from tvmnas.measure.compile import fuse, import_torch
from tvmnas.measure.conv_schedule import copy_kernel, design_space, has_blocked_conv
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.tuning import make_builder, make_in_process_runner
from tvmnas.model.blocks import block_module, fold_batchnorm
from tvmnas.targets import load_target
from tvmnas.tvm_compat import build_trial

NAME = "conv_schedule"
# (block, in channels, out channels, stride, input size): the demo space's blocks at its two resolutions
BLOCKS = [("mb_k5_e6", 24, 24, 1, 14), ("mb_k7_e6", 24, 40, 2, 14), ("mb_k7_e6", 40, 40, 1, 7),
          ("mb_k3_e3", 40, 40, 1, 7)]


def blocked_kernels(spec, target, block):
    import tvm

    op, cin, cout, stride, size = block
    net = fold_batchnorm(block_module(op, cin, cout, stride).eval())
    fused = fuse(import_torch(net, (1, cin, size, size)), target, spec.layout, interior=True)
    kernels = [tvm.IRModule({"main": f.with_attr("global_symbol", "main")})
               for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return [k for k in kernels
            if has_blocked_conv(k) and design_space(copy_kernel(k), spec.runtime_threads) != "post-order-apply"]



def tuned(kernel, spec, target, trials: int, space):
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        database = ms.tir_integration.tune_tir(
            copy_kernel(kernel), target, work, max_trials_global=trials, num_trials_per_iter=trials,
            builder=make_builder(spec, in_memory=True), runner=make_in_process_runner("cpu", spec.runtime_threads),
            seed=0, space=space,
            strategy=ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16),
            measure_callbacks=[ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()])
        seconds = time.perf_counter() - start
        best = ms.tir_integration.compile_tir(database, copy_kernel(kernel), target)
        return build_trial(best.mod, target), seconds


def time_us(libs: dict, args) -> dict:
    """The kernels timed in turn, 15 rounds each of 200 calls; the 10% quantile per kernel."""
    import tvm

    samples = {name: [] for name in libs}
    for _ in range(15):
        for name, lib in libs.items():
            evaluator = lib.time_evaluator(lib.entry_name, tvm.cpu(0), number=200, repeat=1)
            samples[name].append(evaluator(*args).results[0] * 1e6)
    return {name: float(np.percentile(s, 10)) for name, s in samples.items()}


def main() -> None:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per kernel in each space")
    parser.add_argument("--target", default="x86-cpu")
    args = parser.parse_args()
    spec = load_target(args.target)
    target = spec.tvm()
    set_threads(spec.runtime_threads)
    rng = np.random.default_rng(0)
    entries = []
    for block in BLOCKS:
        for kernel in blocked_kernels(spec, target, block):
            params = kernel["main"].params
            inputs = [rng.uniform(-1, 1, [int(d) for d in p.shape]).astype("float32") for p in params]
            arrays = [tvm.runtime.tensor(a) for a in inputs]
            build_trial(copy_kernel(kernel), target)(*arrays)
            expected = arrays[-1].numpy().copy()
            libs, tune_s = {}, {}
            for name, space in (("generic", "post-order-apply"),
                                ("blocked", design_space(copy_kernel(kernel), spec.runtime_threads))):
                libs[name], tune_s[name] = tuned(kernel, spec, target, args.trials, space)
                arrays[-1] = tvm.runtime.tensor(np.zeros_like(expected))
                libs[name](*arrays)
                if not np.allclose(arrays[-1].numpy(), expected, rtol=1e-4, atol=1e-4):
                    raise SystemExit(f"the {name} schedule computes something else")
            us = time_us(libs, arrays)
            weight = [int(d) for d in params[1].shape]
            entries.append({"block": list(block), "weight_shape": weight, "generic_us": us["generic"],
                            "blocked_us": us["blocked"], "generic_over_blocked": us["generic"] / us["blocked"],
                            "tune_s": tune_s})
            print(f"{block} {weight}: generic {us['generic']:.2f} us, blocked {us['blocked']:.2f} us", flush=True)
    ratios = [e["generic_over_blocked"] for e in entries]
    summary = {"trials": args.trials, "kernels": len(entries), "threads": spec.runtime_threads,
               "generic_over_blocked_median": statistics.median(ratios), "generic_over_blocked_min": min(ratios),
               "generic_over_blocked_max": max(ratios),
               "generic_sum_us": sum(e["generic_us"] for e in entries),
               "blocked_sum_us": sum(e["blocked_us"] for e in entries)}
    lines = [f"## Blocked convolutions: meta-schedule's generic rules vs the design space ({spec.name}, "
             f"{args.trials} trials each, {spec.runtime_threads} threads)", "",
             f"Each kernel tuned from nothing in each space, then both timed in turn (us, 10% quantile of 15 x 200 "
             f"calls). Generic / blocked: median {summary['generic_over_blocked_median']:.2f}x "
             f"({summary['generic_over_blocked_min']:.2f}-{summary['generic_over_blocked_max']:.2f}x); sum "
             f"{summary['generic_sum_us']:.1f} vs {summary['blocked_sum_us']:.1f} us.", "",
             "| block (in, out, stride, size) | weight | generic us | blocked us | generic / blocked |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| `{e['block'][0]}` {tuple(e['block'][1:])} | {e['weight_shape']} | {e['generic_us']:.2f} | "
              f"{e['blocked_us']:.2f} | {e['generic_over_blocked']:.2f} |" for e in entries]
    write_results(NAME, summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
