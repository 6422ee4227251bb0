#!/usr/bin/env bash
# On the H200, in one call (one machine): PyTorch A/A (two runs of batch 1, identical code),
# then A/B (batch 1 again with CUDA_LAUNCH_BLOCKING=1: every kernel launch waits for the GPU, a real
# slowdown of the same code). Each run comes back as $OUT/<name>.tgz (gpu-run.sh).
#   bash reports/reference/h200-noise/gpu-pytorch.sh
set -uo pipefail
here=reports/reference/h200-noise
LLEM_GPU_TIMEOUT=150 bash $here/gpu-run.sh pytorch-a1 benchmarks/pytorch/test_pytorch_energy.py -k batch_size_1
LLEM_GPU_TIMEOUT=150 bash $here/gpu-run.sh pytorch-a2 benchmarks/pytorch/test_pytorch_energy.py -k batch_size_1
CUDA_LAUNCH_BLOCKING=1 LLEM_GPU_TIMEOUT=140 bash $here/gpu-run.sh pytorch-b1 benchmarks/pytorch/test_pytorch_energy.py -k batch_size_1
