"""Where a search or a training runs: the device, and the processes of a torch.distributed world.

One process: `World()` (rank 0 of 1). Several, launched by `torchrun --nproc-per-node N` (on one machine) or
`torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT ...` (on several): `init_world` reads the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins the process group,
gloo on CPU; on CUDA NCCL, with gloo for the CPU tensors. Every rank runs the same steps on its shards of each
global batch (`Shards`: N processes compute bit for bit what one computes); only rank 0 writes files and prints. A
world on a GPU runs deterministic kernels (`deterministic_cuda`)."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from tvmnas.errors import TvmnasError
from tvmnas.targets import RUN_DEVICES


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False  # bfloat16 autocast in forward passes

    def __post_init__(self) -> None:
        if self.device.type == "cuda":  # every run on a GPU, however its world was made
            deterministic_cuda()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch, what: str = "batch"):
        """This rank's part of a global batch of indices (equal parts; the global batch is what one process uses)."""
        if len(batch) % self.size:
            raise TvmnasError(f"a {what} of {len(batch)} does not split evenly over {self.size} processes")
        part = len(batch) // self.size
        return batch[self.rank * part:(self.rank + 1) * part]

    def average(self, tensors) -> None:
        """Average the tensors (gradients) across ranks, in place; those that are None are skipped (every rank
        runs the same paths, so the same ones are None everywhere)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            if t is not None:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                t.div_(self.size)

    def broadcast(self, obj):
        """Rank 0's object on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn):
        """fn() on rank 0, its result on every rank; a TvmnasError it raises is raised on every rank (the others
        would otherwise wait for rank 0 forever)."""
        if not self.distributed:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except TvmnasError as err:
                error = str(err)
        result, error = self.broadcast((result, error))
        if error is not None:
            raise TvmnasError(error)
        return result

    def memory_bytes(self) -> int | None:
        """The GPU's memory (None on CPU: the space's own bound holds there)."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.get_device_properties(self.device).total_memory)

    def check_same(self, settings: dict, what: str) -> None:
        """Refuse, on every rank in one line, settings that differ between ranks (a misconfigured world)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        everyone: list = [None] * self.size
        dist.all_gather_object(everyone, (digest, settings))
        differ = [r for r, (d, _) in enumerate(everyone) if d != everyone[0][0]]
        if differ:
            keys = sorted(k for k in settings if everyone[differ[0]][1].get(k) != everyone[0][1].get(k))
            raise TvmnasError(f"the {what} of rank {differ[0]} differ from rank 0's ({', '.join(keys)}): every "
                              f"process must be started with the same flags")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)


@dataclass(frozen=True)
class Shards:
    """How every global batch of a search or training is computed: as `count` fixed shards of equal size, each its
    own forward and backward with its own BatchNorm statistics (ghost batches, as data-parallel training without
    synchronized BatchNorm normalizes), their gradients summed in shard order. The shards are split among the
    processes (`count` a multiple of the world size; rank r holds the r-th run of count/size shards) and, where a
    process holds several, they run in parallel threads. With more than one shard every shard runs on one
    intra-op thread and no running BatchNorm statistics are kept during the steps (callers measure them again
    before evaluating): the arithmetic of a step then depends on `count` alone, so N processes, or one process
    with any number of threads, compute bit for bit the same (on one kind of CPU and software: other hardware
    runs other kernels). One shard in one process is the plain step, with every thread on it. The price: each
    rank gathers every shard's gradients (count x the parameters per step, where an all-reduce moves about 2x),
    small for the networks searched here.

    Why exact and not "equal up to reduction order": the search amplifies any difference (measured: one process
    at 2 threads vs 1 thread, the same computation with float sums in another order, ends one epoch with alphas
    4.5 apart and another network; `bench/results/distributed.md`)."""

    count: int
    world: World = World()
    threads: int = field(default_factory=torch.get_num_threads)  # the process's threads before a run

    def __post_init__(self) -> None:
        if self.count < 1 or self.count % self.world.size:
            raise TvmnasError(f"{self.count} shard(s) per batch do not split over {self.world.size} processes: "
                              f"run it in a number of processes that divides the shards (--shards of a new run; a "
                              f"resumed run keeps its own)")

    @property
    def local(self) -> int:
        return self.count // self.world.size

    @property
    def plain(self) -> bool:
        """One shard in one process: the ordinary step."""
        return self.count == 1

    def split(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's part of a global batch as its shards, in order."""
        if len(y) % self.local:
            raise TvmnasError(f"a batch part of {len(y)} images does not split into {self.local} shards")
        return list(zip(x.chunk(self.local), y.chunk(self.local)))

    def run(self, fn, items: list) -> list:
        """fn(item) for each of this rank's shards, in order (in parallel threads on a CPU)."""
        if len(items) == 1 or self.world.device.type != "cpu":
            return [fn(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(len(items), self.threads)),
                                initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, items))

    def sum(self, per_shard: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Per tensor, the sum over every shard of the world (this rank's given in order), added in shard order:
        the same additions whichever process holds which shard."""
        if self.plain:
            return list(per_shard[0])
        rows = [torch.cat([t.reshape(-1) for t in tensors]) for tensors in per_shard]
        if self.world.distributed:
            import torch.distributed as dist

            mine = torch.stack(rows)
            everyone = [torch.empty_like(mine) for _ in range(self.world.size)]
            dist.all_gather(everyone, mine)
            rows = [row for part in everyone for row in part]
        total = rows[0].clone()
        for row in rows[1:]:
            total += row
        out, offset = [], 0
        for t in per_shard[0]:
            out.append(total[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()
        return out

    def set_mean_gradients(self, params: list[torch.Tensor], per_shard: list) -> None:
        """Each parameter's .grad: the mean over every shard of the world of its gradient, None where no shard's
        paths used it (the same paths run in every shard and rank)."""
        used = [i for i, g in enumerate(per_shard[0]) if g is not None]
        for param in params:
            param.grad = None
        for i, total in zip(used, self.sum([[grads[i] for i in used] for grads in per_shard])):
            params[i].grad = total / self.count

    @staticmethod
    def totals(per_shard: list[list[float]]) -> torch.Tensor:
        """This rank's sums over its shards of each shard's counts (loss sum, correct, images), as float64."""
        return torch.tensor([sum(column) for column in zip(*per_shard)], dtype=torch.float64)

    @contextmanager
    def steps(self, module: torch.nn.Module):
        """Around a run of steps: with more than one shard, BatchNorm without running statistics and, on a CPU, one
        intra-op thread per shard (a GPU runs deterministic kernels anyway: `deterministic_cuda`); all restored
        after, so evaluation runs on every thread."""
        if self.plain:
            yield
            return
        norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        kept = [m.track_running_stats for m in norms]
        threads = torch.get_num_threads()
        try:
            for m in norms:
                m.track_running_stats = False
            if self.world.device.type == "cpu":
                torch.set_num_threads(1)
            yield
        finally:
            torch.set_num_threads(threads)
            for m, track in zip(norms, kept):
                m.track_running_stats = track


def pick_device(name: str = "auto") -> torch.device:
    if name not in RUN_DEVICES:
        raise TvmnasError(f"unknown device {name!r}; known: {', '.join(RUN_DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TvmnasError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu)")
    return torch.device(name)


def deterministic_cuda() -> None:
    """The same search or training twice on a GPU gives the same result bit for bit, as on a CPU: the search
    amplifies any difference (an H200 ran the same short search twice to alphas 1.7 apart and another network,
    bench/results/gpu_session.md). Deterministic cuDNN and PyTorch kernels (an op that has none warns), and cuBLAS
    with a fixed workspace (set before its first call; a value already in the environment is kept)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_world(device: str = "auto", amp: bool = False) -> World:
    """This process's world: one process, or the torchrun world it was launched in."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if size == 1:
        return World(0, 1, dev, amp)
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if v not in os.environ]
    if missing:
        raise TvmnasError(f"WORLD_SIZE is {size} but {', '.join(missing)} is not set: launch with torchrun")
    import torch.distributed as dist

    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise TvmnasError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        # on GPUs NCCL for the CUDA tensors, gloo for the CPU ones (the float64 totals of a step's shards)
        dist.init_process_group("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    return World(rank, size, dev, amp)


def close_world(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                dist.barrier()  # every rank leaves together: gloo aborts a rank torn down while others still run
            finally:
                dist.destroy_process_group()
