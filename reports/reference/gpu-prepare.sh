#!/usr/bin/env bash
# Here, before a GPU session: lay the vLLM bundle's chunks out so the device calls can go back to back
# (the lent machine is released 30 s after a call, and its /tmp, the half-uploaded bundle, with it).
#   bash reports/reference/gpu-prepare.sh
# then, one call each, with no pause between them:
#   carry [".gpu-carry/c0"]:  : > /tmp/bundle.tar; cat .gpu-carry/c0/part* >> /tmp/bundle.tar
#   carry [".gpu-carry/cK"]:  cat .gpu-carry/cK/part* >> /tmp/bundle.tar                    (K = 1 .. 5)
#   carry [".gpu-carry/chunk", ".gpu-carry/bundle.sha256", ".gpu-carry/commit"]:
#     bash reports/reference/h200-serving/gpu-serving.sh STUDY     (or gpu-install-vllm.sh && another script)
# Each carried folder holds one 52 MiB chunk: with the tracked tree it stays under the 64 MiB a call takes.
set -euo pipefail
cd "$(dirname "$0")/../.."
chunks=(.gpu-bundle/chunks/part*)
[[ -e ${chunks[0]} ]] || { echo "no .gpu-bundle/chunks: build or copy the bundle first (../shared/gpu/README.md)" >&2; exit 1; }
last=$(( ${#chunks[@]} - 1 ))
rm -rf .gpu-carry/c[0-9]* .gpu-carry/chunk
mkdir -p .gpu-carry/chunk
for k in $(seq 0 $(( last - 1 ))); do mkdir -p .gpu-carry/c$k && cp "${chunks[$k]}" .gpu-carry/c$k/; done
cp "${chunks[$last]}" .gpu-carry/chunk/
git rev-parse HEAD > .gpu-carry/commit
[[ -s .gpu-carry/bundle.sha256 ]] || { echo "missing .gpu-carry/bundle.sha256 (the bundle's checksum)" >&2; exit 1; }
echo "ready: ${#chunks[@]} chunks (c0..c$(( last - 1 )) and chunk/), commit $(cat .gpu-carry/commit | cut -c1-7)"
