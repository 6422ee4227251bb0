#!/usr/bin/env bash
# On the H200, after gpu-run.sh installed the vLLM bundle in this warm machine: the suite against
# the minimal loop, interleaved (tools/vllm_overhead.py), results through $OUT.
#   LLEM_OVERHEAD_STUDY=h200-overhead-graphs LLEM_OVERHEAD_REPEATS=6 bash reports/reference/h200-noise/gpu-overhead.sh
set -uo pipefail
[[ -d /tmp/site/vllm ]] || { echo "vLLM bundle not installed on this machine"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
start=$(date +%s)
timeout ${LLEM_OVERHEAD_TIMEOUT:-540} python3 tools/vllm_overhead.py --study studies/${LLEM_OVERHEAD_STUDY:-h200-overhead}.yaml --repeats ${LLEM_OVERHEAD_REPEATS:-5} --out $OUT/overhead \
  > $OUT/overhead.log 2>&1
echo "exit $? after $(( $(date +%s) - start )) s"
grep -E "^overhead:|^\{|suite_|mean|ci95" $OUT/overhead.log | tail -40
