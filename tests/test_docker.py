"""Docker runner pre-flight with the real docker CLI (this machine has the CLI, no engine)."""

import os
import shutil
import subprocess
import sys

import pytest

from llem_bench.config import ConfigError
from llem_bench.isolation.docker import cuda_mismatch, docker_command, has_nvidia_runtime, preflight
from llem_bench.isolation.runner import parse_runner

from test_plugin import BENCH, STUDY


def engine_answers() -> bool:
    return shutil.which("docker") is not None and \
        subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(shutil.which("docker") is None or engine_answers(),
                    reason="needs the docker CLI without a running engine (as on the CI machine)")
def test_unreachable_engine_is_reported_with_the_fix():
    with pytest.raises(ConfigError) as info:
        preflight("vllm/vllm-openai:v0.26.0", need_gpus=True)
    message = str(info.value)
    assert "Docker engine is unreachable" in message and "systemctl start docker" in message


def test_missing_cli_is_a_usage_error_before_anything_runs(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=STUDY)
    # the same PATH minus every folder that has a docker
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(d, "docker")))
    env = dict(os.environ, PATH=path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--study", "study.yaml",
                           "--llem-runner", "docker:some/image:1"], cwd=pytester.path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "the docker CLI is not on PATH" in proc.stderr


def test_docker_output_parsing():
    assert has_nvidia_runtime('{"io.containerd.runc.v2":{},"nvidia":{"path":"nvidia-container-runtime"}}')
    assert not has_nvidia_runtime('{"runc":{"path":"runc"}}')
    err = ("docker: Error response from daemon: failed to create task: nvidia-container-cli: requirement "
           "error: unsatisfied condition: cuda>=12.8, please update your driver to a newer version")
    assert "cuda>=12.8" in cuda_mismatch(err)
    assert cuda_mismatch("no such image") is None


def test_runner_parsing_and_the_container_command(tmp_path):
    spec = parse_runner("docker:vllm/vllm-openai:v0.26.0", "runners.vllm")
    assert (spec.kind, spec.image) == ("docker", "vllm/vllm-openai:v0.26.0")
    with pytest.raises(ConfigError, match="'docker:' needs an image"):
        parse_runner("docker:", "runners.vllm")
    cmd = docker_command(spec.image, tmp_path, tmp_path, tmp_path / "ts", "llem-x", "8g", ipc_host=False)
    assert cmd[:3] == ["docker", "run", "--rm"] and "--gpus" in cmd and "--shm-size" in cmd
    assert cmd[cmd.index("--shm-size") + 1] == "8g" and cmd[-3:-2] == ["llem_bench.isolation.worker"]
    assert "--ipc=host" in docker_command(spec.image, tmp_path, tmp_path, tmp_path, "n", "8g", ipc_host=True)
