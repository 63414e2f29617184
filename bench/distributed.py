"""Search and training in 1 process vs N processes under torchrun (gloo, this CPU), and how fast the ImageFolder
data path decodes 224x224 images (issue 14).

Search: the demo's search (fashion-mnist, x86-cpu, the latency database's table) for one epoch without warm-up,
the same global batch and seed in both runs; the architecture parameters and derived architectures compared, and
steps per second. Training: one epoch of the derived network, images per second. One process gets every core as
threads; N processes get one thread each (the cores are shared out, not added). Data: a generated folder of JPEG
files at 256x256 streamed through the training transform (random resized crop to 224, flip) with 0 and 2 workers.

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

from common import DEFAULT_DB, REPO, command_line, write_results

from tvmnas.procs import free_port
from tvmnas.search.config import SearchConfig
from tvmnas.run_folder import SearchRun, TrainRun, read_log

SEARCH_BATCH = SearchConfig.batch_size


def tvmnas(processes: int, *argv, threads: int | None = None) -> float:
    """Run a tvmnas command in `processes` processes (one: with `threads` threads, default all cores); its wall
    time in seconds."""
    if processes == 1:
        cmd, env = [sys.executable, "-m", "tvmnas.cli"], dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
               str(free_port()), "-m", "tvmnas.cli"]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, os.cpu_count() // processes)))
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:1]))} in {processes} process(es) failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def alphas(run: SearchRun) -> torch.Tensor:
    state = torch.load(run.checkpoint, weights_only=True)["supernet"]
    return torch.cat([v for k, v in sorted(state.items()) if k.endswith("alpha")])


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
    args = parser.parse_args()

    search = ["search", "--space", "fashion-mnist", "--target", "x86-cpu", "--latency-ms", "0.5", "--db", args.db,
              "--epochs", "1", "--warmup-epochs", "0", "--images-per-epoch", args.images_per_epoch,
              "--device", "cpu"]
    entries, runs = [], {}
    with tempfile.TemporaryDirectory(prefix="tvmnas-dist-") as tmp:
        tmp = Path(tmp)
        for n in (1, args.processes):
            runs[n] = SearchRun(tmp / f"search-{n}")
            wall = tvmnas(n, *search, "--out", runs[n].folder)
            log = read_log(runs[n].log)
            steps = args.images_per_epoch // SEARCH_BATCH  # weight steps (architecture steps come between)
            entries.append({"what": "search", "processes": n, "wall_s": wall, "epoch_s": log[-1]["seconds"],
                            "steps": steps, "steps_per_s": steps / log[-1]["seconds"],
                            "arch": json.loads(runs[n].arch.read_text())["ops"]})
        for n in (1, args.processes):
            out = TrainRun(tmp / f"train-{n}")
            tvmnas(n, "train", "--arch", runs[1].arch, "--epochs", "1", "--images-per-epoch",
                   args.images_per_epoch, "--device", "cpu", "--out", out.folder)
            seconds = sum(e["seconds"] for e in read_log(out.log))
            entries.append({"what": "train", "processes": n, "seconds": seconds,
                            "images_per_s": args.images_per_epoch / seconds})
        # the control: one process again, with one thread (the float additions in another order, nothing else)
        threads = SearchRun(tmp / "search-1-thread")
        tvmnas(1, *search, "--out", threads.folder, threads=1)
        data = {w: data_throughput(tmp, 256, w) for w in (0, 2)}
        diff = float((alphas(runs[1]) - alphas(runs[args.processes])).abs().max())
        thread_diff = float((alphas(runs[1]) - alphas(threads)).abs().max())
        thread_same = json.loads(threads.arch.read_text())["ops"] == json.loads(runs[1].arch.read_text())["ops"]
    search_rows = [e for e in entries if e["what"] == "search"]
    train_rows = [e for e in entries if e["what"] == "train"]
    summary = {"same_arch": search_rows[0]["arch"] == search_rows[1]["arch"], "max_alpha_diff": diff,
               "one_process_threads": f"{os.cpu_count()} vs 1", "same_arch_threads": thread_same,
               "max_alpha_diff_threads": thread_diff,
               "steps_per_s": {str(e["processes"]): e["steps_per_s"] for e in search_rows},
               "train_images_per_s": {str(e["processes"]): e["images_per_s"] for e in train_rows},
               "imagefolder_224_images_per_s": {f"{w}_workers": v for w, v in data.items()},
               "images_per_epoch": args.images_per_epoch, "gpu": None}
    entries.append({"what": "imagefolder-224", "images_per_s": data})
    lines = [f"## 1 vs {args.processes} processes (torchrun, gloo, {os.cpu_count()} cores)", "",
             f"Search, one epoch of {args.images_per_epoch} images: same derived architecture: "
             f"**{summary['same_arch']}**, largest alpha difference {diff:.3f}. The control, one process with "
             f"{os.cpu_count()} threads vs 1 thread (the same computation, its float additions in another order): "
             f"same derived architecture **{thread_same}**, largest alpha difference {thread_diff:.3f}.", "",
             "| processes | search weight steps/s (epoch incl. validation) | training images/s |", "|---:|---:|---:|"]
    for s, t in zip(search_rows, train_rows):
        lines.append(f"| {s['processes']} | {s['steps_per_s']:.2f} | {t['images_per_s']:.0f} |")
    lines += ["", "ImageFolder, 256x256 JPEG -> random resized crop 224 + flip, batch 32: "
              + ", ".join(f"{w} workers {v:.0f} images/s" for w, v in data.items()) + ".",
              "", "No GPU was lent to this session: GPU throughput is not recorded."]
    write_results("distributed", summary, entries, lines, command_line())


if __name__ == "__main__":
    main()
