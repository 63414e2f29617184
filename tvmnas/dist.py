"""Where a search or a training runs: the device, and the processes of a torch.distributed world.

One process: `World()` (rank 0 of 1). Several, launched by `torchrun --nproc-per-node N` (on one machine) or
`torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT ...` (on several): `init_world` reads the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins the process group,
gloo on CPU and NCCL on CUDA. Every rank runs the same steps on its shard of each global batch; gradients are
averaged across ranks; only rank 0 writes files and prints.
"""

from __future__ import annotations

import hashlib
import json
import os
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

    def global_batchnorm(self, module: torch.nn.Module) -> torch.nn.Module:
        """In a distributed world, make the module's BatchNorm layers normalize over the global batch (see
        `GlobalBatchNorm2d`), so N processes compute what one does; in one process, leave it as it is."""
        if self.distributed:
            for m in module.modules():
                if type(m) is torch.nn.BatchNorm2d:
                    m.__class__ = GlobalBatchNorm2d  # same parameters, buffers and state_dict: only forward differs
        return module

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


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over all ranks; its gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch: each rank's per-channel sums of x and x^2
    and its count are all-reduced (with gradients), so every rank normalizes with the mean and variance one process
    would compute over the whole batch. SyncBatchNorm's arithmetic, on CPU and gloo as well (torch's runs on GPUs
    only). Every rank must run the same layers in the same order, as the search and training do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels, xf = x.shape[1], x.float()
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), xf.new_full((1,), x.numel() / channels)])
        total = _SumOverRanks.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(var * count / (count - 1).clamp_min(1), alpha=factor)
        shape = (1, channels, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def pick_device(name: str = "auto") -> torch.device:
    if name not in RUN_DEVICES:
        raise TvmnasError(f"unknown device {name!r}; known: {', '.join(RUN_DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TvmnasError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu)")
    return torch.device(name)


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
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return World(rank, size, dev, amp)


def close_world(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                dist.barrier()  # every rank leaves together: gloo aborts a rank torn down while others still run
            finally:
                dist.destroy_process_group()
