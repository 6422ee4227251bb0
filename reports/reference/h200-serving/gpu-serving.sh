#!/usr/bin/env bash
# On the H200 (device tool), from the repository root: install the vLLM 0.26.0 bundle if this call
# carries its last chunk (reports/reference/gpu-install-vllm.sh), then run each serving study named,
# one pytest session each, within one 10-minute call. Server mode starts
# `python3 -m vllm.entrypoints.openai.api_server` from the worker, which inherits PYTHONPATH=/tmp/site.
#   bash reports/reference/h200-serving/gpu-serving.sh h200-serving-sweep
#   bash reports/reference/h200-serving/gpu-serving.sh h200-serving-consistency
# Run again on the same warm machine, it resumes a study cut by the call's time limit (--llem-resume in
# /tmp/reports/STUDY/STUDY), so a long study spans back-to-back calls.
# LLEM_CALL_S (default 560): seconds from the script's start by which pytest must end. Keep >= 40 s of the
# call's 600 for what follows (the engine's teardown on SIGTERM, packing into $OUT): with 575, session 8's
# call ran past 600 s after packing and returned nothing (the warm machine kept the run; the next call resumed).
set -uo pipefail
t0=$(date +%s)
[[ -d /tmp/site/vllm ]] || bash reports/reference/gpu-install-vllm.sh || exit 1
echo "bundle ready after $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/site:$PWD LLEM_CACHE_DIR=/tmp/llem-cache PYTHONUNBUFFERED=1
export LLEM_GIT_COMMIT=$(cat .gpu-carry/commit 2>/dev/null || echo unknown) LLEM_GIT_DIRTY=0
nvidia-smi --query-gpu=name,uuid,driver_version,power.draw,power.limit --format=csv
for study in "$@"; do
  left=$(( ${LLEM_CALL_S:-560} - ($(date +%s) - t0) ))
  start=$(date +%s)
  run=/tmp/reports/$study/$study log=pytest.log where=(--llem-out /tmp/reports --llem-run-id $study)
  if [[ -d $run/results ]]; then log=pytest-resume.log where=(--llem-resume $run); fi
  timeout -k 15 $left python3 -m pytest -p llem_bench.plugin benchmarks/vllm/test_vllm_energy.py --study studies/$study.yaml \
    "${where[@]}" -p no:cacheprovider > /tmp/$study.log 2>&1
  echo "== $study: pytest exit $? after $(( $(date +%s) - start )) s (${where[0]})"
  grep -E "PASSED|FAILED|ERROR|passed|failed|loaded in|window" /tmp/$study.log | tail -30
  cp /tmp/$study.log $run/$log 2>/dev/null
  bash reports/reference/gpu-pack.sh /tmp/reports/$study/$study $study > /dev/null
done
pgrep -af vllm.entrypoints.openai.api_server && echo "a vLLM server outlived the studies" >&2
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
ls -la $OUT
