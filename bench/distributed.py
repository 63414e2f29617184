"""Search and training in 1 process vs N processes under torchrun (gloo, this CPU), and how fast the ImageFolder
data path decodes 224x224 images (issue 14).

Search: the demo's search (fashion-mnist, x86-cpu, the latency database's table; by default one epoch without
warm-up, `--epochs 5` for the demo's whole search), the same global batch, seed and shards (N, see
`tvmnas.dist.Shards`) in one process with every core and in N processes with one thread each; the architecture
parameters, weights and derived architectures compared, and steps per second. The control: the same one-process
search with one thread (sharded steps do not depend on the thread count). The plain step (one shard, every core)
is timed beside them: what the sharding costs in one process. Training: one epoch of the derived network, the same
three ways, its weights compared, images per second. Why shards: the plain search with 1 thread as well (its
float sums change order with the threads). Data: a generated folder of JPEG files at 256x256 streamed
through the training transform (random resized crop to 224, flip) with 0 and 2 workers.

    .venv/bin/python bench/distributed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import DEFAULT_DB, REPO, command_line, learned_tensors, max_abs_diff, write_results

from tvmnas.procs import free_port
from tvmnas.search.config import SearchConfig
from tvmnas.run_folder import SearchRun, TrainRun, read_log

SEARCH_BATCH = SearchConfig.batch_size


def tvmnas(processes: int, *argv, threads: int | None = None) -> float:
    """Run a tvmnas command in `processes` processes (one: with `threads` threads, default all cores); its wall
    time in seconds."""
    if processes == 1:
        cmd = [sys.executable, "-m", "tvmnas.cli"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads or os.cpu_count()))
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
               str(free_port()), "-m", "tvmnas.cli"]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, os.cpu_count() // processes)))
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:1]))} in {processes} process(es) failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def data_throughput(tmp: Path, images: int, workers: int) -> float:
    from PIL import Image

    from tvmnas.data.datasets import load_image_folder
    from tvmnas.data.loading import batches, epoch_batches
    from tvmnas.dist import World

    folder = tmp / "images"
    if not folder.exists():
        rng = np.random.default_rng(0)
        for i in range(images):
            (folder / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
            smooth = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)  # photo-like: compresses as JPEG does
            Image.fromarray(smooth).resize((256, 256), Image.BILINEAR).save(folder / f"c{i % 4}" / f"{i}.jpg")
    data = load_image_folder(folder, 3, 224)
    index = epoch_batches(len(data), 32, None, np.random.default_rng(0), World())
    start = time.perf_counter()
    seen = sum(len(y) for _, y in batches(data, index, torch.device("cpu"), train=True, workers=workers))
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images-per-epoch", type=int, default=6400)
    parser.add_argument("--epochs", type=int, default=1, help="search epochs (the demo's: 5, the first a warm-up)")
    args = parser.parse_args()

    n = args.processes
    search = ["search", "--space", "fashion-mnist", "--target", "x86-cpu", "--latency-ms", "0.5", "--db", args.db,
              "--epochs", args.epochs, "--warmup-epochs", 0 if args.epochs == 1 else 1, "--images-per-epoch",
              args.images_per_epoch, "--device", "cpu"]
    ways = {"plain": (1, ["--shards", 1], None), "one": (1, ["--shards", n], None), "many": (n, [], None),
            "one-thread": (1, ["--shards", n], 1), "plain-one-thread": (1, ["--shards", 1], 1)}
    # name: (processes, flags, threads of one process)
    entries, found = [], {}
    with tempfile.TemporaryDirectory(prefix="tvmnas-dist-") as tmp:
        tmp = Path(tmp)
        for name, (processes, flags, threads) in ways.items():
            run = SearchRun(tmp / f"search-{name}")
            wall = tvmnas(processes, *search, *flags, "--out", run.folder, threads=threads)
            log = read_log(run.log)
            seconds = sum(e["seconds"] for e in log)
            steps = args.epochs * args.images_per_epoch // SEARCH_BATCH  # weight steps (arch steps between)
            found[name] = learned_tensors(run.checkpoint, "supernet")
            entries.append({"what": "search", "way": name, "processes": processes, "flags": list(map(str, flags)),
                            "threads": threads or os.cpu_count() // processes, "wall_s": wall, "seconds": seconds,
                            "steps": steps, "steps_per_s": steps / seconds,
                            "arch": json.loads(run.arch.read_text())["ops"]})
        for name, (processes, flags, threads) in ways.items():
            if name.endswith("one-thread"):
                continue
            out = TrainRun(tmp / f"train-{name}")
            tvmnas(processes, "train", "--arch", SearchRun(tmp / "search-one").arch, "--epochs", "1",
                   "--images-per-epoch", args.images_per_epoch, "--device", "cpu", *flags, "--out", out.folder)
            seconds = sum(e["seconds"] for e in read_log(out.log))
            found[f"train-{name}"] = learned_tensors(out.checkpoint, "network")
            entries.append({"what": "train", "way": name, "processes": processes, "seconds": seconds,
                            "images_per_s": args.images_per_epoch / seconds})
        data = {w: data_throughput(tmp, 256, w) for w in (0, 2)}
    search_rows = {e["way"]: e for e in entries if e["what"] == "search"}
    train_rows = {e["way"]: e for e in entries if e["what"] == "train"}

    def is_alpha(key: str) -> bool:
        return key.endswith("alpha")

    summary = {"same_arch": search_rows["one"]["arch"] == search_rows["many"]["arch"],
               "max_alpha_diff": max_abs_diff(found["one"], found["many"], is_alpha),
               "max_weight_diff": max_abs_diff(found["one"], found["many"]), "shards": n,
               "one_process_threads": f"{os.cpu_count()} vs 1",
               "same_arch_threads": search_rows["one"]["arch"] == search_rows["one-thread"]["arch"],
               "max_alpha_diff_threads": max_abs_diff(found["one"], found["one-thread"], is_alpha),
               "same_arch_plain_threads": search_rows["plain"]["arch"] == search_rows["plain-one-thread"]["arch"],
               "max_alpha_diff_plain_threads": max_abs_diff(found["plain"], found["plain-one-thread"], is_alpha),
               "train_max_weight_diff": max_abs_diff(found["train-one"], found["train-many"]),
               "steps_per_s": {"1": search_rows["one"]["steps_per_s"], str(n): search_rows["many"]["steps_per_s"]},
               "steps_per_s_plain": search_rows["plain"]["steps_per_s"],
               "train_images_per_s": {"1": train_rows["one"]["images_per_s"],
                                      str(n): train_rows["many"]["images_per_s"]},
               "train_images_per_s_plain": train_rows["plain"]["images_per_s"],
               "imagefolder_224_images_per_s": {f"{w}_workers": v for w, v in data.items()},
               "search_epochs": args.epochs, "images_per_epoch": args.images_per_epoch, "gpu": None}
    entries.append({"what": "imagefolder-224", "images_per_s": data})
    lines = [f"## 1 vs {n} processes (torchrun, gloo, {os.cpu_count()} cores), {n} shards per batch", "",
             f"Search, {args.epochs} epoch(s) of {args.images_per_epoch} images: same derived architecture "
             f"**{summary['same_arch']}**, largest alpha difference {summary['max_alpha_diff']:.3g}, largest weight "
             f"difference {summary['max_weight_diff']:.3g}. The control, one process with {os.cpu_count()} threads "
             f"vs 1 thread: same architecture **{summary['same_arch_threads']}**, largest alpha difference "
             f"{summary['max_alpha_diff_threads']:.3g}. Training one epoch: largest weight difference "
             f"{summary['train_max_weight_diff']:.3g}. Why shards: the plain step (one shard, every thread) with "
             f"{os.cpu_count()} threads vs 1 (the same sums in another order): same architecture "
             f"**{summary['same_arch_plain_threads']}**, largest alpha difference "
             f"{summary['max_alpha_diff_plain_threads']:.3g}.", "",
             "| run | search weight steps/s (epoch incl. validation) | training images/s |", "|---|---:|---:|"]
    labels = {"plain": f"1 process, 1 shard, {os.cpu_count()} threads",
              "one": f"1 process, {n} shards, {os.cpu_count()} threads", "many": f"{n} processes, 1 thread each"}
    for way, label in labels.items():
        lines.append(f"| {label} | {search_rows[way]['steps_per_s']:.2f} | {train_rows[way]['images_per_s']:.0f} |")
    lines += ["", "ImageFolder, 256x256 JPEG -> random resized crop 224 + flip, batch 32: "
              + ", ".join(f"{w} workers {v:.0f} images/s" for w, v in data.items()) + ".",
              "", "No GPU was lent to this session: GPU throughput is not recorded."]
    write_results("distributed", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
