"""Kernel choices on a CUDA GPU vs this CPU, and the search and training there (bench/gpu_session.sh).

Two steps, because the GPU (when a task has one) is a lent machine without TVM's compiler:
  pack    compile every candidate of the space for the CUDA target here (TVM's default GPU schedules, GPU code
          embedded by nvcc) as one-block bundles, plus whole networks exported compile-only, and put them with
          the native runner and the TVM runtime libraries into one folder (about 18 MB) that travels to the GPU;
          with --search-run, also that search's settings and latency table (bench/gpu_search.py repeats it there);
  record  join what the GPU measured with this CPU's latencies from the latency database (tuned, the numbers the
          CPU search uses) into bench/results/cuda_kernels.{json,md,png}, and (--search) the search, training,
          search-step and determinism figures into gpu_session.{json,md}.

    .venv/bin/python bench/cuda_kernels.py pack --out .cuda-pack --network runs/demo/train/network.pt \
        --search-run runs/demo
    (on the GPU machine) bash bench/gpu_session.sh .cuda-pack .gpu-data/fashion-mnist
    .venv/bin/python bench/cuda_kernels.py record --measurements OUT/cuda_measurements.json \
        --search OUT/gpu_search.json --steps OUT/gpu_search_step.json [--ddp OUT/gpu_ddp.json]
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

from common import RESULTS, command_line, write_results

from tvmnas.deploy.bundle import MANIFEST, MODULE_FILE, NETWORK_FILE, write_manifest
from tvmnas.deploy.export import ExportSettings, export_bundle
from tvmnas.files import default_db
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.build import build_module
from tvmnas.measure.compile import gpu_binary_paths, import_torch
from tvmnas.measure.method import latency_scope
from tvmnas.model.blocks import candidate_module, fold_batchnorm
from tvmnas.run_folder import bundle_folder
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
        folder = out / "blocks" / f"{cand.ident}"
        folder.mkdir(parents=True)
        torch.manual_seed(0)
        module = candidate_module(cand).eval()
        with tempfile.TemporaryDirectory() as tmp:
            built = build_module(import_torch(fold_batchnorm(module), cand.input_shape), spec, 0, Path(tmp), None,
                                 folder / MODULE_FILE)
        np.save(folder / "input.npy", np.random.default_rng(0).standard_normal(cand.input_shape, dtype=np.float32))
        gpu = [p.name for p in gpu_binary_paths(built.lib_path)]
        write_manifest(folder, {"module": MODULE_FILE, "device": spec.device, "threads": 0, "gpu_binaries": gpu,
                                "input": {"shape": list(cand.input_shape)}, "classes": [], "latency": {}},
                       [MODULE_FILE, *gpu])  # no recorded latency: the runner's default protocol, no reference
        index.append({"kind": "block", "name": cand.key, "input_shape": cand.shape_text,
                      "dir": str(folder.relative_to(out)),
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
    if args.search_run:
        pack_search(args.search_run, args.db, out / "search")
    (out / "index.json").write_text(json.dumps({"space": space.name, "target": spec.name, "tvm_version": tvm_version(),
                                                "entries": index}, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {len(index)} bundles into {out} ({size / 2**20:.1f} MiB)")


def fmt(value, spec: str, unit: str = "") -> str:
    """A table cell: the value formatted, or n/a where it is missing."""
    return "n/a" if value is None else format(value, spec) + unit


def pack_search(run: Path, db: Path, out: Path) -> None:
    """What bench/gpu_search.py needs to repeat the run's search on the GPU without TVM or the database: its
    settings, its latency table, and what the search and the training took here."""
    from tvmnas.run_folder import SearchRun, TrainRun
    from tvmnas.search.latency import load_table

    files = SearchRun(run)
    config = json.loads(files.config.read_text())
    table = load_table(db, load_space(config["space"]),
                       latency_scope(load_target(config["target"]), config["measured_by"], config["level"]))
    searched, trained = json.loads(files.summary.read_text()), json.loads(TrainRun(run / "train").summary.read_text())
    out.mkdir(parents=True)
    (out / "search.json").write_text(json.dumps({
        "config": config, "table": {"fixed_ms": table.fixed_ms, "layer_ms": table.layer_ms},
        "cpu_search": {"run": str(run), "seconds": searched["search_seconds"], "arch": searched["arch"],
                       "predicted_ms": searched["predicted_latency_ms"], "valid_acc": searched["valid_acc"],
                       "train_seconds_per_epoch": trained["train_seconds"] / trained["epochs"],
                       "test_acc": trained["test_acc"]}}, indent=1) + "\n")


def record(args) -> None:
    measured = json.loads(args.measurements.read_text())
    index = {e["dir"]: e for e in measured["entries"]}
    space, cpu = load_space(measured["space"]), load_target(args.cpu_target)
    scope = latency_scope(cpu, "local", args.cpu_level)
    rows = []
    with LatencyDB(args.db) as db:
        for cand in space.candidates():
            entry = index.get(f"blocks/{cand.ident}")
            row = db.get(scope, cand.key, cand.shape_text)
            rows.append({"candidate": cand.key, "input_shape": cand.shape_text, "stage": cand.stage_label,
                         "gpu_ms": entry and entry.get("raw_ms"), "gpu_error": entry and entry.get("error"),
                         "cpu_ms": row.latency_ms if row is not None and row.ok else None})
    for r in rows:
        r["gpu_over_cpu"] = r["gpu_ms"] / r["cpu_ms"] if r["gpu_ms"] and r["cpu_ms"] else None
    networks = [e for e in measured["entries"] if e["kind"] == "network"]
    for n in networks:  # the same network's tuned CPU module, as its CPU bundle measured it at export
        bundle = bundle_folder(Path(n["source"]).parent.parent, args.cpu_target) / MANIFEST  # RUN/train/network.pt
        n["cpu_ms"] = json.loads(bundle.read_text())["latency"]["measured_ms"] if bundle.exists() else None
        n["top_class_agrees"] = n.get("top_class") == n["expected_top_class"]
    ratios = [r["gpu_over_cpu"] for r in rows if r["gpu_over_cpu"]]
    summary = {"gpu": measured.get("gpu"), "space": space.name, "gpu_target": measured["target"],
               "gpu_level": "default (dlight schedules, untuned)", "cpu_target": cpu.name, "cpu_level": args.cpu_level,
               "blocks": len(rows), "blocks_measured": sum(r["gpu_ms"] is not None for r in rows),
               "median_gpu_over_cpu": statistics.median(ratios) if ratios else None,
               "networks": [{"arch": n["name"], "gpu_ms": n.get("raw_ms"), "cpu_ms": n["cpu_ms"],
                             "top_class_agrees": n["top_class_agrees"]} for n in networks],
               "timing_gpu": "native runner (the single-network protocol over "
                             f"{measured.get('span_s')} s, no reference module: its 5% quantile of windows)",
               "timing_cpu": "blocks: latency database (tvmnas profile); networks: the CPU bundle's export measurement"}
    lines = [f"## Kernel choices: {summary['gpu']} ({summary['gpu_target']}, {summary['gpu_level']}) vs this CPU "
             f"({cpu.name}, {args.cpu_level})", "",
             f"Per candidate block of the `{space.name}` space at batch 1. GPU: " + summary["timing_gpu"] +
             ". CPU: " + summary["timing_cpu"] + ".", "",
             "| candidate | input | GPU ms | CPU ms | GPU / CPU |", "|---|---|---:|---:|---:|"]
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
        lines += ["", "Whole networks (compile-only CUDA exports run by the native runner; CPU: the tuned bundle):", "",
                  "| network | GPU ms | CPU ms | top class GPU / PyTorch |", "|---|---:|---:|---|"]
        for n in networks:
            lines.append(f"| `{n['name']}` | {fmt(n.get('raw_ms'), '.4f')} | {fmt(n['cpu_ms'], '.4f')} | "
                         f"{n.get('top_class')} / {n['expected_top_class']} |")
    write_results("cuda_kernels", summary, {"blocks": rows, "networks": networks}, lines, command_line(),
                  per_cpu=False)
    plot(rows, summary, RESULTS / "cuda_kernels.png")
    if args.search:
        record_session(args, summary)


def record_session(args, kernels: dict) -> None:
    """gpu_session.{json,md}: the search and the training on the GPU beside this CPU's, the search step's rate, the
    determinism check, and the demo winner's CUDA module. Parts the GPU run did not finish are recorded as None."""
    searched = json.loads(args.search.read_text())
    cpu = searched["cpu_search"]
    fp32, bf16, trained = (searched.get(k) or {} for k in ("search_fp32", "search_bf16", "train_fp32"))
    steps = [e for f in args.steps for e in json.loads(f.read_text())["entries"]]
    earlier = json.loads(args.earlier_search.read_text()) if args.earlier_search else None
    winner = kernels["networks"][0] if kernels["networks"] else {}
    summary = {
        "gpu": searched["gpu"], "torch": searched["torch"],
        "demo_winner_cuda_ms": winner.get("gpu_ms"), "demo_winner_cpu_ms": winner.get("cpu_ms"),
        "demo_winner_top_class_agrees": winner.get("top_class_agrees"),
        "search_epochs": fp32.get("epochs"), "search_s_fp32": fp32.get("seconds"), "search_s_bf16": bf16.get("seconds"),
        "search_s_cpu": cpu["seconds"],
        "train_epoch_s_gpu": trained.get("seconds"), "train_epoch_s_cpu": cpu["train_seconds_per_epoch"],
        "test_acc_gpu": trained.get("test_acc"), "test_acc_cpu": cpu["test_acc"],
        "steps_per_s": {f"{e['space']} {'bf16' if e['amp_bf16'] else 'fp32'}": e["steps_per_s"] for e in steps},
        "deterministic_repeat": searched.get("repeat_fp32"), "nondeterministic_ops": searched.get("warnings"),
        "before_deterministic_kernels": earlier and {
            "repeat": earlier["repeat_fp32"], "search_s_fp32": earlier["search_fp32"]["seconds"]},
        "ddp": (json.loads(args.ddp.read_text())["ddp"] if args.ddp else
                "not run: fewer than two GPUs there (NCCL takes one GPU per process); the 2-process equivalence is "
                "checked on the CPU with gloo (distributed.md)"),
    }
    lines = [f"## The search and the training on a GPU: {summary['gpu']} (torch {summary['torch']})", "",
             "The demo's search (its settings and this CPU's latency table, `bench/gpu_search.py`) and one epoch of "
             "training its winner, by the product's loops, beside the same run on this CPU (`runs/demo`).", "",
             "| | GPU | this CPU |", "|---|---:|---:|",
             f"| search, fp32 ({fmt(summary['search_epochs'], 'd')} epochs) | "
             f"{fmt(summary['search_s_fp32'], '.1f', ' s')} | {summary['search_s_cpu']:.1f} s |",
             f"| search, bfloat16 autocast | {fmt(summary['search_s_bf16'], '.1f', ' s')} | |",
             f"| training, one epoch | {fmt(summary['train_epoch_s_gpu'], '.1f', ' s')} | "
             f"{summary['train_epoch_s_cpu']:.1f} s |",
             f"| test accuracy after it | {fmt(summary['test_acc_gpu'], '.4f')} | {summary['test_acc_cpu']:.4f} |",
             f"| demo winner's compiled module, batch 1 | {fmt(winner.get('gpu_ms'), '.4f', ' ms')} (CUDA, untuned) | "
             f"{fmt(winner.get('cpu_ms'), '.4f', ' ms')} (tuned-8) |", ""]
    rep = summary["deterministic_repeat"]
    if rep:
        lines.append(f"Same short search twice (fp32, {rep['epochs']} epochs of {rep['images_per_epoch']} images): "
                     f"same architecture {rep['same_arch']}, alphas equal bit for bit {rep['bitwise_equal_alphas']} "
                     f"(max difference {rep['max_alpha_diff']:g}); ops without a deterministic kernel: "
                     f"{', '.join(summary['nondeterministic_ops'] or []) or 'none'}.")
    if earlier:
        before = summary["before_deterministic_kernels"]
        lines.append(f"Before `tvmnas.dist.deterministic_cuda` (cuDNN's default algorithms), the same check: same "
                     f"architecture {before['repeat']['same_arch']}, max alpha difference "
                     f"{before['repeat']['max_alpha_diff']:.2f}; the fp32 search took {before['search_s_fp32']:.1f} s.")
    lines += ["", "Search step (one sampled path per layer, forward, backward, SGD; batch 64; every kernel run once "
              "before timing):", "", "| space | precision | steps/s |", "|---|---|---:|"]
    lines += [f"| {e['space']} | {'bf16' if e['amp_bf16'] else 'fp32'} | {e['steps_per_s']:.1f} |" for e in steps]
    ddp = summary["ddp"]
    lines += ["", f"DDP: {ddp}." if isinstance(ddp, str) else
              f"DDP: the short search in {ddp['processes']} processes (one GPU each, NCCL) against one process with "
              f"{ddp['shards']} shards: same architecture {ddp['same_arch']}, alphas equal bit for bit "
              f"{ddp['bitwise_equal_alphas']} (max difference {ddp['max_alpha_diff']:g}); "
              f"{ddp['seconds']['processes']:.1f} s vs {ddp['seconds']['one_process']:.1f} s."]
    write_results("gpu_session", summary, {"search": searched, "steps": steps, "earlier": earlier}, lines,
                  command_line(), per_cpu=False)


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
    p.add_argument("--search-run", type=Path, help="a finished search with its training (runs/demo) to repeat "
                                                    "on the GPU (bench/gpu_search.py)")
    p.add_argument("--db", type=Path, default=default_db())
    p.add_argument("--out", type=Path, default=Path(".cuda-pack"))
    p = steps.add_parser("record")
    p.add_argument("--measurements", type=Path, required=True, help="cuda_measurements.json from the GPU")
    p.add_argument("--search", type=Path, help="gpu_search.json from the GPU (then gpu_session.* is written too)")
    p.add_argument("--steps", type=Path, nargs="*", default=[], help="gpu_search_step.json files from the GPU")
    p.add_argument("--ddp", type=Path, help="gpu_ddp.json from the GPU machine, where it had two GPUs or more")
    p.add_argument("--earlier-search", type=Path, help="an earlier gpu_search.json to show beside (before a change)")
    p.add_argument("--cpu-target", default="x86-cpu")
    p.add_argument("--cpu-level", default="tuned-8")
    p.add_argument("--db", type=Path, default=default_db())
    args = parser.parse_args()
    pack(args) if args.step == "pack" else record(args)


if __name__ == "__main__":
    main()
