#!/usr/bin/env bash
# CI step: the docker: runner against a real Docker engine. Called by .ci/run after the in-process
# quickstart (whose results it compares with). Starts dockerd when no engine answers (installing
# Debian's docker.io if it is missing), builds a local image from .venv (no registry is reachable),
# runs the CPU quickstart through --llem-runner docker:<image>, checks that it gives the same
# experiments and result shape as in-process, runs the Ctrl-C and timeout tests against the real
# engine, checks nothing is left running, and stops the dockerd it started.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=llem-ci-python
LOG=${TMPDIR:-/tmp}/llem-ci-dockerd.log
started_pid=""

run_pytest() {  # pytest exit 5 (nothing collected) is a failure
  local rc=0
  "$@" || rc=$?
  if [[ $rc -eq 5 ]]; then echo "CI: pytest collected no tests: $*" >&2; exit 1; fi
  if [[ $rc -ne 0 ]]; then exit "$rc"; fi
}

stop_dockerd() {
  if [[ -n $started_pid ]]; then
    kill "$started_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$started_pid" 2>/dev/null || break; sleep 0.5; done
    echo "CI: dockerd stopped"
  fi
}
trap stop_dockerd EXIT

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    echo "CI: installing docker.io (Debian) for dockerd"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null || {
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
  fi
  dockerd >"$LOG" 2>&1 &
  started_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "CI: dockerd did not come up; its log:" >&2; tail -20 "$LOG" >&2; exit 1; }
fi
echo "CI: Docker engine $(docker info --format '{{.ServerVersion}}') (storage driver $(docker info --format '{{.Driver}}'))"

t0=$SECONDS
.ci/docker-image.sh "$IMAGE" .venv
echo "CI: image $IMAGE built in $((SECONDS - t0)) s"

t0=$SECONDS
rm -rf .ci-reports-docker
run_pytest .venv/bin/python -m pytest benchmarks/pytorch/test_pytorch_energy.py --study studies/quickstart.yaml \
  --llem-runner "docker:$IMAGE" --llem-out "$PWD/.ci-reports-docker" -q -p no:cacheprovider
echo "CI: quickstart through docker:$IMAGE in $((SECONDS - t0)) s"
.venv/bin/python - .ci-reports/quickstart .ci-reports-docker/quickstart <<'EOF'
"""Same experiments, all ok, same result shape (the keys at every level) as the in-process run."""
import glob, json, sys

def results(root):
    [run] = sorted(glob.glob(f"{root}/*/results"))[-1:]
    return {json.load(open(p))["test_id"]: json.load(open(p)) for p in glob.glob(f"{run}/*.json")}

def shape(value, path=""):
    if isinstance(value, dict):
        return {f"{path}.{k}" for k in value} | {p for k, v in value.items() for p in shape(v, f"{path}.{k}")}
    return set()

inproc, docker = results(sys.argv[1]), results(sys.argv[2])
assert inproc.keys() == docker.keys() and len(docker) == 4, (sorted(inproc), sorted(docker))
for test_id, result in docker.items():
    assert result["status"] == "ok" and result["token_check"]["ok"], (test_id, result.get("error"))
    # the environment and timings describe where it ran (a container) and may differ in detail
    differ = {p for p in shape(result) ^ shape(inproc[test_id])
              if not p.startswith((".environment.", ".timings."))}
    assert not differ, (test_id, sorted(differ))
print(f"CI: docker results match the in-process shape for {len(docker)} experiments")
EOF

LLEM_DOCKER_IMAGE=$IMAGE LLEM_DOCKER_REQUIRED=1 run_pytest .venv/bin/python -m pytest tests/test_docker_engine.py -q \
  -p no:cacheprovider
left=$(docker ps -q)
[[ -z $left ]] || { echo "CI: containers left running: $left" >&2; exit 1; }
echo "CI: no container left running"
