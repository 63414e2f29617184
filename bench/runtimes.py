"""The exported winner at batch 1 on this CPU: TVM tuned (the bundle's module) vs TVM default schedules vs
PyTorch eager vs onnxruntime, measured in one process with one harness.

Every runtime is called from Python the same way (one call = one inference, output ready) and uses the target's
thread count. Samples are taken in rounds that visit the runtimes in turn, so a slow phase of the shared machine
hits all of them; each runtime's latency is the median of its fastest round. The native runner's own timing of
the tuned module (C++, no Python) is listed beside it when built.
Goal (issue 4): TVM tuned at or below onnxruntime's latency.

    .venv/bin/python bench/runtimes.py --bundle runs/demo/bundle-x86-cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tvmnas.deploy.bundle import read_manifest
from tvmnas.measure.compile import build_module, import_torch
from tvmnas.measure.runner.base import set_threads
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network

RUNNER = Path("build/native/tvmnas-run")


def tvm_call(lib_path: Path, data: np.ndarray):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    x = tvm.runtime.tensor(data, device=tvm.cpu())
    return lambda: vm["main"](x)[0].numpy()  # torch-imported modules return a tuple


def ort_call(onnx_path: Path, data: np.ndarray, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: data})[0]


def torch_call(net: torch.nn.Module, data: np.ndarray):
    x = torch.from_numpy(data)

    def call():
        with torch.inference_mode():
            return net(x).numpy()

    return call


def sample_ms(call, min_ms: float) -> float:
    """One sample: loop the call until it lasts at least min_ms; ms per call."""
    n, start = 0, time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = (time.perf_counter() - start) * 1e3
        if elapsed >= min_ms:
            return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle-x86-cpu"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="samples per round and runtime")
    parser.add_argument("--min-repeat-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/runtimes"))
    args = parser.parse_args()

    manifest = read_manifest(args.bundle)
    spec = load_target(manifest["target"]["name"])
    threads = manifest["threads"]
    trained = load_network(args.bundle / manifest["network"])
    data = np.load(args.bundle / manifest["sample_input"])
    set_threads(threads)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        default_lib = build_module(import_torch(trained.net, tuple(data.shape)), spec, 0, Path(tmp), LocalRunner(),
                                   Path(tmp) / "default.so").lib_path
        calls = {"tvm-tuned": tvm_call(args.bundle / manifest["module"], data),
                 "tvm-default": tvm_call(default_lib, data),
                 "pytorch-eager": torch_call(trained.net.eval(), data),
                 "onnxruntime": ort_call(args.bundle / manifest["onnx"], data, threads)}
        reference = calls["pytorch-eager"]()
        for name, call in calls.items():  # warm up, and check that all compute the same thing
            for _ in range(5):
                out = call()
            sample_ms(call, 200)
            assert np.allclose(out, reference, rtol=1e-3, atol=1e-3), name
        rounds = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                rounds[name].append([sample_ms(call, args.min_repeat_ms) for _ in range(args.repeat)])
    latency = {name: statistics.median(min(r, key=statistics.median)) for name, r in rounds.items()}
    native = None
    if RUNNER.exists():
        proc = subprocess.run([str(RUNNER), str(args.bundle), str(args.bundle / manifest["sample_input"]),
                               "--repeat", "2000", "--warmup", "200", "--json"], capture_output=True, text=True)
        native = json.loads(proc.stdout)["median_ms"] if proc.returncode == 0 else None
    ort_ms = latency["onnxruntime"]
    summary = {"bundle": str(args.bundle), "arch": manifest["arch"], "level": manifest["level"],
               "threads": threads, "latency_ms": latency,
               "ratio_to_onnxruntime": {k: v / ort_ms for k, v in latency.items()},
               "native_runner_tuned_ms": native, "goal_met": latency["tvm-tuned"] <= ort_ms,
               "rounds": args.rounds, "repeat": args.repeat, "min_repeat_ms": args.min_repeat_ms,
               "command": f"python bench/runtimes.py --bundle {args.bundle}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"## Runtimes of the exported winner at batch 1 ({spec.name}, {threads} threads)", "",
             f"Architecture: `{' '.join(manifest['arch'])}`; TVM tuned = the bundle's module ({manifest['level']}). "
             f"Goal: TVM tuned <= onnxruntime: **{'met' if summary['goal_met'] else 'not met'}**.", "",
             "| runtime | latency ms | / onnxruntime |", "|---|---:|---:|"]
    for name, ms in latency.items():
        lines.append(f"| {name} | {ms:.4f} | {ms / ort_ms:.2f} |")
    if native is not None:
        lines += ["", f"Native runner (C++, no Python call overhead), tuned module: {native:.4f} ms median."]
    lines += ["", "Python-called, one harness; median of the fastest of "
              f"{args.rounds} interleaved rounds of {args.repeat} samples (each >= {args.min_repeat_ms:g} ms).",
              "", f"Command: `{summary['command']}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
