"""Study lifecycle with real processes: manifest, Ctrl-C, resume, a truncated result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_plugin import BENCH, STUDY


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=STUDY)
    return pytester


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def test_manifest_records_every_experiment(project):
    project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r").assert_outcomes(passed=2)
    m = manifest(project.path / "out" / "plug" / "r")
    assert m["state"] == "complete" and m["finished_at"]
    assert [e["state"] for e in m["experiments"].values()] == ["done", "done"]
    entry = next(iter(m["experiments"].values()))
    assert entry["result"].startswith("results/") and entry["started_at"] and entry["finished_at"]
    assert entry["hygiene"]["residual_memory"]["skipped"].startswith("NVML unavailable")  # no GPU here


def wait_for(predicate, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)  # polling the file system, bounded by the deadline
    return False


def test_ctrl_c_keeps_finished_results_marks_the_run_interrupted_and_exits_130(project):
    project.makefile(".yaml", long=STUDY.replace("study: plug", "study: long") +
                     "experiments:\n  - {pytorch: {batch_size: 4}, measurement: {min_window_s: 600}}\n")
    run = project.path / "out" / "long" / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--study", "long.yaml", "--llem-out", "out",
                             "--llem-run-id", "r", "-p", "no:cacheprovider"],
                            cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the two short experiments finish; the third runs for ten minutes unless stopped
        assert wait_for(lambda: len(list((run / "results").glob("*.json"))) == 2 and
                        "running" in [e["state"] for e in manifest(run)["experiments"].values()], 240)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:]
    m = manifest(run)
    assert m["state"] == "interrupted"
    assert sorted(e["state"] for e in m["experiments"].values()) == ["done", "done", "interrupted"]
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    assert (run / "report.md").is_file()


def test_resume_runs_only_what_is_missing_and_reruns_a_truncated_result(project):
    first = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r",
                                         "-k", "batch_size_1")
    first.assert_outcomes(passed=1)
    run = project.path / "out" / "plug" / "r"
    [done] = (run / "results").glob("*.json")
    resumed = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", str(run), "-rs")
    resumed.assert_outcomes(passed=1, skipped=1)
    resumed.stdout.fnmatch_lines(["*already done in*--llem-resume*"])
    assert len(list((run / "results").glob("*.json"))) == 2
    assert manifest(run)["state"] == "complete"
    # a crash left half a file: resume says so and measures that experiment again
    done.write_text(done.read_text()[:100])
    again = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", str(run))
    again.assert_outcomes(passed=1, skipped=1)
    again.stdout.fnmatch_lines([f"*{done.name}: unreadable result*rerun that experiment*"])
    assert json.loads(done.read_text())["status"] == "ok"


def test_resume_of_a_folder_without_results_is_a_usage_error(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-resume: nowhere is not a run folder*"])


def worker_pids(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "llem_bench.isolation.worker" in cmdline and marker in os.readlink(f"/proc/{entry}/cwd"):
                pids.append(int(entry))
    return pids


def test_a_worker_killed_with_sigkill_fails_only_its_experiment(project):
    project.makefile(".yaml", kill=STUDY.replace("study: plug", "study: kill") +
                     "experiments:\n  - {pytorch: {batch_size: 4}, measurement: {min_window_s: 600}}\n"
                     "  - {pytorch: {batch_size: 3}}\n")
    run = project.path / "out" / "kill" / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--study", "kill.yaml", "--llem-out", "out",
                             "--llem-run-id", "r", "--llem-runner", "subprocess", "-p", "no:cacheprovider"],
                            cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def long_one_running():
            states = manifest(run)["experiments"] if (run / "manifest.json").is_file() else {}
            return any("batch_size_4" in k and v["state"] == "running" for k, v in states.items()) \
                and worker_pids(str(project.path))
        assert wait_for(long_one_running, 240)
        [pid] = worker_pids(str(project.path))
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out[-2000:]
    assert "3 passed" in out and "1 failed" in out
    results = {p.name: json.loads(p.read_text()) for p in (run / "results").glob("*.json")}
    [failed] = [r for r in results.values() if r["status"] == "failed"]
    assert "signal SIGKILL" in failed["error"] and "last" in failed["error"]  # with the worker's log tail
    assert sum(r["status"] == "ok" for r in results.values()) == 3
    states = sorted(e["state"] for e in manifest(run)["experiments"].values())
    assert states == ["done", "done", "done", "failed"]
