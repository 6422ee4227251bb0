"""Scale-out with real processes: pytest-xdist workers (CPU here: --llem-gpus-per-worker is noted and
not pinned), load groups kept on one worker, a crashing worker, and shards at collection."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from test_plugin import BENCH, STUDY

TWO_GROUPS = STUDY.replace("study: plug", "study: groups").replace("dtype: float32\n", "") + \
    "  dtype: [float32, bfloat16]\n"

CRASHING_BENCH = textwrap.dedent("""
    import os
    import pytest
    from llem_bench.testing import assert_sound

    pytestmark = pytest.mark.llem_backend("pytorch")

    def test_pytorch(llem_experiment, llem_run):
        if llem_experiment.config.pytorch.batch_size == 2 and llem_experiment.config.dtype == "float32":
            os._exit(3)  # the worker process dies mid-experiment
        assert_sound(llem_run(llem_experiment))
""")


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=TWO_GROUPS)
    return pytester


def experiments_of(run):
    return sorted((e["test_id"], e["status"]) for e in json.loads((run / "study.json").read_text())["experiments"])


def test_two_xdist_workers_give_the_same_results_as_one_process_on_the_quickstart(quickstart_run, tmp_path):
    _, plain = quickstart_run
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/pytorch/test_pytorch_energy.py", "--study", "studies/quickstart.yaml",
         "-n", "2", "--llem-gpus-per-worker", "1", "--llem-out", str(tmp_path), "--llem-run-id", "xd", "-q",
         "-p", "no:cacheprovider", "--llem-allow-invalid"],  # 2 workers on 2 cores: the plumbing is under test
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "llem-bench: --dist loadgroup" in proc.stdout
    assert "--llem-gpus-per-worker 1 ignored" in proc.stdout  # a CPU host: noted, not pinned
    run = tmp_path / "quickstart" / "xd"
    assert experiments_of(run) == experiments_of(plain) and len(experiments_of(run)) == 4
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    by_dtype: dict = {}
    for r in results:
        placement = r["environment"]["placement"]
        assert placement["workers"] == 2 and placement["pinned"] is False and placement["worker"] in ("gw0", "gw1")
        by_dtype.setdefault(r["config"]["dtype"], []).append((r["started_at"], placement["worker"],
                                                              r["timings"]["model_reused"]))
    for runs in by_dtype.values():  # a load group stays on one worker, which loads the model once
        runs.sort()
        assert len({worker for _, worker, _ in runs}) == 1 and [reused for *_, reused in runs] == [False, True]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["xdist"]["dist"] == "loadgroup" and manifest["state"] == "complete"


def test_gpus_per_worker_without_xdist_is_a_usage_error(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-gpus-per-worker", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-gpus-per-worker 1 pins each pytest-xdist worker*add -n N*"])


def test_dist_each_is_refused(project):
    result = project.runpytest_subprocess("--study", "study.yaml", "-n", "2", "--dist", "each")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dist each would run every experiment on every worker*"])


def test_a_crashing_worker_fails_only_its_experiment(project):
    project.makepyfile(test_bench=CRASHING_BENCH)
    # --llem-allow-invalid: two workers share 2 cores, so short CPU windows may vary past the "invalid" line
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "r", "-n", "2",
                                          "--llem-allow-invalid")
    result.assert_outcomes(passed=3, failed=1)
    run = project.path / "out" / "groups" / "r"
    manifest = json.loads((run / "manifest.json").read_text())
    states = {k: e["state"] for k, e in manifest["experiments"].items()}
    [crashed] = [k for k, s in states.items() if s == "failed"]
    assert "fp32-batch_size_2" in crashed and sorted(states.values()) == ["done", "done", "done", "failed"]
    assert "crashed" in manifest["experiments"][crashed]["reason"]
    assert len(list((run / "results").glob("*.json"))) == 3 and (run / "report.md").is_file()


def test_shards_split_by_load_group_and_only_shard_1_runs_other_tests(project):
    project.makepyfile(test_other="def test_not_an_experiment():\n    pass\n")
    seen = []
    for shard in ("1/2", "2/2"):
        result = project.runpytest_subprocess("--study", "study.yaml", "--llem-shard", shard, "--collect-only", "-q")
        ids = [line for line in result.outlines if "::" in line]
        seen.append(ids)
        experiments = [i for i in ids if "test_pytorch[" in i]
        assert len(experiments) == 2 and len({"fp32" in i for i in experiments}) == 1  # one dtype = one load group
        assert any("test_not_an_experiment" in i for i in ids) == (shard == "1/2")
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 5
    too_many = project.runpytest_subprocess("--study", "study.yaml", "--llem-shard", "1/3")
    assert too_many.ret == pytest.ExitCode.USAGE_ERROR
    too_many.stderr.fnmatch_lines(["*the study has 2 load group(s)*at most 2 shard(s)*"])
