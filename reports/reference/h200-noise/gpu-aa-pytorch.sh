#!/usr/bin/env bash
# On the H200, in one call (one machine): PyTorch A/A at batch 8 and 64 (studies/h200-noise.yaml, two
# runs of identical code back to back), then the gate on them. Needs pydantic: the vLLM bundle an earlier
# call of this warm machine installed in /tmp/site, or its four pydantic wheels carried in .gpu-carry/base.
#   bash reports/reference/h200-noise/gpu-aa-pytorch.sh
set -uo pipefail
here=reports/reference/h200-noise
export PYTHONPATH=/tmp/site:$PWD
for run in pytorch-a1-b8-64 pytorch-a2-b8-64; do
  LLEM_GPU_TIMEOUT=270 bash $here/gpu-run.sh $run benchmarks/pytorch/test_pytorch_energy.py \
    -k "batch_size_8 or batch_size_64"
done
python3 -m llem_bench.cli compare /tmp/reports/h200-noise/pytorch-a1-b8-64 /tmp/reports/h200-noise/pytorch-a2-b8-64 \
  --gate output_tokens_per_s:-5% --gate energy_per_output_token_j:5% 2>&1 | head -30
