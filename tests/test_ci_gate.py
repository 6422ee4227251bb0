"""The release gate as CI runs it: the workflow passes actionlint (with shellcheck on its run steps),
and its own shell steps (.github/scripts/llem-gate.sh) run here on the CPU: a baseline run, a
candidate run gated against it, comparison.md in the run folder and in the job summary."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".github" / "scripts" / "llem-gate.sh"
WORKFLOW = REPO / ".github" / "workflows" / "llem-gate.yml"

# One experiment, short windows: the plumbing is under test here, not the statistics. The wide
# thresholds keep a busy shared CPU from turning an A/A comparison into a verdict.
CPU_STUDY = textwrap.dedent("""
    study: ci-gate-cpu
    model: synthetic:tiny
    backend: pytorch
    dtype: float32
    workload: {num_prompts: 2, max_input_tokens: 16, output_tokens: 4}
    measurement: {cycles: 3, warmup: {min_runs: 1, max_runs: 1}, min_window_s: 0.3, latency: false, phases: false,
                  repeats: 2}
    backends:
      pytorch: {batch_size: 2, device: cpu}
    gates:
      on_inconclusive: warn   # 2 repeats of a noisy shared CPU may not decide 60%; the plumbing is under test
      output_tokens_per_s: {max_decrease: 60%}
      requests_per_s: {max_decrease: 60%}
""")


def tool(name: str) -> str:
    """A linter installed by the `test` extra (next to this interpreter, or on PATH)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def test_the_workflow_passes_actionlint_with_shellcheck_on_its_run_steps():
    proc = subprocess.run([tool("actionlint"), "-shellcheck", tool("shellcheck"), "-no-color", str(WORKFLOW)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"actionlint findings:\n{proc.stdout}{proc.stderr}"


def test_the_gate_script_passes_shellcheck():
    proc = subprocess.run([tool("shellcheck"), str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_shell_step_of_the_workflow_is_the_script():
    """The test below runs the script; a step with its own inline logic would go untested."""
    import yaml

    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["gate"]["steps"]
    runs = [step["run"].strip() for step in steps if "run" in step]
    assert runs and all(run.startswith(".github/scripts/llem-gate.sh ") and "\n" not in run for run in runs), runs


def gate(tmp_path: Path, run_id: str, baseline: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """One `llem-gate.sh run` step as Actions runs it: its env, a step summary and an output file."""
    summary, output = tmp_path / f"summary-{run_id}.md", tmp_path / f"output-{run_id}.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLEM_PYTHON": sys.executable, "LLEM_STUDY": str(tmp_path / "study.yaml"),
           "LLEM_OUT": str(tmp_path / "reports"), "LLEM_RUN_ID": run_id, "LLEM_BASELINE": str(baseline or ""),
           "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output), "GITHUB_ACTIONS": "true",
           # sub-second CPU windows on a shared runner can vary past the 25% "invalid" line: plumbing under test
           "LLEM_PYTEST_ARGS": "--llem-allow-invalid"}
    proc = subprocess.run([str(SCRIPT), "run"], env=env, capture_output=True, text=True, timeout=600)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines()) if output.exists() else {}
    outputs["summary"] = summary.read_text() if summary.exists() else ""
    return proc, outputs


def fetch_from_gitlab_api(tmp_path: Path, reports: Path) -> Path:
    """`llem-gate.sh fetch-baseline` as a GitLab merge-request job runs it, against a local HTTP server
    that answers GitLab's jobs/artifacts endpoint with a zip of `reports` (as the baseline job keeps it;
    GitLab itself cannot run here). Returns the folder it fetched."""
    import http.server
    import threading
    import zipfile

    archive = tmp_path / "artifacts.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in reports.rglob("*"):
            zf.write(path, Path("llem-reports") / path.relative_to(reports))
    requests = []

    class Artifacts(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append((self.path, self.headers.get("JOB-TOKEN")))
            body = archive.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Artifacts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "GITLAB_CI": "true", "CI_API_V4_URL": f"http://127.0.0.1:{server.server_port}/api/v4",
           "CI_PROJECT_ID": "7", "CI_JOB_TOKEN": "job-token", "LLEM_OUT": "llem-reports",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary-fetch.md")}
    try:
        proc = subprocess.run([str(SCRIPT), "fetch-baseline", str(tmp_path / "llem-baseline")], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert requests == [("/api/v4/projects/7/jobs/artifacts/main/download?job=llem-baseline", "job-token")]
    assert "llem-baseline in main's latest successful pipeline" in proc.stderr
    return tmp_path / "llem-baseline"


@pytest.mark.slow
def test_the_script_runs_a_baseline_then_gates_a_candidate_against_it(tmp_path, tiny_checkpoint):
    (tmp_path / "study.yaml").write_text(CPU_STUDY)
    base, base_out = gate(tmp_path, "push-main")  # main's run: measured, not gated, becomes the artifact
    log = base.stdout[-3000:] + base.stderr[-3000:]
    assert base.returncode == 0, log
    baseline = Path(base_out["run_dir"])
    assert baseline == tmp_path / "reports" / "ci-gate-cpu" / "push-main" and (baseline / "results").is_dir()
    assert "not gated" in base_out["summary"] and "| experiment" in base_out["summary"]  # report.md
    assert not (baseline / "comparison.md").exists()

    fetched = fetch_from_gitlab_api(tmp_path, tmp_path / "reports")  # the MR job's view of main's artifacts
    assert sorted(p.name for p in (fetched / "results").iterdir()) == sorted(p.name for p in (baseline / "results").iterdir())

    cand, cand_out = gate(tmp_path, "pull_request-1", fetched)
    log = cand.stdout[-3000:] + cand.stderr[-3000:]
    assert cand.returncode == 0, log
    run = Path(cand_out["run_dir"])
    comparison = (run / "comparison.md").read_text()
    assert "Welch over per-repeat means (2 vs 2 repeats)" in comparison, comparison
    assert comparison.rstrip().splitlines()[-1].startswith("GATE: PASS"), log
    assert cand_out["summary"].startswith("## llem-bench gate: PASS")
    assert comparison.strip() in cand_out["summary"]
    assert "::error" not in cand.stdout


def test_a_baseline_that_is_not_a_run_folder_stops_before_measuring(tmp_path):
    (tmp_path / "study.yaml").write_text(CPU_STUDY)
    proc, outputs = gate(tmp_path, "pr", baseline=tmp_path / "missing-artifact")
    assert proc.returncode == 2
    assert "is not a run folder (no results/ inside)" in proc.stderr
    assert not (tmp_path / "reports").exists() and "run_dir" not in outputs


def test_an_invalid_study_fails_in_seconds_with_the_fix_in_the_summary(tmp_path):
    (tmp_path / "study.yaml").write_text(CPU_STUDY.replace("output_tokens: 4}", "output_tokens: 5000}"))
    proc, outputs = gate(tmp_path, "pr")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert outputs["summary"].startswith("## llem-bench: invalid study")
    assert "beyond the model's context (4096" in outputs["summary"]
    assert "::error title=llem-bench: invalid study::" in proc.stdout
    assert not (tmp_path / "reports").exists()
