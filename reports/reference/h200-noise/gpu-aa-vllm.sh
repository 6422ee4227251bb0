#!/usr/bin/env bash
# On the H200, in one call (one machine), after an earlier call of this warm machine installed the
# vLLM bundle in /tmp/site: studies/h200-vllm-aa.yaml twice back to back (runs aa1, aa2), then the
# gate on them. Both run folders come back through $OUT (reports/reference/gpu-pack.sh).
#   bash reports/reference/h200-noise/gpu-aa-vllm.sh
set -uo pipefail
[[ -d /tmp/site/vllm ]] || { echo "vLLM bundle not installed on this machine"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
t0=$(date +%s)
for run in aa1 aa2; do
  left=$(( 545 - ($(date +%s) - t0) ))
  timeout $left python3 -m pytest -p llem_bench.plugin benchmarks/vllm/test_vllm_energy.py --study studies/h200-vllm-aa.yaml \
    --llem-out /tmp/reports --llem-run-id $run --llem-settle-s 0 -q -p no:cacheprovider > /tmp/$run.log 2>&1
  echo "== $run: pytest exit $? after $(( $(date +%s) - t0 )) s"; tail -3 /tmp/$run.log
  cp /tmp/$run.log /tmp/reports/h200-vllm-aa/$run/pytest.log 2>/dev/null
done
python3 -m llem_bench.cli compare /tmp/reports/h200-vllm-aa/aa1 /tmp/reports/h200-vllm-aa/aa2 \
  --gate output_tokens_per_s:-5% --gate energy_per_output_token_j:5% 2>&1 | head -40
bash reports/reference/gpu-pack.sh /tmp/reports/h200-vllm-aa h200-vllm-aa > /dev/null
ls -la $OUT
