#!/usr/bin/env bash
# Pack a run folder into $OUT as NAME.tar.xz, split into 15 MiB parts where larger: the device tool
# returns at most 8 files of 16 MiB each. Rejoin here with `cat NAME.tar.xz.part* | tar -xJ`.
#   bash reports/reference/gpu-pack.sh /tmp/reports/STUDY NAME
set -uo pipefail
dir=${1:?folder}; name=${2:?name}
XZ_OPT="-6 -T0" tar -C "$(dirname "$dir")" -cJf /tmp/$name.tar.xz "$(basename "$dir")" || exit 1
split -b 15M -d /tmp/$name.tar.xz "$OUT/$name.tar.xz.part"
ls -la "$OUT"
