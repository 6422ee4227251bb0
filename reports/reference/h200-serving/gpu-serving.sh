#!/usr/bin/env bash
# NOT RUN YET. On the H200, after the calls that appended bundle chunks 1-6 to /tmp/bundle.tar (see
# reports/reference/h200-lifecycle/README.md): install vLLM 0.26.0 (last chunk), then the three serving
# studies. Server mode starts `python3 -m vllm.entrypoints.openai.api_server` from the worker, which
# inherits PYTHONPATH=/tmp/site. One 10-minute call may not hold all three: pass the study as $1.
set -uo pipefail
[[ -d /tmp/site/vllm ]] || bash reports/reference/gpu-install-vllm.sh || exit 1
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit 2>/dev/null || echo unknown) LLEM_GIT_DIRTY=0
for study in ${1:-h200-serving-rate h200-serving-concurrency h200-serving-consistency}; do
  timeout 560 python3 -m pytest -p llem_bench.plugin benchmarks/vllm/test_vllm_energy.py --study studies/$study.yaml \
    --llem-out /tmp/reports --llem-run-id $study -q -p no:cacheprovider 2>&1 | tail -15
done
pgrep -af vllm.entrypoints.openai.api_server && echo "a vLLM server outlived the studies" >&2
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
tar -C /tmp/reports -czf $OUT/serving-runs.tgz .
