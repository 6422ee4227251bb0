#!/usr/bin/env bash
# Here, before a GPU session: lay the vLLM bundle's chunks out so the device calls can go back to back
# (the lent machine is released 30 s after a call, and its /tmp, the half-uploaded bundle, with it).
#   bash reports/reference/gpu-prepare.sh
# then, one call each, with no pause between them:
#   carry [".gpu-carry/c0"]:  : > /tmp/bundle.tar; cat .gpu-carry/c0/part* >> /tmp/bundle.tar
#   carry [".gpu-carry/cK"]:  cat .gpu-carry/cK/part* >> /tmp/bundle.tar                    (K = 1 .. last)
#   carry [".gpu-carry/chunk", ".gpu-carry/bundle.sha256", ".gpu-carry/commit"]:
#     bash reports/reference/h200-serving/gpu-serving.sh STUDY     (or gpu-install-vllm.sh && another script)
# The bundle is cut again into chunks that fit beside the tracked tree in the 64 MiB a call takes (the tree
# grows with committed runs: 13 MiB at the end of 2026-12 left no room for the bundle's own 52 MiB chunks).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -e .gpu-bundle/chunks/part00 ]] || { echo "no .gpu-bundle/chunks: build or copy the bundle first (../shared/gpu/README.md)" >&2; exit 1; }
tree_kib=$(git ls-files -z | du -ck --files0-from=- | tail -1 | cut -f1)
chunk_kib=$(( 64 * 1024 - tree_kib - 2048 ))  # 2 MiB spare for untracked files that travel too
(( chunk_kib > 8192 )) || { echo "the tracked tree (${tree_kib} KiB) leaves no room for a bundle chunk" >&2; exit 1; }
rm -rf .gpu-carry/c[0-9]* .gpu-carry/chunk .gpu-carry/split
mkdir -p .gpu-carry/chunk .gpu-carry/split
cat .gpu-bundle/chunks/part* | split -d -a 2 -b ${chunk_kib}K - .gpu-carry/split/part
chunks=(.gpu-carry/split/part*)
last=$(( ${#chunks[@]} - 1 ))
for k in $(seq 0 $(( last - 1 ))); do mkdir -p .gpu-carry/c$k && mv "${chunks[$k]}" .gpu-carry/c$k/; done
mv "${chunks[$last]}" .gpu-carry/chunk/
rmdir .gpu-carry/split
git rev-parse HEAD > .gpu-carry/commit
[[ -s .gpu-carry/bundle.sha256 ]] || { echo "missing .gpu-carry/bundle.sha256 (the bundle's checksum)" >&2; exit 1; }
echo "ready: ${#chunks[@]} chunks of $(( chunk_kib / 1024 )) MiB (c0..c$(( last - 1 )) and chunk/), commit $(cat .gpu-carry/commit | cut -c1-7)"
