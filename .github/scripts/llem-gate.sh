#!/usr/bin/env bash
# The shell steps of the llem-bench release gate (.github/workflows/llem-gate.yml, and the GitLab CI
# recipe in docs/ci.md), kept in one script so they run, and are tested, outside CI too.
#
#   llem-gate.sh install              the README's install steps, into .venv (and .venv-vllm when asked)
#   llem-gate.sh fetch-baseline DIR   the baseline run from main's last successful run into DIR (GitHub:
#                                     gh CLI, artifact of a push run; GitLab: the job artifacts API)
#   llem-gate.sh run                  run the study; with LLEM_BASELINE, gate against it
#
# It runs from the repository root (it cds there): relative paths below are relative to it.
# Environment (all optional):
#   LLEM_STUDY        study file (default studies/ci-gate.yaml)
#   LLEM_OUT          output root (default llem-reports); the run lands in LLEM_OUT/<study>/<run id>
#   LLEM_RUN_ID       run folder name (default ci-<commit>)
#   LLEM_BASELINE     baseline run folder; empty: measure only (main's run that becomes the baseline)
#   LLEM_REQUIRE_BASELINE=1  fetch-baseline fails when there is none (default: a loud warning, not gated)
#   LLEM_PYTHON       interpreter with llem-bench installed (default .venv/bin/python)
#   LLEM_PYTEST_ARGS  extra pytest arguments, e.g. "--llem-settle-s 120"
#   LLEM_TORCH        pip spec of torch for `install` (default: torch, PyPI's CUDA build on Linux)
#   LLEM_VLLM         pip spec of vLLM for `install` (e.g. vllm==0.26.0); empty: no vLLM venv
#   LLEM_BASELINE_BRANCH  the branch whose last successful run is the baseline (default main)
#   LLEM_WORKFLOW, LLEM_BASELINE_ARTIFACT  GitHub: workflow file and artifact (llem-gate.yml, llem-baseline-main)
#   LLEM_BASELINE_JOB     GitLab: the job on main whose artifacts are the baseline (llem-baseline)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT   appended to when set (GitHub sets them; elsewhere point them
#                     at files)
# Exit status of `run`: 0 gate passed (or nothing to gate), 1 a regression or a failed experiment,
# 2 bad input (an invalid study: nothing is loaded; a baseline that is not a run folder), 130/143 interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "llem-gate: $*" >&2; }
die() { say "error: $*"; exit 2; }
# A GitHub annotation when running in Actions, a plain line elsewhere.
annotate() {  # level title message
  if [[ "${GITHUB_ACTIONS:-}" == "true" ]]; then echo "::$1 title=$2::$3"; else say "$1: $2: $3"; fi
}
output() { if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "$1=$2" >> "$GITHUB_OUTPUT"; fi; }
summary() { if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then cat >> "$GITHUB_STEP_SUMMARY"; else cat > /dev/null; fi; }

cmd_install() {
  local torch vllm
  read -ra torch <<< "${LLEM_TORCH:-torch}"
  python3 -m venv .venv
  .venv/bin/pip install --disable-pip-version-check "${torch[@]}" -e .
  if [[ -n "${LLEM_VLLM:-}" ]]; then  # README, "vLLM": its own venv, named by the study's runners:
    read -ra vllm <<< "$LLEM_VLLM"
    python3 -m venv .venv-vllm
    .venv-vllm/bin/pip install --disable-pip-version-check "${vllm[@]}"
  fi
  .venv/bin/llem-bench doctor
}

cmd_fetch_baseline() {
  local dir="${1:?usage: llem-gate.sh fetch-baseline DIR}" found
  rm -rf "$dir"
  if [[ "${GITLAB_CI:-}" == "true" ]]; then found=$(fetch_gitlab "$dir"); else found=$(fetch_github "$dir"); fi
  if [[ -d "$dir/results" ]]; then
    say "baseline: $found"
    output found true
    output baseline "$dir"
    printf '%s\n' "Baseline: $found." "" | summary
    return 0
  fi
  output found false
  annotate warning "llem-bench: NOT GATED" "no baseline: $found"
  printf '%s\n' "## llem-bench: NOT GATED" "" "No baseline: $found. This run is measured, not compared." "" | summary
  if [[ "${LLEM_REQUIRE_BASELINE:-0}" == "1" ]]; then say "LLEM_REQUIRE_BASELINE=1: failing"; exit 1; fi
}

# GitHub: the artifact of main's last successful push run of this workflow. Prints where it came from
# (or why there is none); DIR holds the run folder when found.
fetch_github() {
  local dir="$1" workflow="${LLEM_WORKFLOW:-llem-gate.yml}" branch="${LLEM_BASELINE_BRANCH:-main}"
  local artifact="${LLEM_BASELINE_ARTIFACT:-llem-baseline-main}" repo="${GITHUB_REPOSITORY:?GITHUB_REPOSITORY is not set}"
  local run url sha
  command -v gh > /dev/null || die "the gh CLI is not installed on this runner (https://cli.github.com); it downloads the baseline artifact"
  # --event push: a pull request from a fork's own 'main' branch must never become the baseline
  run=$(gh run list --repo "$repo" --workflow "$workflow" --branch "$branch" --event push --status success \
        --limit 1 --json databaseId,url,headSha --jq '.[0] | select(.) | "\(.databaseId) \(.url) \(.headSha)"')
  if [[ -z "$run" ]]; then echo "no successful push run of $workflow on $branch yet"; return 0; fi
  read -r run url sha <<< "$run"
  if gh run download "$run" --repo "$repo" --name "$artifact" --dir "$dir" >&2 && [[ -d "$dir/results" ]]; then
    echo "\`$artifact\` of $branch's run $url (commit ${sha:0:12})"
  else
    rm -rf "$dir"
    echo "$branch's run $url has no artifact '$artifact' with results/ (expired after its retention, or its upload failed)"
  fi
}

# GitLab: the artifacts of job LLEM_BASELINE_JOB in main's latest successful pipeline (jobs/artifacts API).
# The job keeps LLEM_OUT as its artifact, so the zip holds LLEM_OUT/<study>/<run id>/.
fetch_gitlab() {
  local dir="$1" job="${LLEM_BASELINE_JOB:-llem-baseline}" branch="${LLEM_BASELINE_BRANCH:-main}" tmp runs
  local url="${CI_API_V4_URL:?}/projects/${CI_PROJECT_ID:?}/jobs/artifacts/$branch/download?job=$job"
  tmp=$(mktemp -d)
  if ! curl --fail --silent --show-error --location --header "JOB-TOKEN: ${CI_JOB_TOKEN:?}" -o "$tmp/a.zip" "$url" >&2; then
    echo "no artifacts of job $job in a successful $branch pipeline ($url)"; rm -rf "$tmp"; return 0
  fi
  python3 -m zipfile -e "$tmp/a.zip" "$tmp/x"
  runs=("$tmp"/x/"${LLEM_OUT:-llem-reports}"/*/*/results)
  if [[ -d "${runs[0]}" ]]; then
    mv "$(dirname "${runs[0]}")" "$dir"
    echo "artifacts of job $job in $branch's latest successful pipeline"
  else
    echo "the artifacts of job $job on $branch hold no ${LLEM_OUT:-llem-reports}/<study>/<run id>/results"
  fi
  rm -rf "$tmp"
}

cmd_run() {
  local python="${LLEM_PYTHON:-.venv/bin/python}" study="${LLEM_STUDY:-studies/ci-gate.yaml}"
  local out="${LLEM_OUT:-llem-reports}" baseline="${LLEM_BASELINE:-}" run_id="${LLEM_RUN_ID:-}"
  local extra rc=0 runs run_dir
  [[ -x "$python" ]] || die "no interpreter at $python: run 'llem-gate.sh install' first or set LLEM_PYTHON"
  [[ -f "$study" ]] || die "study file $study not found (set LLEM_STUDY)"
  # An invalid study fails here, in seconds, with the field and the fix in the job summary.
  local invalid vrc=0
  invalid=$("$python" -m llem_bench.cli validate "$study" 2>&1 > /dev/null) || vrc=$?
  if [[ $vrc -ne 0 ]]; then
    annotate error "llem-bench: invalid study" "${invalid%%$'\n'*}"
    printf '%s\n' "## llem-bench: invalid study" "" '```' "$invalid" '```' "" | summary
    say "$invalid"
    return "$vrc"
  fi
  if [[ -n "$invalid" ]]; then say "$invalid"; fi  # notes: what could not be checked before loading
  if [[ -z "$run_id" ]]; then run_id="ci-$(git rev-parse --short=12 HEAD 2> /dev/null || date -u +%Y%m%dT%H%M%SZ)"; fi
  read -ra extra <<< "${LLEM_PYTEST_ARGS:-}"
  local args=(-m pytest benchmarks --study "$study" --llem-out "$out" --llem-run-id "$run_id" -p no:cacheprovider -rfEs)
  if [[ -n "$baseline" ]]; then
    [[ -d "$baseline/results" ]] || die "LLEM_BASELINE=$baseline is not a run folder (no results/ inside)"
    args+=(--llem-baseline "$baseline")
  fi
  "$python" "${args[@]}" "${extra[@]}" || rc=$?
  if [[ $rc -eq 5 ]]; then say "pytest collected no tests: nothing was measured"; rc=1; fi
  runs=("$out"/*/"$run_id")
  run_dir="${runs[0]}"
  if [[ ! -d "$run_dir" ]]; then
    annotate error "llem-bench" "the study wrote no run folder (pytest exit $rc)"
    printf '%s\n' "## llem-bench: FAILED" "" "The study wrote no run folder (pytest exit $rc); see the job log." | summary
    return $(( rc == 0 ? 1 : rc ))
  fi
  output run_dir "$run_dir"
  say "run folder: $run_dir"
  if [[ -n "$baseline" && -f "$run_dir/comparison.md" ]]; then
    local verdict="PASS"
    if [[ $rc -ne 0 ]]; then verdict="FAIL (exit $rc)"; fi
    { printf '%s\n' "## llem-bench gate: $verdict" "" "Candidate \`$run_dir\` against baseline \`$baseline\`." ""
      cat "$run_dir/comparison.md"; echo; } | summary
  else
    { if [[ -n "$baseline" ]]; then
        printf '%s\n' "## llem-bench: FAILED (exit $rc)" "" "No comparison was written (the run was interrupted or measured nothing)." ""
      else
        printf '%s\n' "## llem-bench run (not gated, exit $rc)" ""
      fi
      if [[ -f "$run_dir/report.md" ]]; then cat "$run_dir/report.md"; fi; echo; } | summary
  fi
  if [[ $rc -ne 0 ]]; then
    annotate error "llem-bench" "exit $rc: a regression or a failed experiment; see $run_dir/comparison.md and report.md"
  fi
  return "$rc"
}

case "${1:-}" in
  install) cmd_install ;;
  fetch-baseline) shift; cmd_fetch_baseline "$@" ;;
  run) cmd_run ;;
  *) echo "usage: $0 install | fetch-baseline DIR | run   (see the comment at the top)" >&2; exit 2 ;;
esac
