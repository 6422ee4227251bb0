"""pytorch.tp_plan under torchrun, for real on this CPU: two gloo ranks shard synthetic:tiny, rank 0
measures and writes the result, rank 1 joins every pass. Plus the launch's refusals, which come
before any model loads."""

import json
import os
import textwrap
from pathlib import Path

import pytest

from llem_bench.config.errors import ConfigError
from llem_bench.config.study import parse_study
from llem_bench.isolation.runner import RunnerSpec
from llem_bench.isolation.torchrun import check_launches, command, environment, world_size
from llem_bench.scaleout.gpus import NodeGpus, check_experiments_fit, gpus_needed
from test_plugin import ALLOW_INVALID_INI, BENCH

TP_STUDY = textwrap.dedent("""
    study: tp
    model: synthetic:tiny
    dtype: float32
    workload: {num_prompts: 4, max_input_tokens: 16, output_tokens: 6}
    measurement: {cycles: 2, warmup: {max_runs: 1}, min_window_s: 0}
    backends:
      pytorch: {tp_plan: auto, tp_size: 2, batch_size: 2}
""")

NO_GPU = NodeGpus([], [], "NVML", "NVML sees no GPU")
TWO_GPUS = NodeGpus(["0", "1"], ["GPU-a", "GPU-b"], "CUDA_VISIBLE_DEVICES")


def config_of(**pytorch):
    raw = {"study": "t", "model": "synthetic:tiny", "backend": "pytorch", "backends": {"pytorch": pytorch}}
    return parse_study(raw)[1][0]


@pytest.mark.slow
def test_a_tp_plan_study_runs_two_torchrun_ranks_that_generate_the_same_tokens(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=TP_STUDY)
    pytester.makeini(ALLOW_INVALID_INI)  # sub-second CPU windows: the launch is under test, not the spread
    outcome = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "tp")
    outcome.assert_outcomes(passed=1)
    run = pytester.path / "out" / "tp" / "tp"
    [path] = (run / "results").glob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["token_check"]["ok"] is True
    tp = result["effective"]["tensor_parallel"]
    assert tp["world_size"] == 2 and tp["rank"] == 0 and tp["launcher"] == "torchrun"
    assert tp["process_group_backend"] == "gloo" and tp["device"] == "cpu"
    # every measured, warmup, prefill and streaming pass ran on both ranks with identical tokens
    prefill_passes = 1  # the prefill window at min_window_s 0
    passes = (result["warmup"]["runs"] + sum(c["passes"] for c in result["cycles"]) + prefill_passes
              + result["latency"]["passes"])
    assert tp["passes_checked"] == passes
    rank0, rank1 = tp["ranks"]
    assert rank0["output_tokens"] == rank1["output_tokens"] > 0
    assert sum(c["output_tokens"] for c in result["cycles"]) == 2 * 4 * 6  # 2 cycles x 4 prompts x 6 tokens
    # rank 0 holds a shard, not the model: the sharded weights are split over the two ranks
    assert result["effective"]["parameters"] / 2 <= tp["local_parameters"] < result["effective"]["parameters"]
    assert "each of the 2 ranks" in result["peak_memory_method"]
    log = next((run / "logs").glob("*.log")).read_text()
    assert "torch.distributed.run --standalone --nproc-per-node=2" in log
    assert f"rank 1 ran {passes} passes with rank 0" in log
    manifest = json.loads((run / "manifest.json").read_text())
    assert [e["runner"] for e in manifest["experiments"].values()] == ["inprocess via torchrun"]


@pytest.mark.slow
def test_a_tp_launch_that_times_out_leaves_no_rank_running(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=TP_STUDY.replace("cycles: 2", "cycles: 50").replace("min_window_s: 0",
                                                                                          "min_window_s: 5"))
    outcome = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--llem-run-id", "to",
                                            "--llem-timeout", "12")
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines(["*timed out after 12 s; torchrun and its ranks stopped*"])
    request_dir = str(pytester.path / "out" / "tp" / "to" / "worker-io")
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and request_dir in _cmdline(pid)]
    assert left == [], f"processes of the launch still running: {left}"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_tp_plan_without_tp_size_on_cpu_is_refused_before_any_model_loads(pytester):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=TP_STUDY.replace(", tp_size: 2", ""))
    outcome = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*pytorch.tp_size: tp_plan on CPU ranks*set tp_size to the number of CPU "
                                  "processes, e.g. tp_size: 2*"])
    assert not (pytester.path / "out").exists() or not list((pytester.path / "out").rglob("*.log"))


def test_the_launch_size_comes_from_tp_size_or_the_worker_gpu_set():
    assert world_size(config_of(tp_plan="auto", tp_size=2).config, NO_GPU) == 2
    assert world_size(config_of(tp_plan="auto", device="cpu", tp_size=3).config, TWO_GPUS) == 3  # CPU ranks
    assert world_size(config_of(tp_plan="auto").config, TWO_GPUS) == 2  # the whole set
    with pytest.raises(ConfigError, match=r"shards over 2 or more GPUs, but the worker's GPU set has 1"):
        world_size(config_of(tp_plan="auto").config, NodeGpus(["0"], ["GPU-a"], "NVML"))
    with pytest.raises(ConfigError, match=r"pytorch.tp_size is 4 but the worker's GPU set has 2 \(0, 1, from "
                                          r"CUDA_VISIBLE_DEVICES\); lower tp_size or .*--llem-gpus-per-worker 4"):
        world_size(config_of(tp_plan="auto", tp_size=4).config, TWO_GPUS)
    with pytest.raises(ConfigError, match="pytorch.device: cuda with tp_plan, but no GPU is visible"):
        world_size(config_of(tp_plan="auto", device="cuda", tp_size=2).config, NO_GPU)


def test_gpu_tp_experiments_are_fitted_to_the_worker_like_vllm_tensor_parallel():
    assert gpus_needed(config_of(tp_plan="auto", tp_size=4).config) == 4
    assert gpus_needed(config_of(tp_plan="auto", device="cpu", tp_size=4).config) is None  # CPU ranks
    assert gpus_needed(config_of(tp_plan="auto").config) is None  # takes the worker's set
    with pytest.raises(ValueError, match=r"needs 4 GPUs \(pytorch.tp_size\) but a worker has 2; use "
                                         "--llem-gpus-per-worker 4"):
        check_experiments_fit([config_of(tp_plan="auto", tp_size=4)], 2)


def test_the_docker_runner_is_refused_for_tp_plan():
    with pytest.raises(ConfigError, match="the docker: runner does not launch it yet"):
        check_launches([config_of(tp_plan="auto", tp_size=2)], {"pytorch": RunnerSpec("docker", image="x")}, NO_GPU)
    check_launches([config_of(tp_plan="auto", tp_size=2)], {"pytorch": RunnerSpec("subprocess", "python")}, NO_GPU)


def test_cpu_ranks_see_no_gpu_and_share_the_cores():
    env = environment({"CUDA_VISIBLE_DEVICES": "0,1"}, cpu=True, ranks=2)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
    assert environment({"CUDA_VISIBLE_DEVICES": "0,1"}, cpu=False, ranks=2) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert command("py", 2, Path("r.json"), Path("o.json"))[:6] == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=0"]
