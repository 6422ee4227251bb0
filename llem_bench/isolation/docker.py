"""docker:<image> runner: the worker runs in a container with the experiment's GPUs.

Pre-flight checks run before any container starts, each failing with what to do about it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from llem_bench.config.errors import ConfigError

PASS_ENV_PREFIXES = ("LLEM_", "HF_", "CUDA_", "VLLM_", "NCCL_", "TRANSFORMERS_")
IO_DIR, CODE_DIR, SERIES_DIR = "/llem-io", "/opt/llem", "/llem-timeseries"


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def has_nvidia_runtime(runtimes_json: str) -> bool:
    try:
        return "nvidia" in json.loads(runtimes_json or "{}")
    except json.JSONDecodeError:
        return "nvidia" in runtimes_json


def cuda_mismatch(stderr: str) -> Optional[str]:
    """The container's CUDA needs a newer driver than the host has."""
    text = stderr.lower()
    if "unsatisfied condition: cuda" in text or "cuda driver version is insufficient" in text:
        return last_line(stderr)
    return None


def preflight(image: str, need_gpus: bool) -> None:
    """Raise ConfigError naming the first thing that would stop `image` from running an experiment."""
    where = f"runner docker:{image}"
    if shutil.which("docker") is None:
        raise ConfigError(f"{where}: the docker CLI is not on PATH; install Docker (or use the venv: or "
                          "subprocess runner)")
    try:
        info = _docker("info", "--format", "{{json .Runtimes}}")
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: 'docker info' did not answer in 30 s; is the Docker engine hung?") from None
    if info.returncode != 0:
        raise ConfigError(f"{where}: the Docker engine is unreachable ({last_line(info.stderr)}); start it "
                          "(e.g. 'sudo systemctl start docker') or check that you may use its socket "
                          "(the 'docker' group, DOCKER_HOST)")
    if need_gpus and not has_nvidia_runtime(info.stdout):
        raise ConfigError(f"{where}: Docker has no NVIDIA runtime; install the NVIDIA Container Toolkit and run "
                          "'sudo nvidia-ctk runtime configure --runtime=docker' then restart Docker")
    if _docker("image", "inspect", image).returncode != 0:
        raise ConfigError(f"{where}: image {image!r} is not present locally; run 'docker pull {image}' first "
                          "(a study never pulls images by itself)")
    if need_gpus:
        probe = _docker("run", "--rm", "--gpus", "all", "--entrypoint", "nvidia-smi", image, "-L", timeout=120)
        if probe.returncode != 0:
            mismatch = cuda_mismatch(probe.stderr)
            if mismatch:
                raise ConfigError(f"{where}: the image's CUDA needs a newer NVIDIA driver than this host has "
                                  f"({mismatch}); use an image built for the host's CUDA version or update the driver")
            raise ConfigError(f"{where}: no GPU visible inside the container ({last_line(probe.stderr)}); "
                              "check 'docker run --rm --gpus all <image> nvidia-smi'")


def docker_command(image: str, io_dir: Path, package_root: Path, series_dir: Path, name: str,
                   shm_size: str, ipc_host: bool) -> list[str]:
    cmd = ["docker", "run", "--rm", "--name", name, "--gpus", "all",
           "-v", f"{io_dir}:{IO_DIR}", "-v", f"{package_root / 'llem_bench'}:{CODE_DIR}/llem_bench:ro",
           "-v", f"{series_dir}:{SERIES_DIR}", "-e", f"PYTHONPATH={CODE_DIR}"]
    cmd += ["--ipc=host"] if ipc_host else ["--shm-size", shm_size]
    cache = os.environ.get("LLEM_CACHE_DIR")
    if cache:
        cmd += ["-v", f"{cache}:{cache}"]
    for key in sorted(os.environ):
        if key.startswith(PASS_ENV_PREFIXES) and key != "PYTHONPATH":
            cmd += ["-e", key]
    return cmd + ["--entrypoint", "python3", image, "-m", "llem_bench.isolation.worker",
                  f"{IO_DIR}/request.json", f"{IO_DIR}/result.json"]


def kill_container(name: str) -> None:
    if shutil.which("docker"):
        subprocess.run(["docker", "kill", name], capture_output=True, timeout=30)
