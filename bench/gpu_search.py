"""The demo's search and the training of its winner on a CUDA GPU, run by the product's own loops
(`tvmnas.search.run.run_search`, `tvmnas.train.run.train_network`) as `tvmnas search/train --device cuda` run them.
For bench/gpu_session.sh on a lent GPU machine: needs torch with CUDA and numpy, no TVM. The latency table and the
search settings come from the pack (`bench/cuda_kernels.py pack --search-run RUN`): the search optimizes this CPU's
latencies, as a user who searches on a GPU node for a CPU target does.

Records, each as it finishes: the whole search in fp32 and with bfloat16 autocast (wall seconds, steps per second,
the derived architecture), one epoch of training its winner, and the same short fp32 search twice (the product
runs deterministic kernels on a GPU, `tvmnas.dist.deterministic_cuda`: are the architecture parameters equal bit for
bit?), with the warnings of ops that have no deterministic kernel. With --ddp, under torchrun with one process per
GPU: the short search in N processes (NCCL) against one process computing the same N shards.

    PYTHONPATH=. python3 bench/gpu_search.py PACK_DIR --data FASHION_MNIST_DIR --out OUT.json
    PYTHONPATH=. torchrun --nproc-per-node N bench/gpu_search.py PACK_DIR --data ... --ddp --out OUT.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common import learned_tensors, max_abs_diff

from tvmnas.arch import Arch
from tvmnas.data.datasets import SearchData, load_search_data
from tvmnas.dist import World, close_world, init_world
from tvmnas.run_folder import SearchRun
from tvmnas.search.config import SearchConfig
from tvmnas.search.latency import LatencyTable
from tvmnas.search.run import run_search
from tvmnas.space import load_space
from tvmnas.train.config import TrainConfig
from tvmnas.train.run import train_network


@functools.cache
def dataset(*args) -> SearchData:
    """`load_search_data(*args)`, read once for every search and training of this run."""
    return load_search_data(*args)


def search(cfg: SearchConfig, table: LatencyTable, run_dir: Path, device: str, amp: bool,
           world: World | None = None) -> dict:
    """One search (every rank of a torchrun world runs it; `world` overrides that world: one process alone)."""
    space, world = load_space(cfg.space), world or init_world(device, amp)
    data = dataset(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed, cfg.limit)
    start = time.perf_counter()
    result = run_search(cfg, space, table, data, run_dir, world=world)
    seconds = time.perf_counter() - start
    steps = cfg.epochs * math.ceil(min(len(data.train), cfg.images_per_epoch or len(data.train)) / cfg.batch_size)
    return {"device": device, "amp_bf16": amp, "processes": world.size, "shards": cfg.shards, "epochs": cfg.epochs,
            "images_per_epoch": cfg.images_per_epoch,
            "batch_size": cfg.batch_size, "seconds": seconds, "weight_steps_per_s": steps / seconds,
            "epoch_seconds": [e["seconds"] for e in result.log], "arch": list(result.arch_ops),
            "predicted_ms": result.predicted_latency_ms, "valid_acc": result.valid_acc}


def compare_alphas(one: Path, other: Path) -> dict:
    """Two search runs' architecture parameters: equal bit for bit, and how far apart."""
    a, b = (learned_tensors(SearchRun(run).checkpoint, "supernet") for run in (one, other))
    alphas = [k for k in a if k.endswith("alpha")]
    return {"bitwise_equal_alphas": all(torch.equal(a[k], b[k]) for k in alphas),
            "max_alpha_diff": max_abs_diff(a, b, lambda k: k.endswith("alpha"))}


def ddp_check(short: SearchConfig, table: LatencyTable, folder: Path, device: str) -> dict | None:
    """Under torchrun: the short search in every process (one GPU each, NCCL), then on rank 0 the same search
    in one process with as many shards; equal alphas bit for bit is the goal (README: several processes). Returns
    the comparison on rank 0, None on the others."""
    world = init_world(device)
    cfg = dataclasses.replace(short, shards=world.size)
    try:  # every rank leaves through close_world's barrier, also when rank 0's own search fails
        spread = search(cfg, table, folder / "ddp", device, False, world)
        if not world.is_main:
            return None
        alone = search(cfg, table, folder / "alone", device, False, World(0, 1, world.device))
    finally:
        close_world(world)
    return {"processes": world.size, "shards": cfg.shards, "epochs": cfg.epochs,
            "images_per_epoch": cfg.images_per_epoch, "same_arch": spread["arch"] == alone["arch"],
            **compare_alphas(folder / "ddp", folder / "alone"),
            "seconds": {"processes": spread["seconds"], "one_process": alone["seconds"]},
            "arch": [spread["arch"], alone["arch"]]}


def train(space_name: str, ops: list[str], data: str, out_dir: Path, device: str, epochs: int) -> dict:
    space, world = load_space(space_name), init_world(device)
    cfg = TrainConfig(epochs=epochs, data=data)
    loaded = dataset(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed, cfg.limit)
    start = time.perf_counter()
    result = train_network(cfg, space, Arch(space_name, tuple(ops)), loaded, out_dir, world=world)
    return {"device": device, "arch": ops, "epochs": epochs, "seconds": time.perf_counter() - start,
            "test_acc": result.test_acc, "valid_acc": result.valid_acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--data", required=True, help="the Fashion-MNIST IDX folder there")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a smoke test of this script)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the demo's images per epoch (smoke)")
    parser.add_argument("--ddp", action="store_true",
                        help="under torchrun: only the short search in N processes vs one process with N shards")
    args = parser.parse_args()
    source = json.loads((args.pack / "search" / "search.json").read_text())
    table = LatencyTable(source["table"]["fixed_ms"], tuple(map(tuple, source["table"]["layer_ms"])))
    cfg = SearchConfig.from_json(source["config"], "pack search config")
    per_epoch = int((cfg.images_per_epoch or 60000) * args.scale) // cfg.batch_size * cfg.batch_size
    cfg = dataclasses.replace(cfg, data=args.data, images_per_epoch=per_epoch)
    short = dataclasses.replace(cfg, epochs=2, warmup_epochs=1, images_per_epoch=max(cfg.batch_size, per_epoch // 4))
    results = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "torch": torch.__version__,
               "cpu_search": source.get("cpu_search")}

    def save(key: str, value) -> None:
        results[key] = value
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(key, json.dumps(value), flush=True)

    if args.ddp:  # the run folders must be the same path for every rank: beside the output file
        folder = args.out.parent / (args.out.stem + "-runs")
        checked = ddp_check(short, table, folder, args.device)
        if checked is not None:
            shutil.rmtree(folder, ignore_errors=True)
            save("ddp", checked)
        return
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tmp = Path(tmp)
        save("search_fp32", search(cfg, table, tmp / "fp32", args.device, False))
        save("train_fp32", train(cfg.space, results["search_fp32"]["arch"], args.data, tmp / "train", args.device, 1))
        save("search_bf16", search(cfg, table, tmp / "bf16", args.device, True))
        first, second = (search(short, table, tmp / f"short{i}", args.device, False) for i in range(2))
        save("repeat_fp32", {"epochs": short.epochs, "images_per_epoch": short.images_per_epoch,
                             "same_arch": first["arch"] == second["arch"],
                             **compare_alphas(tmp / "short0", tmp / "short1"),
                             "arch": [first["arch"], second["arch"]]})
        save("warnings", sorted({str(w.message).splitlines()[0] for w in caught}))  # ops with no deterministic kernel


if __name__ == "__main__":
    main()
