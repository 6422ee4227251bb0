#!/usr/bin/env bash
# CI (issue 14): a real one-node Slurm cluster on this machine (Debian's slurm-wlm and munge, run as
# root, no cgroups: proctrack/linuxproc, task/none), the CPU quickstart submitted as 2 shards with
# `llem-bench submit --slurm --wait` (which merges them), then a check that the merged run holds
# exactly the experiments (ids and statuses) of the unsharded run given as $1. The daemons this
# script starts are stopped on exit, by their pid files.
#   usage: .ci/slurm.sh <unsharded run folder, e.g. .ci-reports/quickstart/<run-id>>
set -euo pipefail
cd "$(dirname "$0")/.."
UNSHARDED="${1:?usage: .ci/slurm.sh <unsharded quickstart run folder>}"
test -s "$UNSHARDED/study.json" || { echo "CI slurm: $UNSHARDED/study.json missing" >&2; exit 1; }
started=$(date +%s)

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

D="$PWD/.ci-slurm"  # everything of this cluster lives here: config, state, logs, pid files
rm -rf "$D" && mkdir -p "$D/state" "$D/spool" "$D/munge"
export SLURM_CONF="$D/slurm.conf"  # sbatch, sinfo and the daemons read this one, not /etc/slurm

stop() {
  for pidfile in "$D/slurmd.pid" "$D/slurmctld.pid" "$D/munge/munged.pid"; do
    [[ -s "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
}
trap stop EXIT

dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$D/munge/munge.key"
mkdir -p /run/munge  # the socket path sbatch and the daemons use by default
munged --force --key-file="$D/munge/munge.key" --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
  --seed-file="$D/munge/munge.seed"

HOST=$(hostname -s)
NODE=$(slurmd -C | head -1)  # "NodeName=<host> CPUs=... RealMemory=...": this machine as slurmd sees it
cat > "$SLURM_CONF" <<EOF
ClusterName=llemci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
$NODE State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for _ in $(seq 60); do
  [[ "$(sinfo -h -o %T 2>/dev/null)" == idle ]] && break
  sleep 1  # the node registers with the controller within seconds
done
sinfo
[[ "$(sinfo -h -o %T)" == idle ]] || { echo "CI slurm: the node did not come up" >&2; tail -20 "$D"/*.log >&2; exit 1; }
echo "CI slurm: cluster up after $(( $(date +%s) - started )) s"

# The experiments only (the wiring checks already ran in the plain quickstart).
rm -rf .ci-slurm-reports
# 2 CPUs per shard: each torch run gets the cores it had unsharded (on a 2-CPU runner the two array
# tasks then run one after the other; sharing 2 cores, their sub-second CPU windows varied by 124%).
.venv/bin/llem-bench submit studies/quickstart.yaml --slurm --shards 2 --wait --time 30:00 --cpus-per-task "$(( $(nproc) < 2 ? $(nproc) : 2 ))" \
  --benchmarks benchmarks/pytorch/test_pytorch_energy.py --out .ci-slurm-reports --run-id ci

.venv/bin/python - "$UNSHARDED" .ci-slurm-reports/quickstart/ci <<'EOF'
import json
import sys

def experiments(run):
    return sorted((e["test_id"], e["status"]) for e in json.load(open(f"{run}/study.json"))["experiments"])

plain, merged = experiments(sys.argv[1]), experiments(sys.argv[2])
manifest = json.load(open(f"{sys.argv[2]}/manifest.json"))
shards = sorted(m["shard"] for m in manifest["merged_from"])
if not plain or merged != plain or shards != ["1/2", "2/2"] or manifest["state"] != "complete":
    sys.exit(f"CI slurm: merged {merged} (shards {shards}, {manifest['state']}) != unsharded {plain}")
print(f"CI slurm: merged run of shards {shards} == unsharded run: {len(merged)} experiments, all statuses equal")
EOF
echo "CI slurm: block took $(( $(date +%s) - started )) s"
