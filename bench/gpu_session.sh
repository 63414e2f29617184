#!/usr/bin/env bash
# Everything issue 14 asks of a lent GPU, in one run of a few minutes (the `device` tool: one short lease).
#
# Here first (this machine has TVM's compiler; the GPU machine gets only what it needs to run):
#   .venv/bin/python bench/cuda_kernels.py pack --out .cuda-pack --network runs/demo/train/network.pt
# Then on the GPU machine, carrying .cuda-pack:
#   bash bench/gpu_session.sh .cuda-pack        (writes into $OUT)
# Back here:
#   .venv/bin/python bench/cuda_kernels.py record --measurements OUT/cuda_measurements.json --gpu <name>
# and add OUT/gpu_search_step.json's figures to bench/results/distributed.* (steps_per_s on the GPU).
set -u
PACK=${1:-.cuda-pack}
OUT=${OUT:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# every candidate block and the demo winner's CUDA bundle, run by the native runner
python3 bench/cuda_device_run.py "$PACK" "$OUT/cuda_measurements.json" --span-s 2
# a search step on the GPU, where this machine's Python has torch with CUDA
if python3 -c 'import torch, numpy; assert torch.cuda.is_available()' 2>/dev/null; then
  PYTHONPATH=. python3 bench/gpu_search_step.py --out "$OUT/gpu_search_step.json"
else
  echo "no torch with CUDA here: search-step timing skipped" | tee "$OUT/gpu_search_step.skipped"
fi
