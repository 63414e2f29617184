"""Search-step throughput of a supernet on a CUDA GPU (run by bench/gpu_session.sh on a lent GPU machine; needs
torch with CUDA and numpy only). A weight step as `tvmnas search` takes it: one sampled path per layer, forward,
backward, SGD; channels-last inputs; fp32 and bfloat16 autocast.

    PYTHONPATH=. python3 bench/gpu_search_step.py --space proxyless-imagenet --batch-size 64 --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tvmnas.search.supernet import Supernet, sample_single_paths
from tvmnas.space import load_space


def steps_per_s(space, batch: int, amp: bool, steps: int, warmup: int = 5) -> float:
    device = torch.device("cuda")
    net = Supernet(space).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.weights(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, space.input_channels, space.input_size, space.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,), device=device)
    gen = torch.Generator().manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        paths = sample_single_paths(net, gen, "uniform")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(net(x, paths), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", nargs="+", default=["fashion-mnist", "proxyless-imagenet"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = []
    for name in args.space:
        space = load_space(name)
        for amp in (False, True):
            rate = steps_per_s(space, args.batch_size, amp, args.steps)
            results.append({"space": name, "batch_size": args.batch_size, "amp_bf16": amp, "steps_per_s": rate,
                            "images_per_s": rate * args.batch_size})
            print(results[-1], flush=True)
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "entries": results}, f, indent=1)


if __name__ == "__main__":
    main()
