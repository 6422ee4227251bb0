#!/usr/bin/env bash
# On the H200, after six calls that appended bundle chunks 1-6 to /tmp/bundle.tar: installs vLLM 0.26.0
# (last chunk) and runs studies/h200-vllm-lifecycle.yaml with no runner named: subprocess workers, one
# per vLLM load group.
set -uo pipefail
[[ -d /tmp/site/vllm ]] || bash reports/reference/gpu-install-vllm.sh || exit 1
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
timeout 500 python3 -m pytest -p llem_bench.plugin benchmarks/vllm/test_vllm_energy.py --study studies/h200-vllm-lifecycle.yaml \
  --llem-out /tmp/reports --llem-run-id h200-vllm-lifecycle --llem-settle-s 30 -q -p no:cacheprovider 2>&1 | tail -15
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
tar -C /tmp/reports -czf $OUT/vllm-runs.tgz .
