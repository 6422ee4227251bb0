#!/usr/bin/env bash
# First call on the lent H200 (run from the repository root by the device tool; $OUT comes back).
# Carries .gpu-carry/base (pydantic wheels) and the first vLLM bundle chunk (.gpu-carry/chunk).
#  1. PyTorch wiring checks on the GPU (the fields a CPU cannot show)
#  2. studies/h200-lifecycle.yaml with no runner named: subprocess workers by default, one worker
#     for the batch sweep, GPU hygiene (residual memory, bounded settle) from real NVML
#  3. studies/quickstart.yaml (bf16) while another process holds 3 GiB of the GPU: warn, then fail
set -uo pipefail
cat .gpu-carry/chunk/part* > /tmp/bundle.tar   # vLLM bundle, chunk 1 of 7 (later calls append)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-base .gpu-carry/base/*.whl
export PYTHONPATH=/tmp/site-base:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
nvidia-smi --query-gpu=name,driver_version,power.draw,temperature.gpu,memory.used --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

echo "== 1. PyTorch wiring checks on the GPU"
LLEM_WIRING_REPORT=$OUT/wiring-pytorch-gpu.json timeout 180 python3 -m pytest -p llem_bench.plugin benchmarks/pytorch \
  -k wiring -q -rA -p no:cacheprovider 2>&1 | tail -60

echo "== 2. lifecycle study: default runner, one worker per load group, hygiene"
timeout 260 python3 -m pytest -p llem_bench.plugin benchmarks/pytorch/test_pytorch_energy.py --study studies/h200-lifecycle.yaml \
  --llem-out /tmp/reports --llem-run-id h200-lifecycle --llem-settle-s 30 -q -p no:cacheprovider 2>&1 | tail -15

echo "== 3. residual GPU memory held by another process"
python3 -c "import torch, time; x = torch.empty(3 << 30, dtype=torch.uint8, device='cuda'); open('/tmp/held', 'w').write('3 GiB'); time.sleep(600)" &
holder=$!
for _ in $(seq 120); do [[ -f /tmp/held ]] && break; sleep 0.5; done
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
for mode in warn fail; do
  timeout 60 python3 -m pytest -p llem_bench.plugin benchmarks/pytorch/test_pytorch_energy.py --study studies/quickstart.yaml -k bf16 \
    --llem-out /tmp/reports --llem-run-id residual-$mode --llem-residual $mode -q -p no:cacheprovider 2>&1 | tail -8
done
kill $holder
tar -C /tmp/reports -czf $OUT/runs.tgz .
ls -la $OUT
