"""Kernel choices on a CUDA GPU vs this CPU: which kernel sizes and expansions are cheap where.

Two steps, because the GPU (when a task has one) is a lent machine without TVM's compiler:
  pack    compile every candidate of the space for the CUDA target here (TVM's default GPU schedules, GPU code
          embedded by nvcc) as one-block bundles, plus whole networks exported compile-only, and put them with
          the native runner and the TVM runtime libraries into one folder (a few MB) that travels to the GPU;
  record  join what `bench/cuda_device_run.py` measured there with this CPU's latencies from the latency
          database (tuned, the numbers the CPU search uses) into kernel_choices_cuda_<gpu>.{json,md,png}.

    .venv/bin/python bench/cuda_kernels.py pack --out .cuda-pack [--network runs/demo/train/network.pt ...]
    (on the GPU machine) python3 bench/cuda_device_run.py .cuda-pack $OUT/cuda_measurements.json
    .venv/bin/python bench/cuda_kernels.py record --measurements cuda_measurements.json --gpu h100
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from tvmnas.deploy.bundle import MODULE_FILE, NETWORK_FILE, write_manifest
from tvmnas.deploy.export import ExportSettings, export_bundle
from tvmnas.files import default_db
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import gpu_binary_paths, import_torch
from tvmnas.measure.method import latency_scope
from tvmnas.model.blocks import candidate_module, fold_batchnorm
from tvmnas.space import load_space
from tvmnas.targets import load_target
from tvmnas.train.network_file import load_network
from tvmnas.versions import tvm_version

RUNTIME_LIBS = ("tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_cuda.so", "tvm_ffi/lib/libtvm_ffi.so")


def pack(args) -> None:
    import tvm
    import tvm_ffi

    space, spec = load_space(args.space), load_target(args.target)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "bin").mkdir(parents=True)
    site = Path(tvm.__file__).parent.parent
    assert Path(tvm_ffi.__file__).parent.parent == site
    for lib in RUNTIME_LIBS:
        shutil.copy(site / lib, out / "bin")
    shutil.copy(args.runner, out / "bin" / "tvmnas-run")
    index = []
    for cand in space.candidates():
        folder = out / "blocks" / f"{cand.key}_{cand.shape_text}"
        folder.mkdir(parents=True)
        torch.manual_seed(0)
        module = candidate_module(cand).eval()
        with tempfile.TemporaryDirectory() as tmp:
            built = build_module(import_torch(fold_batchnorm(module), cand.input_shape), spec, 0, Path(tmp), None,
                                 folder / MODULE_FILE)
        np.save(folder / "input.npy", np.random.default_rng(0).standard_normal(cand.input_shape, dtype=np.float32))
        gpu = [p.name for p in gpu_binary_paths(built.lib_path)]
        write_manifest(folder, {"module": MODULE_FILE, "device": spec.device, "threads": 0, "gpu_binaries": gpu,
                                "input": {"shape": list(cand.input_shape)}, "classes": []}, [MODULE_FILE, *gpu])
        index.append({"kind": "block", "name": cand.key, "input_shape": cand.shape_text, "dir": str(folder.relative_to(out)),
                      "input": "input.npy", "compile_s": built.compile_s})
        print(f"{cand.key} {cand.shape_text}: {built.compile_s:.1f} s")
    for i, network in enumerate(args.network):
        trained = load_network(network)
        folder = out / "networks" / f"net{i}"
        manifest = export_bundle(trained, network, spec, None, out / "unused-tuning", folder,
                                 ExportSettings(tune_trials=0))
        index.append({"kind": "network", "name": " ".join(trained.arch.ops), "source": str(network),
                      "dir": str(folder.relative_to(out)), "input": manifest["sample_input"],
                      "expected_top_class": manifest["expected_output"]["top_class"],
                      "expected_score": manifest["expected_output"]["score"]})
        (folder / NETWORK_FILE).unlink()  # the device needs the module, not the weights (kept small)
        write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("format", "version", "files")},
                       [manifest["module"], manifest["onnx"], manifest["sample_input"], *manifest["gpu_binaries"]])
    shutil.rmtree(out / "unused-tuning", ignore_errors=True)
    (out / "index.json").write_text(json.dumps({"space": space.name, "target": spec.name, "tvm_version": tvm_version(),
                                                "entries": index}, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {len(index)} bundles into {out} ({size / 2**20:.1f} MiB)")


def record(args) -> None:
    measured = json.loads(args.measurements.read_text())
    index = {e["dir"]: e for e in measured["entries"]}
    space, cpu = load_space(measured["space"]), load_target(args.cpu_target)
    scope = latency_scope(cpu, "local", args.cpu_level)
    rows = []
    with LatencyDB(args.db) as db:
        for cand in space.candidates():
            entry = index.get(f"blocks/{cand.key}_{cand.shape_text}")
            row = db.get(scope, cand.key, cand.shape_text)
            rows.append({"candidate": cand.key, "input_shape": cand.shape_text, "stage": cand.stage_label,
                         "gpu_ms": entry and entry.get("raw_ms"), "gpu_error": entry and entry.get("error"),
                         "cpu_ms": row.latency_ms if row is not None and row.ok else None})
    networks = [e for e in measured["entries"] if e["kind"] == "network"]
    for r in rows:
        r["gpu_over_cpu"] = r["gpu_ms"] / r["cpu_ms"] if r["gpu_ms"] and r["cpu_ms"] else None
    summary = {"gpu": measured.get("gpu"), "space": space.name, "gpu_target": measured["target"],
               "gpu_level": "default (dlight)", "cpu_target": cpu.name, "cpu_level": args.cpu_level,
               "timing_gpu": "native runner (the single-network protocol over "
                             f"{measured.get('span_s')} s, no reference module: this run's 5% quantile of windows)",
               "timing_cpu": "latency database (tvmnas profile, protocol 2, at the anchor's speed)"}
    prefix = args.out
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps({"summary": summary, "blocks": rows, "networks": networks},
                                                      indent=1) + "\n")
    lines = [f"## Kernel choices: {summary['gpu']} ({summary['gpu_target']}, default schedules) vs this CPU "
             f"({cpu.name}, {args.cpu_level})", "",
             "Per candidate block of the `fashion-mnist` space at batch 1. GPU: " + summary["timing_gpu"] +
             ". CPU: " + summary["timing_cpu"] + ".", "",
             "| candidate | input | GPU ms | CPU ms | GPU / CPU |", "|---|---|---:|---:|---:|"]
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['input_shape']} | {fmt(r['gpu_ms'], '.4f')} | "
                     f"{fmt(r['cpu_ms'], '.4f')} | {fmt(r['gpu_over_cpu'], '.2f')} |")
    by_op = {}
    for r in rows:
        if r["candidate"].startswith("mb_k") and r["gpu_ms"] and r["cpu_ms"]:
            op = "_".join(r["candidate"].split("_")[:3])
            by_op.setdefault(op, []).append((r["gpu_ms"], r["cpu_ms"]))
    lines += ["", "Mean over the searchable layers' shapes, relative to mb_k3_e3 on the same device:", "",
              "| block | GPU ms | GPU vs k3_e3 | CPU ms | CPU vs k3_e3 |", "|---|---:|---:|---:|---:|"]
    base = by_op.get("mb_k3_e3")
    for op, vals in sorted(by_op.items()):
        g, c = statistics.mean(v[0] for v in vals), statistics.mean(v[1] for v in vals)
        bg, bc = statistics.mean(v[0] for v in base), statistics.mean(v[1] for v in base)
        lines.append(f"| {op} | {g:.4f} | {g / bg:.2f} | {c:.4f} | {c / bc:.2f} |")
    if networks:
        lines += ["", "Whole networks (compile-only exports run on the GPU):", "",
                  "| network | GPU ms | top class GPU / PyTorch |", "|---|---:|---|"]
        for n in networks:
            lines.append(f"| `{n['name']}` | {fmt(n.get('raw_ms'), '.4f')} | {n.get('top_class')} / "
                         f"{n['expected_top_class']} |")
    lines += ["", f"GPU: {summary['gpu']}; commands: see bench/cuda_kernels.py."]
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, summary, prefix.with_suffix(".png"))
    print("\n".join(lines))


def plot(rows, summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["gpu_ms"] and r["cpu_ms"]]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = np.arange(len(shown))
    ax.bar(x - 0.2, [r["cpu_ms"] for r in shown], 0.4, label=f"CPU ({summary['cpu_target']}, {summary['cpu_level']})")
    ax.bar(x + 0.2, [r["gpu_ms"] for r in shown], 0.4, label=f"GPU ({summary['gpu']}, default schedules)")
    ax.set_xticks(x, [f"{r['candidate']}" for r in shown], rotation=75, fontsize=7)
    ax.set_ylabel("latency ms (batch 1)")
    ax.set_title(f"Candidate latency: GPU vs CPU ({summary['space']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("pack")
    p.add_argument("--space", default="fashion-mnist")
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--runner", type=Path, default=Path("build/native/tvmnas-run"))
    p.add_argument("--network", type=Path, nargs="*", default=[], help="trained network files to export too")
    p.add_argument("--out", type=Path, default=Path(".cuda-pack"))
    p = steps.add_parser("record")
    p.add_argument("--measurements", type=Path, required=True)
    p.add_argument("--gpu", default="h100")
    p.add_argument("--cpu-target", default="x86-cpu")
    p.add_argument("--cpu-level", default="tuned-8")
    p.add_argument("--db", type=Path, default=default_db())
    p.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.step == "record" and args.out is None:
        args.out = Path(f"bench/results/kernel_choices_cuda_{args.gpu}")
    pack(args) if args.step == "pack" else record(args)


if __name__ == "__main__":
    main()
