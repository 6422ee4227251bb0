"""The generic server mode's process lifecycle, end to end through the pool and the scenario: a
server started on a free port, driven, and stopped with its group; one that dies mid-run fails the
experiment with its log tail and leaves nothing running. The server is tests/servers/
tiny_openai_server.py (no inference); real engines run in the CI serving tier."""

import os
import signal
import sys
from pathlib import Path

import pytest

from llem_bench.config.study import parse_study
from llem_bench.energy.meter import make_energy_meter
from llem_bench.harness.pool import BackendPool
from llem_bench.harness.runner import run_experiment

SERVER = Path(__file__).parent / "servers" / "tiny_openai_server.py"


def experiment(tmp_path, extra: str = "", **serving):
    raw = {"study": "s", "backend": "vllm", "model": "synthetic:tiny", "scenario": "concurrency",
           "workload": {"prompts": "synthetic", "input_tokens": 8, "output_tokens": 6},
           "measurement": {"baseline_idle_s": 0},
           "serving": {"concurrency": 3, "num_requests": 12, "warmup_requests": 1, "scrape_interval_s": 0,
                       "output_tokens": {"dist": "uniform", "min": 3, "max": 9},
                       "server": {"command": f"{{python}} {SERVER} --port {{port}} {extra}"}, **serving}}
    return parse_study(raw)[1][0]


def run(exp, pool, tmp_path):
    backend, reused, load_s = pool.acquire(exp.config)
    return backend, run_experiment(exp, backend, lambda ordinals, sampler=None: make_energy_meter("auto", ordinals, sampler),
                                   run_id="r", started_at="t", model_reused=reused, load_s=load_s,
                                   timeseries_dir=tmp_path / "timeseries")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def test_generic_server_runs_each_request_to_its_planned_length_and_is_stopped(tmp_path):
    pool = BackendPool()
    try:
        backend, result = run(experiment(tmp_path), pool, tmp_path)
        pid = backend.proc.pid
        assert result.status == "ok"
        assert result.token_check["ok"] and result.token_check["requests"] == 12
        assert result.token_check["counted_by"] == {"usage": 12}  # the server's own completion_tokens
        assert result.effective["served_model"] == "tiny" and result.effective["started_here"]
        assert result.metrics["ttft_ms_p50"].mean > 0 and result.metrics["itl_ms_p50"].mean > 0
        assert result.serving["window"]["b"] == 3  # the closed loop's plateau
        assert result.unavailable["energy_per_output_token_j"]  # CPU: null with a reason
        # 12 requests: a p99 from 12 values would be the maximum under another name
        assert result.metrics["ttft_ms_p99"] is None
        assert result.unavailable["ttft_ms_p99"].startswith("needs >= 100 independent samples, have ")
        assert (tmp_path / "timeseries" / f"{result.test_id}.requests.json").is_file()
        assert result.serving["prefix_cache"] == {"reset": False, "reason": "POST /reset_prefix_cache answered HTTP 404"}
        assert any("prefix cache not reset" in w for w in result.warnings)
    finally:
        pool.close()
    assert group_gone(pid)


def test_server_dying_mid_run_fails_with_its_log_tail_and_leaves_nothing(tmp_path):
    pool = BackendPool()
    try:
        backend, _, _ = pool.acquire(experiment(tmp_path, "--die-after 5").config)
        pid = backend.proc.pid
        with pytest.raises(Exception) as info:
            run(experiment(tmp_path, "--die-after 5"), pool, tmp_path)
        assert "dying on purpose" in str(info.value) and "exited with code 3" in str(info.value)
    finally:
        pool.close()
    assert group_gone(pid)


def test_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path):
    exp = experiment(tmp_path)
    exp.config.serving.server.command = f"{sys.executable} -c \"import time; time.sleep(60)\""
    exp.config.serving.server.start_timeout_s = 2
    pool = BackendPool()
    with pytest.raises(TimeoutError, match="not healthy"):
        pool.acquire(exp.config)
    pool.close()


def test_load_generator_spread_over_processes_gets_every_request(tmp_path):
    pool = BackendPool()
    try:
        backend, result = run(experiment(tmp_path, client_processes=2), pool, tmp_path)
        assert result.status == "ok" and result.token_check["ok"] and result.token_check["requests"] == 12
        assert result.token_check["counted_by"] == {"usage": 12}  # records came back from the spawned processes
        assert result.serving["client"]["processes"] == 2 and len(result.serving["client"]["process_cpu_s"]) == 2
    finally:
        pool.close()
