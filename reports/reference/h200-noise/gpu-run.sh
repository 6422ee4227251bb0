#!/usr/bin/env bash
# On the H200 (device tool), from the repository root: install the vLLM bundle if this call carries
# its last chunk (reports/reference/gpu-install-vllm.sh), or only pydantic's wheels from .gpu-carry/base
# for PyTorch runs (annotated_types, pydantic, pydantic_core, typing_inspection from the bundle's wheels/), then run studies/h200-noise.yaml once as
# run NAME with the pytest arguments that follow, and return the run folder through $OUT.
#   bash reports/reference/h200-noise/gpu-run.sh vllm-a1 benchmarks/vllm/test_vllm_energy.py
set -uo pipefail
name=${1:?run name}; shift
if [[ -d .gpu-carry/base && ! -d /tmp/site/pydantic ]]; then  # PyTorch only: pydantic without the vLLM bundle
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-carry/base/*.whl || exit 1
elif [[ ! -d /tmp/site/vllm && ! -d .gpu-carry/base ]]; then
  bash reports/reference/gpu-install-vllm.sh || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit) LLEM_GIT_DIRTY=0
start=$(date +%s)
timeout ${LLEM_GPU_TIMEOUT:-560} python3 -m pytest -p llem_bench.plugin --study studies/h200-noise.yaml \
  --llem-out /tmp/reports --llem-run-id "$name" --llem-settle-s 0 -q -p no:cacheprovider "$@" > /tmp/$name.log 2>&1
echo "pytest exit $? after $(( $(date +%s) - start )) s"
tail -25 /tmp/$name.log
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
cp /tmp/$name.log /tmp/reports/h200-noise/$name/pytest.log 2>/dev/null
tar -C /tmp/reports/h200-noise -czf $OUT/$name.tgz "$name"
