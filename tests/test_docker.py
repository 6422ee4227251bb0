"""docker:<image> runner: pre-flight with the real docker CLI (this machine has the CLI and no
engine), without any docker on PATH, and against a scripted docker CLI for the answers a real
engine gives (no NVIDIA runtime, image not pulled, no GPU in the container, CUDA newer than the
driver); and the container command it builds."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llem_bench.config import ConfigError
from llem_bench.isolation.docker import (cuda_mismatch, docker_command, engine_unreachable_hint, gpu_request,
                                         has_nvidia_runtime, preflight)
from llem_bench.isolation.runner import choose_runner, parse_runner

from test_plugin import ALLOW_INVALID_INI, BENCH, STUDY

IMAGE = "vllm/vllm-openai:v0.26.0"


def engine_answers() -> bool:
    return shutil.which("docker") is not None and \
        subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makeini(ALLOW_INVALID_INI)
    pytester.makefile(".yaml", study=STUDY + f"runners: {{pytorch: 'docker:{IMAGE}'}}\n")
    return pytester


@pytest.mark.skipif(shutil.which("docker") is None or engine_answers(),
                    reason="needs the docker CLI without a running engine (as on the CI machine)")
def test_unreachable_engine_is_a_usage_error_naming_the_fix(project):
    # the study's runners: picks the image for the pytorch backend; nothing may run
    result = project.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*runner docker:vllm/vllm-openai:v0.26.0: the Docker engine is unreachable (*"
                                 "*start it (e.g. 'sudo systemctl start docker'*"])
    assert not (project.path / "out").exists()


def test_missing_cli_is_a_usage_error_before_anything_runs(project):
    # the same PATH minus every folder that has a docker
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(d, "docker")))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--study", "study.yaml",
                           "--llem-out", "out"], cwd=project.path, env=dict(os.environ, PATH=path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "runner docker:vllm/vllm-openai:v0.26.0: the docker CLI is not on PATH; install Docker" in proc.stderr
    assert not (project.path / "out").exists()


FAKE_DOCKER = textwrap.dedent("""\
    #!/bin/sh
    # answers like a docker CLI, as the FAKE_* variables say
    case "$1" in
      info) if [ -n "$FAKE_INFO_ERR" ]; then echo "$FAKE_INFO_ERR" >&2; exit 1; fi
            echo "$FAKE_RUNTIMES" ;;
      image) if [ "$FAKE_IMAGE" != present ]; then echo "Error response from daemon: No such image: $3" >&2; exit 1; fi
             echo "[{}]" ;;
      run) if [ -n "$FAKE_RUN_ERR" ]; then echo "$FAKE_RUN_ERR" >&2; exit 125; fi
           echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)" ;;
    esac
""")

NVIDIA = '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A scripted docker first on PATH, set up as a healthy GPU host; tests break one thing each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"FAKE_INFO_ERR": "", "FAKE_RUNTIMES": NVIDIA, "FAKE_IMAGE": "present", "FAKE_RUN_ERR": ""}.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def preflight_error(need_gpus=True) -> str:
    with pytest.raises(ConfigError) as info:
        preflight(IMAGE, need_gpus)
    return str(info.value)


def test_a_healthy_gpu_host_passes_preflight(fake_docker):
    preflight(IMAGE, need_gpus=True)


def test_permission_denied_on_the_socket_says_how_to_get_access(fake_docker):
    fake_docker.setenv("FAKE_INFO_ERR", "permission denied while trying to connect to the Docker daemon socket at "
                                        "unix:///var/run/docker.sock")
    message = preflight_error()
    assert "the Docker engine is unreachable (permission denied" in message and "'docker' group" in message


def test_no_nvidia_runtime_says_to_install_the_container_toolkit(fake_docker):
    fake_docker.setenv("FAKE_RUNTIMES", '{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}}')
    assert "Docker has no NVIDIA runtime; install the NVIDIA Container Toolkit" in preflight_error()
    preflight(IMAGE, need_gpus=False)  # a CPU-only host needs none


def test_an_image_not_pulled_says_docker_pull(fake_docker):
    fake_docker.setenv("FAKE_IMAGE", "absent")
    assert f"image '{IMAGE}' is not present locally; run 'docker pull {IMAGE}' first" in preflight_error()


def test_no_gpu_inside_the_container_is_reported(fake_docker):
    fake_docker.setenv("FAKE_RUN_ERR", "docker: Error response from daemon: could not select device driver \"\" "
                                       "with capabilities: [[gpu]].")
    message = preflight_error()
    assert "no GPU visible inside the container (docker: Error response from daemon: could not select" in message
    assert f"docker run --rm --gpus all --entrypoint nvidia-smi {IMAGE} -L" in message


def test_a_cuda_newer_than_the_driver_is_named_as_such(fake_docker):
    fake_docker.setenv("FAKE_RUN_ERR", "docker: Error response from daemon: failed to create task for container: "
                       "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8, please update "
                       "your driver to a newer version, or use an earlier cuda container: unknown.")
    message = preflight_error()
    assert "the image's CUDA needs a newer NVIDIA driver than this host has" in message and "cuda>=12.8" in message


def test_docker_output_parsing():
    assert has_nvidia_runtime(NVIDIA)
    assert not has_nvidia_runtime('{"runc":{"path":"runc"}}')
    assert cuda_mismatch("CUDA driver version is insufficient for CUDA runtime version")
    assert cuda_mismatch("Error: No such image: x") is None
    assert "systemctl start docker" in engine_unreachable_hint("Cannot connect to the Docker daemon at unix:///x")
    assert "'docker' group" in engine_unreachable_hint("permission denied while trying to connect")


def test_gpu_request_follows_the_gpus_this_process_may_use():
    assert gpu_request(need_gpus=True, visible=None) == "all"
    assert gpu_request(need_gpus=True, visible="2, 3") == '"device=2,3"'
    assert gpu_request(need_gpus=True, visible="GPU-1a2b") == '"device=GPU-1a2b"'
    assert gpu_request(need_gpus=False, visible="0") is None  # a CPU host: no --gpus at all


def test_runner_selection_and_the_container_command(tmp_path, monkeypatch):
    monkeypatch.delenv("LLEM_RUNNER_VLLM", raising=False)
    spec = choose_runner("vllm", None, {"vllm": f"docker:{IMAGE}", "pytorch": "inprocess"})
    assert (spec.kind, spec.image, str(spec)) == ("docker", IMAGE, f"docker:{IMAGE}")
    assert choose_runner("pytorch", None, {"vllm": f"docker:{IMAGE}"}).kind == "inprocess"
    # nothing named: a fresh worker process per load group where there are GPUs
    default_on_gpu = choose_runner("pytorch", None, {}, gpu_host=True)
    assert (default_on_gpu.kind, default_on_gpu.python) == ("subprocess", sys.executable)
    assert choose_runner("pytorch", None, {"pytorch": "inprocess"}, gpu_host=True).kind == "inprocess"
    with pytest.raises(ConfigError, match="'docker:' needs an image"):
        parse_runner("docker:", "runners.vllm")
    environ = {"HF_TOKEN": "t", "HF_HOME": "/hf", "LLEM_CACHE_DIR": "/cache", "VLLM_USE_V1": "1",
               "CUDA_VISIBLE_DEVICES": "1,2", "HOME": "/root", "PYTHONPATH": "/somewhere"}
    cmd = docker_command(IMAGE, tmp_path / "io", tmp_path, tmp_path / "ts", "llem-x", "8g", ipc_host=False,
                         gpus=gpu_request(True, environ["CUDA_VISIBLE_DEVICES"]), environ=environ, workdir=tmp_path)
    pairs = list(zip(cmd, cmd[1:]))
    assert cmd[:3] == ["docker", "run", "--rm"] and ("--gpus", '"device=1,2"') in pairs
    assert ("--shm-size", "8g") in pairs and "--ipc=host" not in cmd
    assert ("-v", f"{tmp_path / 'io'}:/llem-io") in pairs and ("-v", f"{tmp_path / 'ts'}:/llem-timeseries") in pairs
    assert ("-v", f"{tmp_path / 'llem_bench'}:/opt/llem/llem_bench:ro") in pairs
    assert ("-e", "PYTHONPATH=/opt/llem") in pairs and ("-w", str(tmp_path)) in pairs
    assert ("-v", "/hf:/hf") in pairs and ("-v", "/cache:/cache") in pairs
    passed = {value for flag, value in pairs if flag == "-e"}
    assert {"HF_TOKEN", "HF_HOME=/hf", "LLEM_CACHE_DIR=/cache", "VLLM_USE_V1"} <= passed
    assert not passed & {"CUDA_VISIBLE_DEVICES", "HOME", "PYTHONPATH"}  # --gpus already picked the devices
    assert cmd[cmd.index(IMAGE) - 2:] == ["--entrypoint", "python3", IMAGE, "-m", "llem_bench.isolation.worker",
                                          "/llem-io/request.json", "/llem-io/result.json"]
    other = docker_command(IMAGE, tmp_path, tmp_path, tmp_path, "n", "8g", ipc_host=True, gpus=None, environ={})
    # relative paths (--llem-out out, LLEM_CACHE_DIR=.cache) would be taken for volume names: all absolute
    monkeypatch.chdir(tmp_path)
    relative = docker_command(IMAGE, Path("out/io"), Path("."), Path("out/ts"), "n", "8g", ipc_host=False,
                              gpus=None, environ={"LLEM_CACHE_DIR": ".cache"})
    mounts = [value.split(":")[0] for flag, value in zip(relative, relative[1:]) if flag == "-v"]
    assert mounts and all(Path(m).is_absolute() for m in mounts), mounts
    assert f"LLEM_CACHE_DIR={tmp_path / '.cache'}" in relative
    assert "--ipc=host" in other and "--shm-size" not in other and "--gpus" not in other
