#!/usr/bin/env bash
# One call on a lent H200 (run from the repository root by the device tool; $OUT comes back). Carries
# .gpu-carry/base (pydantic wheels) and .gpu-carry/commit, as reports/reference/h200-lifecycle/gpu-pytorch.sh.
# Scale-out check (issue 14): the same study plainly, then as one pinned xdist worker
# (-n 1 --llem-gpus-per-worker 1); the gate then compares the two runs (expected: no significant change).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-base .gpu-carry/base/*.whl
export PYTHONPATH=/tmp/site-base:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
nvidia-smi --query-gpu=name,uuid,driver_version,power.draw --format=csv
args=(-p llem_bench.plugin benchmarks/pytorch/test_pytorch_energy.py --study studies/h200-scaleout.yaml
      --llem-out /tmp/reports --llem-settle-s 20 -q -p no:cacheprovider)
echo "== plain"
timeout 230 python3 -m pytest "${args[@]}" --llem-run-id plain 2>&1 | tail -8
echo "== one pinned xdist worker"
timeout 230 python3 -m pytest "${args[@]}" --llem-run-id xdist1 -n 1 --llem-gpus-per-worker 1 2>&1 | tail -8
echo "== refused before anything loads: 2 workers x 1 GPU on a 1-GPU machine; 2 workers sharing the GPU"
timeout 60 python3 -m pytest "${args[@]}" -n 2 --llem-gpus-per-worker 1 2>&1 | tail -2
timeout 60 python3 -m pytest "${args[@]}" -n 2 2>&1 | tail -2
echo "== gate: xdist1 against plain"
python3 -m llem_bench.cli compare /tmp/reports/h200-scaleout/plain /tmp/reports/h200-scaleout/xdist1 | head -40
python3 -c "import json; r = [json.load(open(p)) for p in __import__('glob').glob('/tmp/reports/h200-scaleout/xdist1/results/*.json')]; print([x['environment'].get('placement') for x in r])"
tar -C /tmp/reports -czf $OUT/runs.tgz .
