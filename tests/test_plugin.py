"""The pytest plugin, driven through pytester in a subprocess (the installed `llem` entry point)."""

import json
import textwrap

import pytest

BENCH = textwrap.dedent("""
    import pytest
    from llem_bench.testing import assert_sound

    pytestmark = pytest.mark.llem_backend("pytorch")

    def test_pytorch(llem_experiment, llem_run):
        assert_sound(llem_run(llem_experiment))
""")

STUDY = textwrap.dedent("""
    study: plug
    model: synthetic:tiny
    dtype: float32
    workload: {num_prompts: 2, max_input_tokens: 16, output_tokens: 4}
    measurement: {cycles: 2, warmup: {max_runs: 1}, min_window_s: 0}
    sweep:
      pytorch.batch_size: [1, 2]
""")


# These tests check the plugin's mechanics with sub-second windows on a shared CPU, where the cycle CV is
# noise and can pass the 25% "invalid" line; the verdict rule itself is tested on its own (below and in
# test_measurement_logic.py), so these runs accept invalid verdicts.
ALLOW_INVALID_INI = "[pytest]\naddopts = --llem-allow-invalid\n"


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=STUDY)
    pytester.makeini(ALLOW_INVALID_INI)
    return pytester


def test_an_invalid_result_fails_its_test_unless_allowed(pytester, tiny_checkpoint):
    # One cycle has no spread: always invalid, whatever the machine's load.
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=STUDY.replace("cycles: 2", "cycles: 1").replace("[1, 2]", "[1]"))
    failed = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*verdict invalid*1 measured cycle*--llem-allow-invalid*"])
    pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out",
                                  "--llem-allow-invalid").assert_outcomes(passed=1)


def test_collection_gives_one_test_per_experiment_with_k_friendly_ids(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--collect-only", "-q")
    ids = [line for line in result.outlines if "test_pytorch[" in line]
    assert len(ids) == 2
    assert any("pytorch-tiny-fp32-batch_size_1-" in i for i in ids)
    selected = project.runpytest_subprocess("--study", "study.yaml", "--collect-only", "-q", "-k", "batch_size_2")
    assert [line for line in selected.outlines if "test_pytorch[" in line] == [i for i in ids if "batch_size_2" in i]
    marked = project.runpytest_subprocess("--study", "study.yaml", "--collect-only", "-q", "-m", "pytorch")
    assert len([line for line in marked.outlines if "test_pytorch[" in line]) == 2


def test_a_run_writes_one_result_per_experiment_a_study_json_and_a_report(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r1")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*llem-bench results*", "*pytorch-tiny-fp32-batch_size_2-*ok*"])
    run = project.path / "out" / "plug" / "r1"
    files = sorted((run / "results").glob("*.json"))
    assert len(files) == 2
    first, second = (json.loads(f.read_text()) for f in sorted(files, key=lambda f: json.loads(f.read_text())["started_at"]))
    assert first["status"] == "ok" and first["backend"] == "pytorch" and first["synthetic"] is True
    assert first["metrics"]["energy_per_output_token_j"] is None
    assert "CPU" in first["unavailable"]["energy_per_output_token_j"]
    assert first["environment"]["git_commit"] is None or len(first["environment"]["git_commit"]) == 40
    assert first["environment"]["packages"]["transformers"]
    assert first["token_check"]["ok"] and first["cycles"][0]["output_tokens"] == 2 * 4
    assert {first["effective"]["batch_size"], second["effective"]["batch_size"]} == {1, 2}
    # the second experiment shares load settings with the first: the model is not loaded again
    assert first["timings"]["model_reused"] is False and second["timings"]["model_reused"] is True
    study = json.loads((run / "study.json").read_text())
    assert [e["status"] for e in study["experiments"]] == ["ok", "ok"]
    report = (run / "report.md").read_text()
    assert "pytorch-tiny-fp32-batch_size_1-" in report and "unavailable" in report


def test_invalid_study_is_a_usage_error_before_anything_loads(project):
    project.makefile(".yaml", bad="study: bad\nmodel: synthetic:tiny\nbackends: {pytorch: {batch_sze: 2}}\n")
    result = project.runpytest_subprocess("--study", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*backends.pytorch.batch_sze: unknown key 'batch_sze'. Did you mean 'batch_size'?*"])
    assert "Traceback" not in result.stderr.str()


def test_missing_prompt_file_fails_at_collection(project):
    project.makefile(".yaml", bad="study: bad\nmodel: synthetic:tiny\nworkload: {prompts: nowhere.jsonl}\n")
    result = project.runpytest_subprocess("--study", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*workload.prompts: 'nowhere.jsonl' is neither*"])


def test_without_a_study_the_benchmark_is_skipped_with_the_reason(project):
    result = project.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no study given: run with --study*"])


def test_a_failing_experiment_fails_alone_and_leaves_a_failed_result(project):
    project.makefile(".yaml", mixed=STUDY.replace("study: plug", "study: mixed") +
                     "experiments:\n  - {pytorch: {batch_size: 1, device: cuda}}\n")
    result = project.runpytest_subprocess("--study", "mixed.yaml", "--llem-out", "out", "--llem-run-id", "r")
    result.assert_outcomes(passed=2, failed=1)
    failed = [json.loads(p.read_text()) for p in (project.path / "out" / "mixed" / "r" / "results").glob("*.json")]
    failed = [r for r in failed if r["status"] == "failed"]
    assert len(failed) == 1 and "no CUDA GPU" in failed[0]["error"]
    assert "FAILED" in (project.path / "out" / "mixed" / "r" / "report.md").read_text()


def test_subprocess_runner_gives_the_same_kind_of_result_and_keeps_a_log(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r",
                                          "--llem-runner", "subprocess", "-k", "batch_size_2", "-q")
    result.assert_outcomes(passed=1)
    # the worker's progress reaches the controller's terminal, also with -q (each line once)
    result.stdout.fnmatch_lines(["llem-bench [[]1/1] pytorch-*batch_size_2*: starting (subprocess)",
                                 "llem-bench [[]1/1] *: loading synthetic:tiny on pytorch", "*: loaded in * s",
                                 "*: warmup 1 (at most 1): pass took * s",
                                 "*: cycle 1/2: measuring a window of >= 0 s", "*: cycle 1/2: * out tok/s, *",
                                 "*: cycle 2/2: * out tok/s, *", "*: streaming passes for latency: 3",
                                 "llem-bench [[]1/1] *: done: *out tok/s"])
    assert result.stdout.str().count("cycle 1/2: measuring") == 1
    run = project.path / "out" / "plug" / "r"
    [path] = (run / "results").glob("*.json")
    data = json.loads(path.read_text())
    assert data["status"] == "ok" and data["token_check"]["ok"] and data["effective"]["batch_size"] == 2
    log = (run / "logs" / f"{data['test_id']}.log").read_text()
    assert "llem-bench: cycle 2/2: measuring a window" in log  # and the log keeps it


def test_missing_venv_interpreter_is_a_usage_error(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-runner", "venv:/nowhere/bin/python")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*interpreter '/nowhere/bin/python' does not exist*"])


def test_overrunning_worker_is_killed_at_its_timeout(project):
    """An experiment whose window would last an hour is stopped at its 15 s limit."""
    project.makefile(".yaml", slow=STUDY.replace("study: plug", "study: slow").replace(
        "min_window_s: 0", "min_window_s: 3600"))
    result = project.runpytest_subprocess("--study", "slow.yaml", "--llem-out", "out", "--llem-run-id", "r",
                                          "--llem-runner", "subprocess", "--llem-timeout", "15",
                                          "-k", "batch_size_1", timeout=300)
    result.assert_outcomes(failed=1)
    [path] = (project.path / "out" / "slow" / "r" / "results").glob("*.json")
    error = json.loads(path.read_text())["error"]
    assert "timed out after 15 s; process group killed" in error and "last" in error  # with the log tail


def _scaled_copy(run, out, factor):
    """A copy of a run whose per-cycle throughput is `factor` times the real one."""
    import shutil

    from llem_bench.stats import summarize
    from llem_bench.results.schema import MetricSummary
    from llem_bench.results.store import RunDir

    shutil.copytree(run, out)
    copy = RunDir(out)
    for r in copy.read_results():
        for name in ("output_tokens_per_s", "requests_per_s", "total_tokens_per_s"):
            r.metrics[name] = MetricSummary(**summarize([v * factor for v in r.metrics[name].values]))
        copy.write_result(r)
    return out


def test_repeats_are_separate_params_selected_together_and_keep_the_test_id(project):
    project.makefile(".yaml", rep=STUDY.replace("study: plug", "study: rep").replace(
        "min_window_s: 0}", "min_window_s: 0, repeats: 3, repeat_seed: 5}"))
    ids = [line for line in project.runpytest_subprocess("--study", "rep.yaml", "--collect-only", "-q").outlines
           if "test_pytorch[" in line]
    plain = [line for line in project.runpytest_subprocess("--study", "study.yaml", "--collect-only", "-q").outlines
             if "test_pytorch[" in line]
    # repeats is run-level: the test ids (and config hashes) are those of the study without it
    assert sorted(ids) == sorted(f"{p[:-1]}-r{k}]" for p in plain for k in (1, 2, 3))
    # repeat by repeat: r1 of every experiment before any r2
    assert [i.rsplit("-r", 1)[1] for i in ids] == ["1]", "1]", "2]", "2]", "3]", "3]"]
    test_id = plain[0].split("[", 1)[1].rstrip("]")
    selected = project.runpytest_subprocess("--study", "rep.yaml", "--collect-only", "-q", "-k", test_id)
    assert len([line for line in selected.outlines if "test_pytorch[" in line]) == 3


def test_repeats_in_a_sweep_are_refused(project):
    project.makefile(".yaml", bad=STUDY.replace("study: plug", "study: bad") + "  measurement.repeats: [1, 2]\n")
    result = project.runpytest_subprocess("--study", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sweep.measurement.repeats: repeats is a run-level setting*"])


def test_regression_gate_with_repeats_fails_a_worse_candidate_and_passes_an_unchanged_one(project, monkeypatch):
    """Three repeats of one experiment; the gate compares per-repeat means (never cycles)."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # spinning OpenMP threads crawl on a shared CPU
    project.makefile(".yaml", gate=STUDY.replace("study: plug", "study: gate").replace(
        "min_window_s: 0}", "min_window_s: 0.3, repeats: 3}"))
    # a busy shared CPU can make a run `invalid` (cycle CV > 25%): this test is about the gate's statistics
    args = ["--study", "gate.yaml", "--llem-out", "out", "-k", "batch_size_2", "--llem-allow-invalid"]
    project.runpytest_subprocess(*args, "--llem-run-id", "base").assert_outcomes(passed=3)
    base = project.path / "out" / "gate" / "base"
    names = sorted(p.name for p in (base / "results").glob("*.json"))
    assert [n.rsplit("-", 1)[1] for n in names] == ["r1.json", "r2.json", "r3.json"]
    results = [json.loads((base / "results" / n).read_text()) for n in names]
    assert [r["repeat"] for r in results] == [1, 2, 3] and {r["repeats"] for r in results} == {3}
    assert len({r["test_id"] for r in results}) == 1
    assert all(r["warmup"]["runs"] >= 1 for r in results)   # every repeat re-warmed, reused model or not
    assert [r["timings"]["model_reused"] for r in sorted(results, key=lambda r: r["started_at"])] == [False, True, True]
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["plan"]["repeats"] == 3 and len(manifest["plan"]["order"]) == 3
    study = json.loads((base / "study.json").read_text())
    floor = study["noise_floor"][results[0]["test_id"]]["metrics"]["output_tokens_per_s"]
    assert floor["n"] == 3 and floor["sd"] > 0 and floor["cycle_cv"] is not None
    assert len(study["repeats"]["loaded"]) == 1
    assert "Run-to-run noise floor" in (base / "report.md").read_text()
    # resume: every repeat already has a result, so nothing runs again
    resumed = project.runpytest_subprocess(*args[:2], "-k", "batch_size_2", "--llem-resume", str(base))
    resumed.assert_outcomes(skipped=3)
    # Against a baseline ten times as fast as this machine really is, the candidate has regressed
    # (a margin wide enough to stay significant on a busy CPU).
    fast = _scaled_copy(base, project.path / "fast-baseline", 10.0)
    worse = project.runpytest_subprocess(*args, "--llem-run-id", "cand", "--llem-baseline", str(fast))
    assert worse.ret == 1
    worse.stdout.fnmatch_lines(["*REGRESSED: pytorch-tiny-fp32-batch_size_2-*: output_tokens_per_s*",
                                "*GATE: FAIL*"])
    worse.stdout.fnmatch_lines(["*output_tokens_per_s*3 vs 3 repeats*detectable change*repeats to detect*"])
    assert "Traceback" not in worse.stdout.str()
    assert "GATE: FAIL" in (project.path / "out" / "gate" / "cand" / "comparison.md").read_text()
    # Against a baseline ten times slower the candidate improved: nothing regressed.
    slow = _scaled_copy(base, project.path / "slow-baseline", 1 / 10)
    better = project.runpytest_subprocess(*args, "--llem-run-id", "better", "--llem-baseline", str(slow))
    assert "REGRESSED" not in better.stdout.str()
    # An unchanged candidate (the same numbers) passes `llem-bench compare` (inconclusive only warns here).
    from llem_bench.cli import main

    same = _scaled_copy(base, project.path / "same", 1.0)
    assert main(["compare", str(base), str(same), "--on-inconclusive", "warn", "--allow-invalid"]) == 0
    assert main(["compare", str(fast), str(base), "--allow-invalid"]) == 1


def test_missing_baseline_is_a_usage_error(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-baseline", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-baseline: nowhere: no such file or folder*"])
