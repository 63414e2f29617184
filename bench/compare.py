"""Runtimes side by side under tvmnas's measurement protocol (bench/runtimes.py, bench/mobilenetv2.py,
bench/model_families.py).

Every runtime is a Python callable that runs one inference with its output ready; the protocol interleaves their
windows with the reference module's, so a slow phase of the shared machine hits all of them alike, and the ratios
come from one run. The breakdowns locate where time goes: TVM's kernels timed one by one (with the exact arguments
the network passes them) beside the whole network, and onnxruntime's own per-node profile of the same model.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from tvmnas.measure.protocol import Protocol, measure_interleaved
from tvmnas.measure.reference import REFERENCE_FILE, REFERENCE_SHAPES, build_reference
from tvmnas.measure.runner.base import CallableTimer, VmTimer
from tvmnas.targets import TargetSpec

# about 15 s for four runtimes: 150 windows each, a reference window after every second one
COMPARE = Protocol(windows=150, reference_every=2, min_span_s=10.0)


def tvm_call(lib_path: Path, data: np.ndarray) -> Callable[[], np.ndarray]:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    x = tvm.runtime.tensor(data, device=tvm.cpu())

    def call():
        out = vm["main"](x)
        return (out[0] if not hasattr(out, "numpy") else out).numpy()  # torch imports return a tuple

    return call


def ort_session(onnx_path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def ort_call(onnx_path: Path, data: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    session = ort_session(onnx_path, threads)
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: data})[0]


def torch_call(net, data: np.ndarray) -> Callable[[], np.ndarray]:
    import torch

    x = torch.from_numpy(data)

    def call():
        with torch.inference_mode():
            return net(x).numpy()

    return call


def interleave(timers: dict, spec: TargetSpec, protocol: Protocol = COMPARE) -> dict:
    """{name: Estimate} for every timer, timed in one interleaved run against the target's reference module
    (no anchor: the values are this run's, for ratios)."""
    import tvm

    with tempfile.TemporaryDirectory(prefix="tvmnas-bench-") as tmp:
        ref_lib = tvm.runtime.load_module(str(build_reference(spec, Path(tmp) / REFERENCE_FILE)))
        reference = VmTimer(ref_lib, tvm.cpu(), REFERENCE_SHAPES)
        run = measure_interleaved(list(timers.values()), reference, protocol)
    for name, est in zip(timers, run.estimates):
        if est.error:
            raise SystemExit(f"{name}: {est.error}")
    return dict(zip(timers, run.estimates))


def interleave_calls(calls: dict[str, Callable], spec: TargetSpec, protocol: Protocol = COMPARE) -> dict:
    return interleave({name: CallableTimer(call) for name, call in calls.items()}, spec, protocol)


class KernelTimer:
    """A `WindowTimer` over one compiled kernel of a module, called with recorded arguments: hot (back-to-back
    calls, its data in cache, as tuning times it) or `cold` (every call after flushing the cache of all arguments
    but the first, as inside a network where the kernel before it filled the caches)."""

    def __init__(self, library, symbol: str, args: list, cold: bool = False) -> None:
        import tvm

        self._library, self._symbol, self._args, self._device = library, symbol, args, tvm.cpu()
        self._cold = cold

    def warm_up(self, warmup_ms: float) -> float:
        return self._library.time_evaluator(self._symbol, self._device, number=1, repeat=1,
                                            min_repeat_ms=max(1, int(warmup_ms)))(*self._args).mean * 1e3

    def window(self, calls: int, samples: int) -> list[float]:
        if not self._cold:
            result = self._library.time_evaluator(self._symbol, self._device, number=calls,
                                                  repeat=samples)(*self._args)
            return [s * 1e3 for s in result.results]
        result = self._library.time_evaluator(self._symbol, self._device, number=1, repeat=calls * samples,
                                              f_preproc="cache_flush_cpu_non_first_arg")(*self._args)
        one = [s * 1e3 for s in result.results]
        return [sum(one[i * calls:(i + 1) * calls]) / calls for i in range(samples)]


def op_kind(symbol: str, args: list) -> str:
    """What a kernel computes, from its name and its arguments' shapes: depthwise kxk, pointwise expand or project
    (1x1 convolutions widening or narrowing the channels), other convolutions (the stem), pooling, linear."""
    shapes = [tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")]
    if "conv2d" in symbol and shapes:
        rank = len(shapes[0])  # 4: NCHW data, OIHW weights; 5: NCHW{b}c data, OIHW{b}o weights
        weights = [s for s in shapes[1:] if len(s) == rank]
        weight = weights[0] if weights and rank in (4, 5) else None
        if rank == 5:  # as NCHW / OIHW
            weight = weight and (weight[0] * weight[4], *weight[1:4])
            return conv_kind(weight, shapes[0][1] * shapes[0][4])
        return conv_kind(weight, shapes[0][1] if rank == 4 else None)
    if "mean" in symbol or "pool" in symbol:
        return "pooling"
    if "matmul" in symbol or "dense" in symbol or "linear" in symbol:
        return "linear"
    return "other"


def conv_kind(weight: tuple | None, in_channels: int | None) -> str:
    """A convolution's kind from its OIHW weight shape and its input channels."""
    if weight and weight[1] == 1 and weight[2] > 1 and weight[0] == in_channels:
        return f"depthwise {weight[2]}x{weight[3]}"
    if weight and weight[2:] == (1, 1):
        return "pointwise expand" if weight[0] > weight[1] else "pointwise project"
    return "conv (stem)"


def ort_kinds(onnx_path: Path, nodes_ms: dict[str, float]) -> dict[str, dict]:
    """onnxruntime's profiled nodes by the kinds of `op_kind`: a node is matched to the ONNX node of the same
    module path (its name without the last part, or for a convolution fused with what follows it, which
    onnxruntime names after its last output, without the last two), convolutions classified by weight shape;
    the rest (layout reorders, flatten) as "other"."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
    exact, coarse = {}, {}  # by the path without the last part; convolutions also without the last two
    for node in model.graph.node:
        kind = None
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            weight = weights[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = conv_kind(weight, weight[1] * group)
            coarse.setdefault(node.name.rsplit("/", 2)[0], kind)
        elif node.op_type in ("GlobalAveragePool", "ReduceMean", "AveragePool"):
            kind = "pooling"
        elif node.op_type in ("Gemm", "MatMul"):
            kind = "linear"
        if kind:
            exact[node.name.rsplit("/", 1)[0]] = kind
    out: dict[str, dict] = {}
    for name, ms in nodes_ms.items():
        kind = exact.get(name.rsplit("/", 1)[0]) or coarse.get(name.rsplit("/", 2)[0], "other")
        entry = out.setdefault(kind, {"nodes": 0, "ms": 0.0})
        entry["nodes"] += 1
        entry["ms"] += ms
    return out


def kernel_calls(lib_path: Path, data: np.ndarray):
    """(kernels library, [(symbol, args)]) : every kernel call one inference of the module makes, in order, with
    copies of its arguments (recorded by a VM instrument; the VM's builtins left out)."""
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(lib_path))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    seen: list[tuple[str, list]] = []

    def record(func, symbol, before, ret, *args):
        if before and not symbol.startswith("vm.builtin"):
            seen.append((symbol, [a.copyto(tvm.cpu()) if hasattr(a, "copyto") else a for a in args]))
        return 0

    vm.set_instrument(record)
    vm["main"](tvm.runtime.tensor(data, device=tvm.cpu()))
    kernels = lib.imports[0]  # the compiled TIR functions (the VM looks them up there)
    return lib, kernels, seen


class StampedVm:
    """The module's VM with an instrument on every call: it skips the kernels (`skip_kernels`: what is left is the
    VM's own work, plus the instrument's) or lets them run and stamps the clock before and after each kernel call:
    `kernels_ms()` is then each kernel call's median span over the inferences run so far, the kernel timed inside
    the network (its caches and the other core as the kernels before it left them). Each span includes part of the
    instrument's own cost (returning from its Python call, and calling it again with the arguments wrapped)."""

    def __init__(self, lib_path: Path, data: np.ndarray, skip_kernels: bool) -> None:
        import time

        import tvm
        from tvm import relax
        from tvm.runtime.vm import VMInstrumentReturnKind

        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
        self._x = tvm.runtime.tensor(data, device=tvm.cpu())
        self._stamps: list[int] = []
        self._spans: list[list[float]] = []  # per inference, each kernel call's span in ms
        skip, run = int(VMInstrumentReturnKind.SKIP_RUN), int(VMInstrumentReturnKind.NO_OP)
        clock, stamps = time.perf_counter_ns, self._stamps

        def instrument(func, symbol, before, ret, *args):
            if symbol.startswith("vm.builtin"):
                return run
            if skip_kernels:
                return skip if before else run
            stamps.append(clock())
            return run

        self._vm.set_instrument(instrument)

    def __call__(self) -> None:
        self._stamps.clear()
        self._vm["main"](self._x)
        s = self._stamps
        if s:
            self._spans.append([(s[i + 1] - s[i]) / 1e6 for i in range(0, len(s) - 1, 2)])

    def kernels_ms(self) -> list[float]:
        return [statistics.median(call) for call in zip(*self._spans)]


def tvm_breakdown(lib_path: Path, data: np.ndarray, spec: TargetSpec, protocol: Protocol = COMPARE) -> dict:
    """Each kernel call's latency hot, cold and inside the network, the whole network's, and the VM's own cost, all
    timed in one interleaved run. The VM's cost: a run whose instrument skips every kernel, less what the
    instrument itself adds (a run whose instrument lets every kernel run and stamps the clock around it, less the
    plain run); that stamped run gives the kernels' spans inside the network."""
    lib, kernels, seen = kernel_calls(lib_path, data)
    timers = {}
    for i, (symbol, args) in enumerate(seen):
        timers[f"{i:02d} {symbol}"] = KernelTimer(kernels, symbol, args)
        timers[f"{i:02d} {symbol} cold"] = KernelTimer(kernels, symbol, args, cold=True)
    stamped = StampedVm(lib_path, data, skip_kernels=False)
    timers["network"] = CallableTimer(tvm_call(lib_path, data))
    timers["vm skipping kernels"] = CallableTimer(StampedVm(lib_path, data, skip_kernels=True))
    timers["vm instrumented"] = CallableTimer(stamped)
    est = {name: e.raw_ms for name, e in interleave(timers, spec, protocol).items()}
    hot = {f"{i:02d} {symbol}": est[f"{i:02d} {symbol}"] for i, (symbol, _) in enumerate(seen)}
    cold = {name: est[f"{name} cold"] for name in hot}
    inside = dict(zip(hot, stamped.kernels_ms()))
    kinds: dict[str, dict[str, float]] = {}
    for (symbol, args), name in zip(seen, hot):
        kind = kinds.setdefault(op_kind(symbol, args), {"calls": 0, "hot_ms": 0.0, "cold_ms": 0.0,
                                                        "in_network_ms": 0.0})
        kind["calls"] += 1
        kind["hot_ms"] += hot[name]
        kind["cold_ms"] += cold[name]
        kind["in_network_ms"] += inside[name]
    instrument_ms = est["vm instrumented"] - est["network"]
    return {"kernels_ms": hot, "kernels_cold_ms": cold, "kernels_in_network_ms": inside,
            "sum_kernels_ms": sum(hot.values()), "sum_kernels_cold_ms": sum(cold.values()),
            "sum_kernels_in_network_ms": sum(inside.values()), "network_ms": est["network"],
            # the least any kernel call's span exceeds its hot time: at least the instrument's share of a span
            "span_overhead_bound_ms": min(inside[n] - hot[n] for n in hot),
            "kernel_calls": len(seen), "by_op_kind": kinds, "vm_own_ms": est["vm skipping kernels"] - instrument_ms,
            "vm_instrument_ms": instrument_ms}


def losses_lines(breakdown: dict, top: int = 6) -> list[str]:
    """A Markdown table of the `top` kernel calls that lose the most time inside the network against hot."""
    lost = sorted(breakdown["kernels_ms"], key=lambda n: breakdown["kernels_ms"][n] - breakdown[
        "kernels_in_network_ms"][n])[:top]
    lines = ["| kernel call | hot ms | cold ms | in network ms | in network / hot |", "|---|---:|---:|---:|---:|"]
    bound = breakdown["span_overhead_bound_ms"]
    for name in lost:
        hot, inside = breakdown["kernels_ms"][name], breakdown["kernels_in_network_ms"][name]
        lines.append(f"| `{name}` | {hot:.4f} | {breakdown['kernels_cold_ms'][name]:.4f} | {inside:.4f} | "
                     f"{inside / hot:.2f} |")
    return lines + ["", "In network: each call's median span between the VM instrument's stamps before and after it; "
                        f"a span includes some of the instrument's own cost, at most {bound * 1e3:.1f} us (the "
                        "least any call's span exceeds its hot time)."]


def add_target_args(parser) -> None:
    """--target and --db (whose tuning folder is used, as bench-model uses it), and --no-breakdown."""
    from common import DEFAULT_DB

    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="its tuning directory is used, as bench-model")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                        help="skip the per-kernel and per-node breakdowns (each kernel timed hot and cold: most of "
                             "the bench's time)")


def runtime_target(name: str) -> TargetSpec:
    """The target, with TVM's and PyTorch's thread pools at its runtime threads."""
    import torch

    from tvmnas.measure.runner.base import set_threads
    from tvmnas.targets import load_target

    spec = load_target(name)
    set_threads(spec.runtime_threads)
    torch.set_num_threads(spec.runtime_threads)
    return spec


def compare_network(net, shape: tuple[int, ...], name: str, trials: int, spec: TargetSpec, tune_dir: Path,
                    tmp: Path, trial_cache: str = "hot", breakdown: bool = True) -> dict:
    """A PyTorch network exported to ONNX, compiled the way `tvmnas bench-model` compiles it (the target's tuning
    records, `trials` trials for the kernels they lack, timed `trial_cache`), checked against onnxruntime's outputs
    and timed beside onnxruntime and PyTorch eager in one interleaved run, with both breakdowns (`breakdown`: they
    time every kernel hot and cold, which takes many times the comparison itself)."""
    import time

    from tvmnas.deploy.export import export_onnx
    from tvmnas.measure.build import build_module
    from tvmnas.measure.compile import import_onnx
    from tvmnas.measure.model_bench import graph_input, load_onnx
    from tvmnas.measure.runner.local import LocalRunner

    onnx_path = tmp / f"{name}.onnx"
    export_onnx(net, shape, onnx_path)
    model = load_onnx(onnx_path)  # as bench-model imports it
    input_name, shape = graph_input(model, None)
    start = time.perf_counter()
    measured = {"trials": 0, "asked": 0}  # tuning trials measured (a kernel's search ends when its space runs out)

    def progress(phase: str, done: int, total: int, detail: str) -> None:
        print(f"\r{name}: {phase} {done}/{total} {detail}", end="", flush=True)
        if phase == "tune":
            measured.update(trials=done, asked=total)

    built = build_module(import_onnx(model, input_name, shape), spec, trials, tune_dir, LocalRunner(trial_cache),
                         tmp / f"{name}.so", started=start, progress=progress)
    print()
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls = {"tvm": tvm_call(built.lib_path, data), "onnxruntime": ort_call(onnx_path, data, spec.runtime_threads),
             "pytorch-eager": torch_call(net, data)}
    expected = calls["onnxruntime"]()
    for call_name, call in calls.items():
        if not np.allclose(call(), expected, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"{name}: {call_name}'s outputs differ from onnxruntime's")
    est = interleave_calls(calls, spec)
    latency = {n: e.raw_ms for n, e in est.items()}
    return {"input_shape": list(shape), "tune_trials": trials, "trial_cache": trial_cache, "tune_s": built.tune_s,
            "compile_s": built.compile_s, "tasks": built.tasks, "tasks_tuned": built.tasks_tuned,
            "trials_measured": measured["trials"], "trials_asked": measured["asked"],
            "latency_ms": latency, "dispersion": {n: e.dispersion for n, e in est.items()},
            "tvm_over_onnxruntime": latency["tvm"] / latency["onnxruntime"],
            "tvm_over_pytorch": latency["tvm"] / latency["pytorch-eager"],
            **({"tvm_breakdown": tvm_breakdown(built.lib_path, data, spec),
                "ort_breakdown": ort_breakdown(onnx_path, data, spec.runtime_threads)} if breakdown else {})}


def ort_breakdown(onnx_path: Path, data: np.ndarray, threads: int, runs: int = 300) -> dict:
    """onnxruntime's own profile of `runs` inferences: each node's median time and the median model run."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-ort-") as tmp:
        session = ort_session(onnx_path, threads, profile_prefix=str(Path(tmp) / "ort"))
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: data})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, list[float]] = {}
    model_runs = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"] / 1e3)
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            model_runs.append(e["dur"] / 1e3)
    per_node = {n: statistics.median(v[len(v) // 10:]) for n, v in nodes.items()}  # first tenth: warm-up
    return {"nodes_ms": per_node, "sum_nodes_ms": sum(per_node.values()),
            "model_run_ms": statistics.median(model_runs[len(model_runs) // 10:]), "nodes": len(per_node)}
