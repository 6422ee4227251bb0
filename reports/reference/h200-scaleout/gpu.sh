#!/usr/bin/env bash
# One call on a lent H200 (run from the repository root by the device tool; $OUT comes back).
# Scale-out check (issue 14): the same study plainly, then as one pinned xdist worker
# (-n 1 --llem-gpus-per-worker 1); the gate then compares the two runs (expected: no significant change).
# Uses the pydantic of the vLLM bundle when an earlier call of this machine installed it in /tmp/site,
# else the wheels carried in .gpu-carry/base.
set -uo pipefail
if [[ ! -d /tmp/site/pydantic ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-carry/base/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
nvidia-smi --query-gpu=name,uuid,driver_version,power.draw --format=csv
args=(-p llem_bench.plugin benchmarks/pytorch/test_pytorch_energy.py --study studies/h200-scaleout.yaml
      --llem-out /tmp/reports --llem-settle-s 5 -q -p no:cacheprovider)
for run in plain xdist1; do
  extra=(); [[ $run == xdist* ]] && extra=(-n 1 --llem-gpus-per-worker 1)
  echo "== $run ${extra[*]}"
  start=$(date +%s)
  timeout 150 python3 -m pytest "${args[@]}" --llem-run-id $run "${extra[@]}" > /tmp/$run.log 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s"; tail -4 /tmp/$run.log
  cp /tmp/$run.log /tmp/reports/h200-scaleout/$run/pytest.log 2>/dev/null
done
echo "== refused before anything loads: 2 workers x 1 GPU on a 1-GPU machine; 2 workers sharing the GPU"
timeout 60 python3 -m pytest "${args[@]}" -n 2 --llem-gpus-per-worker 1 2>&1 | tail -2
timeout 60 python3 -m pytest "${args[@]}" -n 2 2>&1 | tail -2
echo "== gate: xdist1 against plain"
python3 -m llem_bench.cli compare /tmp/reports/h200-scaleout/plain /tmp/reports/h200-scaleout/xdist1 | head -30
python3 -c "import json, glob; print([json.load(open(p))['environment'].get('placement') for p in glob.glob('/tmp/reports/h200-scaleout/xdist1/results/*.json')][:1])"
bash reports/reference/gpu-pack.sh /tmp/reports/h200-scaleout h200-scaleout > /dev/null
ls -la $OUT
