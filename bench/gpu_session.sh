#!/usr/bin/env bash
# Everything a lent GPU is asked for (issues 14 and 19), in one run of 6-8 minutes (the `device` tool: one lease;
# its parts' limits add up to under its 10 minutes).
#
# Here first (this machine has TVM's compiler; the GPU machine gets only what it needs to run):
#   .venv/bin/python bench/cuda_kernels.py pack --out .cuda-pack --network runs/demo/train/network.pt \
#       --search-run runs/demo
#   mkdir -p .gpu-data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/fashion-mnist/
#   (both folders ignored by git: list them in .git/info/exclude and name them in the run's `carry`)
# Then on the GPU machine:
#   bash bench/gpu_session.sh .cuda-pack .gpu-data/fashion-mnist        (writes into $OUT)
# Back here:
#   .venv/bin/python bench/cuda_kernels.py record --measurements OUT/cuda_measurements.json \
#       --search OUT/gpu_search.json --steps OUT/gpu_search_step.json [--ddp OUT/gpu_ddp.json]
# Each part has its own time limit, so what finished comes back even when a later part fails.
set -u
PACK=${1:-.cuda-pack}
DATA=${2:-.gpu-data/fashion-mnist}
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# every candidate block and the demo winner's CUDA bundle, run by the native runner
timeout 100 python3 bench/cuda_device_run.py "$PACK" "$OUT/cuda_measurements.json" --span-s 2
# a weight step of each space's supernet, fp32 and bfloat16
timeout 160 python3 bench/gpu_search_step.py --out "$OUT/gpu_search_step.json"
# the demo's search and training by the product's loops, fp32 and bfloat16, and a repeat for determinism
timeout 210 python3 bench/gpu_search.py "$PACK" --data "$DATA" --out "$OUT/gpu_search.json"
# several processes on the GPUs present (one per GPU, NCCL) against one process computing the same shards: as many
# GPUs as PyTorch sees, at most the largest count that divides the search's batch of 64
GPUS=$(python3 -c 'import torch; n = torch.cuda.device_count()
print(max(d for d in range(1, n + 1) if 64 % d == 0) if n else 0)')
if [ "$GPUS" -ge 2 ]; then
  timeout 110 python3 -m torch.distributed.run --nproc-per-node "$GPUS" bench/gpu_search.py "$PACK" --data "$DATA" \
    --ddp --out "$OUT/gpu_ddp.json"
else
  echo "$GPUS GPU: DDP across GPUs needs two or more (NCCL takes one GPU per process)" | tee "$OUT/gpu_ddp.skipped"
fi
echo "gpu_session done"
