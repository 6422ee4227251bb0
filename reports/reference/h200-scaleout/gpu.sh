#!/usr/bin/env bash
# One call on a lent H200 (run from the repository root by the device tool; $OUT comes back). Carries
# .gpu-bundle (pydantic: `../shared/gpu/make-bundle.sh base .gpu-bundle`). The scale-out check: the
# same study plainly, then as one pinned xdist worker; then the gate compares the two runs.
set -uo pipefail
tar -C /tmp -xf .gpu-bundle/bundle.tar && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || cat .gpu-commit) LLEM_GIT_DIRTY=0
nvidia-smi --query-gpu=name,uuid,driver_version,power.draw --format=csv
python3 -c "import xdist, torch; print('xdist', xdist.__version__, 'torch', torch.__version__)"
args=(-p llem_bench.plugin benchmarks/pytorch/test_pytorch_energy.py --study studies/h200-scaleout.yaml
      --llem-out /tmp/reports --llem-settle-s 20 -q -p no:cacheprovider)
echo "== plain"
timeout 230 python3 -m pytest "${args[@]}" --llem-run-id plain 2>&1 | tail -8
echo "== one pinned xdist worker"
timeout 230 python3 -m pytest "${args[@]}" --llem-run-id xdist1 -n 1 --llem-gpus-per-worker 1 2>&1 | tail -8
echo "== refused: 2 workers x 1 GPU on a 1-GPU machine; 2 workers without pinning"
timeout 60 python3 -m pytest "${args[@]}" -n 2 --llem-gpus-per-worker 1 2>&1 | tail -2
timeout 60 python3 -m pytest "${args[@]}" -n 2 2>&1 | tail -2
echo "== gate: xdist1 against plain"
python3 -m llem_bench.cli compare /tmp/reports/h200-scaleout/plain /tmp/reports/h200-scaleout/xdist1 | head -40
tar -C /tmp/reports -czf $OUT/runs.tgz .
