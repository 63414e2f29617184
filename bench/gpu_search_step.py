"""Search-step throughput of a supernet on a CUDA GPU (run by bench/gpu_session.sh on a lent GPU machine; needs
torch with CUDA and numpy only). A weight step as `tvmnas search` takes it: one sampled path per layer, forward,
backward, SGD; channels-last inputs; fp32 and bfloat16 autocast; deterministic kernels, as the product runs them
(`tvmnas.dist.deterministic_cuda`). Each block's kernels run once before the timing (the first call of a shape
costs far more than a step).

    PYTHONPATH=. python3 bench/gpu_search_step.py --space proxyless-imagenet --batch-size 64 --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tvmnas.dist import deterministic_cuda
from tvmnas.search.supernet import LayerPaths, Supernet, sample_single_paths
from tvmnas.space import load_space


def steps_per_s(space, batch: int, amp: bool, steps: int, warmup: int = 5) -> tuple[float, float]:
    """(steps per second, seconds of the first pass over every kernel)."""
    device = torch.device("cuda")
    net = Supernet(space).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.weights(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, space.input_channels, space.input_size, space.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,), device=device)
    gen = torch.Generator().manual_seed(0)
    first = time.perf_counter()
    every_choice = [[LayerPaths(c % len(layer.choices)) for layer in net.layers]
                    for c in range(max(len(layer.choices) for layer in net.layers))]
    for i in range(len(every_choice) + warmup + steps):  # first every kernel once: cuDNN's first call of a shape
        if i == len(every_choice):                        # costs far more than a step
            torch.cuda.synchronize()
            first = time.perf_counter() - first
        if i == len(every_choice) + warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        paths = every_choice[i] if i < len(every_choice) else sample_single_paths(net, gen, "uniform")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(net(x, paths), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", nargs="+", default=["fashion-mnist", "proxyless-imagenet"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    deterministic_cuda()  # as `tvmnas search --device cuda` runs
    results = []
    for name in args.space:
        space = load_space(name)
        for amp in (False, True):
            rate, first_s = steps_per_s(space, args.batch_size, amp, args.steps)
            results.append({"space": name, "batch_size": args.batch_size, "amp_bf16": amp, "steps_per_s": rate,
                            "images_per_s": rate * args.batch_size, "first_pass_s": first_s})
            print(results[-1], flush=True)
            with open(args.out, "w") as f:  # after each, so a part cut short keeps what finished
                json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "entries": results}, f,
                          indent=1)


if __name__ == "__main__":
    main()
