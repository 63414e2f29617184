"""The exported winner at batch 1 on this CPU: TVM tuned (the bundle's module) vs TVM's default schedules vs
PyTorch eager vs onnxruntime, timed in one interleaved run of the measurement protocol (issue 13).

Every runtime is called from Python the same way (one call = one inference, output ready) with the target's
thread count; ratios come from the same run. The breakdown beside it: the tuned module's kernels timed one by one
with the arguments the network passes them, against the whole network (what the VM adds), and onnxruntime's own
per-node profile of the bundle's ONNX file. The native runner's timing (C++, no Python) is listed when built.
Goals: TVM tuned <= 1.0x onnxruntime and <= 0.5x PyTorch eager.

    .venv/bin/python bench/runtimes.py --bundle runs/demo/bundle-x86-cpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import REPO, command_line, write_results
from compare import (
    interleave_calls,
    losses_lines,
    ort_breakdown,
    ort_call,
    ort_kinds,
    torch_call,
    tvm_breakdown,
    tvm_call,
)

from tvmnas.deploy.bundle import read_manifest
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import import_torch
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network

RUNNER = REPO / "build" / "native" / "tvmnas-run"


def native_ms(bundle: Path, manifest: dict) -> float | None:
    if not RUNNER.exists():
        return None
    proc = subprocess.run([str(RUNNER), str(bundle), str(bundle / manifest["sample_input"]), "--json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout)["raw_ms"] if proc.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle-x86-cpu"))
    parser.add_argument("--name", default="runtimes", help="results file name in bench/results")
    args = parser.parse_args()

    manifest = read_manifest(args.bundle)
    spec = load_target(manifest["target"]["name"])
    threads = spec.runtime_threads
    trained = load_network(args.bundle / manifest["network"])
    data = np.load(args.bundle / manifest["sample_input"])
    set_threads(threads)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        default_lib = build_module(import_torch(fold_batchnorm(trained.net), tuple(data.shape)), spec, 0, Path(tmp), LocalRunner(),
                                   Path(tmp) / "default.so").lib_path
        calls = {"tvm-tuned": tvm_call(args.bundle / manifest["module"], data),
                 "tvm-default": tvm_call(default_lib, data),
                 "pytorch-eager": torch_call(trained.net.eval(), data),
                 "onnxruntime": ort_call(args.bundle / manifest["onnx"], data, threads)}
        expected = calls["pytorch-eager"]()
        for name, call in calls.items():  # all compute the same thing
            assert np.allclose(call(), expected, rtol=1e-3, atol=1e-3), name
        est = interleave_calls(calls, spec)
    latency = {name: e.raw_ms for name, e in est.items()}
    tvm_kernels = tvm_breakdown(args.bundle / manifest["module"], data, spec)
    ort_nodes = ort_breakdown(args.bundle / manifest["onnx"], data, threads)
    ort_ms, torch_ms, tuned_ms = latency["onnxruntime"], latency["pytorch-eager"], latency["tvm-tuned"]
    summary = {"tvm_over_onnxruntime": tuned_ms / ort_ms, "tvm_over_pytorch": tuned_ms / torch_ms,
               "latency_ms": latency, "dispersion": {n: e.dispersion for n, e in est.items()},
               "goal_met": tuned_ms <= ort_ms and tuned_ms <= 0.5 * torch_ms,
               "arch": manifest["arch"], "level": manifest["level"], "threads": threads,
               # the export's own tuning (the kernels the profile's records lacked at the module's level)
               "winner_tune_s": manifest["seconds"]["tune"],
               "winner_kernels_tuned": manifest["seconds"]["kernels_tuned"],
               "native_runner_ms": native_ms(args.bundle, manifest),
               "tvm_sum_kernels_ms": tvm_kernels["sum_kernels_ms"], "tvm_network_ms": tvm_kernels["network_ms"],
               "tvm_sum_kernels_cold_ms": tvm_kernels["sum_kernels_cold_ms"],
               "tvm_sum_kernels_in_network_ms": tvm_kernels["sum_kernels_in_network_ms"],
               "tvm_vm_own_ms": tvm_kernels["vm_own_ms"],
               "ort_sum_nodes_ms": ort_nodes["sum_nodes_ms"], "ort_model_run_ms": ort_nodes["model_run_ms"]}
    entries = [{"runtime": n, "latency_ms": ms, "over_onnxruntime": ms / ort_ms} for n, ms in latency.items()]
    ort_kind = ort_kinds(args.bundle / manifest["onnx"], ort_nodes["nodes_ms"])
    entries += [{"tvm_breakdown": tvm_kernels, "ort_breakdown": {**ort_nodes, "by_op_kind": ort_kind}}]
    lines = [f"## Runtimes of the exported winner at batch 1 ({spec.name}, {threads} threads)", "",
             f"`{' '.join(manifest['arch'])}`, TVM tuned = the bundle's module ({manifest['level']}). Goals "
             f"(<= 1.0x onnxruntime, <= 0.5x PyTorch): **{'met' if summary['goal_met'] else 'not met'}**.", "",
             "| runtime | latency ms | / onnxruntime | / PyTorch |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {ms:.4f} | {ms / ort_ms:.2f} | {ms / torch_ms:.2f} |" for n, ms in latency.items()]
    lines += ["", "| where the time goes | TVM tuned | onnxruntime |", "|---|---:|---:|",
              f"| kernels / nodes | {tvm_kernels['kernel_calls']} | {ort_nodes['nodes']} |",
              f"| sum of kernels (nodes) ms | {tvm_kernels['sum_kernels_ms']:.4f} | {ort_nodes['sum_nodes_ms']:.4f} |",
              f"| sum of kernels, each timed cold ms | {tvm_kernels['sum_kernels_cold_ms']:.4f} | |",
              f"| sum of kernels, each timed inside the network ms | {tvm_kernels['sum_kernels_in_network_ms']:.4f} "
              "| |",
              f"| the VM's own work (kernels skipped) ms | {tvm_kernels['vm_own_ms']:.4f} | |",
              f"| whole network ms | {tvm_kernels['network_ms']:.4f} | {ort_nodes['model_run_ms']:.4f} |",
              "", "| by kind | TVM kernels | hot ms | cold ms | in network ms | share (hot) | onnxruntime nodes | "
              "profiled ms | share |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    none = {"calls": 0, "hot_ms": 0.0, "cold_ms": 0.0, "in_network_ms": 0.0}
    for kind in sorted(set(tvm_kernels["by_op_kind"]) | set(ort_kind),
                       key=lambda k: -tvm_kernels["by_op_kind"].get(k, none)["hot_ms"]):
        t, o = tvm_kernels["by_op_kind"].get(kind, none), ort_kind.get(kind, {"nodes": 0, "ms": 0.0})
        lines.append(f"| {kind} | {t['calls']} | {t['hot_ms']:.4f} | {t['cold_ms']:.4f} | {t['in_network_ms']:.4f} | "
                     f"{t['hot_ms'] / tvm_kernels['sum_kernels_ms']:.0%} | {o['nodes']} | {o['ms']:.4f} | "
                     f"{o['ms'] / ort_nodes['sum_nodes_ms']:.0%} |")
    lines += ["", "The kernel calls that lose the most inside the network:", ""] + losses_lines(tvm_kernels)
    if summary["native_runner_ms"] is not None:
        lines += ["", f"Native runner (C++, no Python), tuned module: {summary['native_runner_ms']:.4f} ms."]
    lines += ["", "One interleaved run of the protocol (windows of each runtime beside the reference module's; "
              "the 5% quantile of the kept windows). TVM's kernels are timed hot and cold (cache flushed before "
              "each call) in a second interleaved run with the whole network, the VM with its kernels skipped "
              "(less its instrument's cost) and the network with each kernel call's span stamped (in network: "
              "the median span, caches and threads as the kernels before left them); onnxruntime's columns come from its own profiler (median over 300 "
              "runs), which inflates its node times: compare whole runs only from the first table."]
    write_results(args.name, summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
