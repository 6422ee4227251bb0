"""Study lifecycle with real processes: manifest, Ctrl-C, resume, a truncated result, workers that
keep their model, and GPU hygiene (its NVML logic on a fake GPU, its no-NVML path for real)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llem_bench.hygiene import Hygiene, IdleReference, ResidualMemoryError, residual_memory, settle

from test_plugin import ALLOW_INVALID_INI, BENCH, STUDY

LONG = "  - {pytorch: {batch_size: 4}, measurement: {min_window_s: 600}}\n"  # runs ten minutes unless stopped


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makeini(ALLOW_INVALID_INI)
    pytester.makefile(".yaml", study=STUDY)
    return pytester


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def states(run):
    return manifest(run)["experiments"] if (run / "manifest.json").is_file() else {}


def wait_for(predicate, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)  # polling the file system, bounded by the deadline
    return False


def sigint_default() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler:
    # the session under test must see a Ctrl-C however this test run was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_pytest(project, *args):
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                            cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_default)


def worker_pids(marker: str) -> list[int]:
    """llem workers started from the pytester folder `marker` (their working directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if "llem_bench.isolation.worker" in cmdline and marker in cwd:
                pids.append(int(entry))
    return pids


def test_manifest_records_every_experiment(project):
    project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r").assert_outcomes(passed=2)
    m = manifest(project.path / "out" / "plug" / "r")
    assert m["state"] == "complete" and m["finished_at"] and m["study"] == "plug" and m["run_id"] == "r"
    assert [e["state"] for e in m["experiments"].values()] == ["done", "done"]
    for test_id, entry in m["experiments"].items():
        assert entry["result"] == f"results/{test_id}.json" and entry["runner"] == "inprocess"
        assert entry["started_at"] <= entry["finished_at"] and entry["duration_s"] > 0
        # no GPU here: both checks say why they did nothing (and the settle wait did not wait)
        for check in ("residual_memory", "settle"):
            assert entry["hygiene"][check]["outcome"].startswith("skipped: NVML unavailable ("), entry["hygiene"]
    result = json.loads((project.path / "out" / "plug" / "r" / entry["result"]).read_text())
    assert result["timings"]["hygiene"] == entry["hygiene"]


def test_under_xdist_the_controller_keeps_the_manifest_from_the_reports(project):
    project.makefile(".yaml", mixed=STUDY.replace("study: plug", "study: mixed") +
                     "experiments:\n  - {pytorch: {batch_size: 1, device: cuda}}\n")
    result = project.runpytest_subprocess("--study", "mixed.yaml", "--llem-out", "out", "--llem-run-id", "r", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    m = manifest(project.path / "out" / "mixed" / "r")
    assert m["state"] == "complete"
    entries = m["experiments"].values()
    assert sorted(e["state"] for e in entries) == ["done", "done", "failed"]
    [failed] = [e for e in entries if e["state"] == "failed"]
    assert "no CUDA GPU" in failed["reason"] and failed["result"].startswith("results/")
    # what the workers knew (runner, hygiene) reached the controller with the test reports
    assert all(e["runner"] == "inprocess" and "outcome" in e["hygiene"]["settle"] for e in entries)


@pytest.mark.parametrize("runner, stop", [("inprocess", signal.SIGINT), ("subprocess", signal.SIGINT),
                                          ("subprocess", signal.SIGTERM)])
def test_ctrl_c_or_sigterm_keeps_finished_results_marks_the_run_interrupted_and_exits_128_plus_signal(
        project, runner, stop):
    project.makefile(".yaml", long=STUDY.replace("study: plug", "study: long") + "experiments:\n" + LONG)
    run = project.path / "out" / "long" / "r"
    proc = start_pytest(project, "--study", "long.yaml", "--llem-out", "out", "--llem-run-id", "r", "--llem-runner", runner)
    try:
        # the two short experiments finish; the third runs for ten minutes unless stopped
        assert wait_for(lambda: any("batch_size_4" in k and e["state"] == "running" for k, e in states(run).items())
                        and len(list((run / "results").glob("*.json"))) == 2, 240)
        if runner == "subprocess":
            assert wait_for(lambda: worker_pids(str(project.path)), 60)
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + stop, out[-2000:]  # 130 for Ctrl-C, 143 for SIGTERM
    m = manifest(run)
    assert m["state"] == "interrupted"
    assert sorted(e["state"] for e in m["experiments"].values()) == ["done", "done", "interrupted"]
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    assert (run / "report.md").is_file() and len(json.loads((run / "study.json").read_text())["experiments"]) == 2
    assert worker_pids(str(project.path)) == []  # the worker's process group went down with the session


def test_a_worker_does_not_outlive_a_controller_killed_with_sigkill(project):
    """SIGKILL cannot be caught: the worker itself notices its controller is gone and ends its group."""
    project.makefile(".yaml", orphan=STUDY.replace("study: plug", "study: orphan") + "experiments:\n" + LONG)
    run = project.path / "out" / "orphan" / "r"
    proc = start_pytest(project, "--study", "orphan.yaml", "--llem-out", "out", "--llem-run-id", "r",
                        "--llem-runner", "subprocess", "-k", "batch_size_4")
    try:
        assert wait_for(lambda: any(e["state"] == "running" for e in states(run).values())
                        and worker_pids(str(project.path)), 240)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_for(lambda: worker_pids(str(project.path)) == [], 30), worker_pids(str(project.path))
    assert manifest(run)["state"] == "running"  # the record says that session never finished


def test_resume_runs_only_what_is_missing_and_reruns_a_truncated_result(project):
    first = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r",
                                         "-k", "batch_size_1")
    first.assert_outcomes(passed=1)
    run = project.path / "out" / "plug" / "r"
    [done] = (run / "results").glob("*.json")
    resumed = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", str(run), "-rs")
    resumed.assert_outcomes(passed=1, skipped=1)
    resumed.stdout.fnmatch_lines([f"*already done in {run}*"])
    assert len(list((run / "results").glob("*.json"))) == 2
    m = manifest(run)
    assert m["state"] == "complete" and m["run_id"] == "r" and len(m["previous_sessions"]) == 1
    assert sorted(e["state"] for e in m["experiments"].values()) == ["done", "skipped"]
    assert "already done in" in m["experiments"][done.stem]["reason"]
    # a crash left half a file: resume says so and measures that experiment again
    done.write_text(done.read_text()[:100])
    again = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", str(run))
    again.assert_outcomes(passed=1, skipped=1)
    again.stdout.fnmatch_lines([f"*{done.name}: unreadable result*rerun that experiment*"])
    assert json.loads(done.read_text())["status"] == "ok"
    assert manifest(run)["experiments"][done.stem]["state"] == "done"


def test_resume_mistakes_are_usage_errors(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-resume: nowhere is not a run folder*"])
    other = project.path / "other"
    (other / "results").mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({"study": "something-else", "experiments": {}}))
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-resume", str(other))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is a run of study 'something-else', not 'plug'*"])


def test_a_worker_killed_with_sigkill_fails_only_its_experiment(project):
    project.makefile(".yaml", kill=STUDY.replace("study: plug", "study: kill") + "experiments:\n" + LONG +
                     "  - {pytorch: {batch_size: 3}}\n")
    run = project.path / "out" / "kill" / "r"
    proc = start_pytest(project, "--study", "kill.yaml", "--llem-out", "out", "--llem-run-id", "r",
                        "--llem-runner", "subprocess")
    try:
        def long_one_running():
            return any("batch_size_4" in k and v["state"] == "running" for k, v in states(run).items()) \
                and worker_pids(str(project.path))
        assert wait_for(long_one_running, 240)
        [pid] = worker_pids(str(project.path))  # one worker serves the whole load group
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
    entries = manifest(run)["experiments"]
    assert sorted(e["state"] for e in entries.values()) == ["done", "done", "done", "failed"]
    assert "signal SIGKILL" in entries[failed["test_id"]]["reason"]


def test_subprocess_workers_keep_the_model_within_a_load_group(project):
    project.makefile(".yaml", groups=STUDY.replace("study: plug", "study: groups") +
                     "experiments:\n  - {dtype: bfloat16, pytorch: {batch_size: 1}}\n")
    result = project.runpytest_subprocess("--study", "groups.yaml", "--llem-out", "out", "--llem-run-id", "r",
                                          "--llem-runner", "subprocess")
    result.assert_outcomes(passed=3)
    run = project.path / "out" / "groups" / "r"
    results = sorted((json.loads(p.read_text()) for p in (run / "results").glob("*.json")), key=lambda r: r["started_at"])
    reuse = {(r["config"]["dtype"], r["timings"]["model_reused"]) for r in results}
    # float32 batch 1 and 2 share one worker and its model; bfloat16 gets a worker of its own
    assert reuse == {("float32", False), ("float32", True), ("bfloat16", False)}
    assert all((run / "logs" / f"{r['test_id']}.log").read_text() for r in results)  # a log per experiment
    assert not (run / "worker-io").exists()


# --- GPU hygiene: the NVML logic on a fake GPU ---------------------------------------------------

class FakeGpus:
    """Power and temperature readings that fall as a GPU cools down; processes as NVML lists them."""

    def __init__(self, power, temps, processes=()):
        self.power, self.temps, self.procs = list(power), list(temps), list(processes)

    def power_w(self):
        return self.power.pop(0) if len(self.power) > 1 else self.power[0]

    def temperatures_c(self):
        return self.temps.pop(0) if len(self.temps) > 1 else self.temps[0]

    def processes(self):
        return self.procs


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_settle_waits_until_power_and_temperature_are_back_near_idle():
    reference = IdleReference(power_w=60.0, temperatures_c=[35])  # targets: 79 W, 40 degC
    gpus = FakeGpus(power=[250, 150, 78, 75], temps=[[60], [50], [45], [39]])
    clock = FakeClock()
    record = settle(gpus, None, reference, max_wait_s=60, poll_s=0.5, clock=clock, sleep=clock.sleep)
    assert record["reached"] and record["waited_s"] == 1.5 and record["temperatures_c"] == [39]
    assert record["outcome"].startswith("settled after 1.5 s")


def test_settle_gives_up_at_its_bound_and_says_what_was_still_high():
    # still cooling (2 W every reading) when the bound is reached
    gpus = FakeGpus(power=[300 - 2 * i for i in range(121)], temps=[[70]])
    clock = FakeClock()
    record = settle(gpus, None, IdleReference(60.0, [35]), max_wait_s=60, poll_s=0.5, clock=clock, sleep=clock.sleep)
    assert not record["reached"] and not record["plateaued"] and record["waited_s"] == 60
    assert "not settled after 60 s (--llem-settle-s 60)" in record["outcome"]
    assert "60 W > 79 W" not in record["outcome"] and "GPU 0 at 70 degC > 40 degC" in record["outcome"]
    assert settle(gpus, None, IdleReference(60.0, [35]), max_wait_s=0)["outcome"] == \
        "skipped: disabled (--llem-settle-s 0)"


def test_settle_stops_early_when_power_plateaus_above_idle():
    # as seen on the H200: ~125 W held for minutes after heavy work, against a 90 W idle start
    gpus = FakeGpus(power=[160, 140, 130] + [125, 124, 125, 126] * 40, temps=[[45], [44]] + [[43]] * 200)
    clock = FakeClock()
    record = settle(gpus, None, IdleReference(90.0, [42]), max_wait_s=60, poll_s=0.5, clock=clock, sleep=clock.sleep)
    assert record["plateaued"] and not record["reached"] and 10 <= record["waited_s"] < 12
    assert record["outcome"].startswith("plateaued above idle after 12 s") and "(idle 90 W)" in record["outcome"]


def test_residual_memory_names_other_processes_but_not_our_own_children():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        gpus = FakeGpus([50], [[30]], processes=[(os.getpid(), 4000), (child.pid, 9000), (1, 2000)])
        record = residual_memory(gpus, None, max_mb=1024)
        assert residual_memory(gpus, None, max_mb=4096)["ok"] is True
    finally:
        child.communicate()
    assert record["ok"] is False and record["other_used_mb"] == 2000
    assert [p["pid"] for p in record["other_processes"]] == [1]
    assert "over limit: 2000 MiB held by other processes (limit 1024 MiB, --llem-max-residual-mb)" in record["outcome"]
    assert "(pid 1, 2000 MiB)" in record["outcome"]


def test_hygiene_fail_mode_stops_the_experiment_and_warn_mode_records_it():
    def opener():
        return FakeGpus([50], [[30]], processes=[(1, 3000)]), None

    with pytest.raises(ResidualMemoryError, match="--llem-residual warn"):
        Hygiene(1024, "fail", 0, gpus_opener=opener).before("exp")
    record = Hygiene(1024, "warn", 0, gpus_opener=opener).before("exp")
    assert record["residual_memory"]["ok"] is False and record["settle"]["outcome"].startswith("skipped: disabled")


def test_without_nvml_hygiene_says_so_and_does_not_wait():
    pytest.importorskip("pynvml")
    from llem_bench.hygiene import open_gpus

    if open_gpus()[0] is not None:
        pytest.skip("this machine has NVML and a GPU")
    start = time.monotonic()
    record = Hygiene(1024, "fail", 60).before("exp")
    assert time.monotonic() - start < 5
    assert record["settle"]["outcome"].startswith("skipped: NVML unavailable (")
    assert record["residual_memory"]["outcome"].startswith("skipped: NVML unavailable (")
