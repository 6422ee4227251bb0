"""docker:<image> runner: the worker runs in `docker run --rm` with the experiment's GPUs.

Pre-flight checks run before any container starts (at session configure time), each failing with
what to do about it. The parsing of docker's answers is kept in small pure functions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from llem_bench.config.errors import ConfigError

PASS_ENV_PREFIXES = ("LLEM_", "HF_", "CUDA_", "VLLM_", "NCCL_", "TRANSFORMERS_", "TLLM_", "TRTLLM_", "OMPI_")
# Inside the container the GPUs are renumbered from 0, so the host's selection becomes --gpus instead.
NOT_PASSED = ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")
IO_DIR, CODE_DIR, SERIES_DIR = "/llem-io", "/opt/llem", "/llem-timeseries"
# What a backend needs from `docker run` whatever the options say: TensorRT-LLM's documented command uses the
# host's IPC namespace (MPI and NCCL shared memory), unlimited locked memory (pinned buffers) and a 64 MiB
# stack (NGC images' standard settings).
BACKEND_RUN_FLAGS = {"tensorrt": ["--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]}


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def has_nvidia_runtime(runtimes_json: str) -> bool:
    """`docker info --format '{{json .Runtimes}}'` names an nvidia runtime (or CDI is not needed:
    Docker >= 25 with the toolkit's CDI spec also lists it as 'nvidia')."""
    try:
        return "nvidia" in json.loads(runtimes_json or "{}")
    except json.JSONDecodeError:
        return "nvidia" in runtimes_json


def cuda_mismatch(stderr: str) -> Optional[str]:
    """The container's CUDA needs a newer driver than the host has: the toolkit's requirement check
    ('unsatisfied condition: cuda>=12.8') or the CUDA runtime's own complaint."""
    text = stderr.lower()
    if "unsatisfied condition: cuda" in text or "cuda driver version is insufficient" in text:
        return last_line(stderr)
    return None


def engine_unreachable_hint(stderr: str) -> str:
    """What to do when `docker info` fails: permissions and a stopped daemon need different fixes."""
    if "permission denied" in stderr.lower():
        return ("you may not use the Docker socket: add yourself to the 'docker' group "
                "('sudo usermod -aG docker $USER', then log in again) or point DOCKER_HOST at an engine you may use")
    return ("start it (e.g. 'sudo systemctl start docker', or Docker Desktop) or check DOCKER_HOST / "
            "'docker context ls'")


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
        raise ConfigError(f"{where}: the Docker engine is unreachable ({last_line(info.stderr)}); "
                          f"{engine_unreachable_hint(info.stderr)}")
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
                              f"check 'docker run --rm --gpus all --entrypoint nvidia-smi {image} -L'")


def gpu_request(need_gpus: bool, visible: Optional[str]) -> Optional[str]:
    """--gpus value: the GPUs this process may use (CUDA_VISIBLE_DEVICES), all of them when it does not
    say, none on a host without GPUs."""
    if not need_gpus:
        return None
    if visible is None or not visible.strip():
        return "all"
    devices = ",".join(d.strip() for d in visible.split(",") if d.strip())
    return f'"device={devices}"'  # the quotes keep docker from splitting the list at its commas


def docker_command(image: str, io_dir: Path, package_root: Path, series_dir: Path, name: str,
                   shm_size: str, ipc_host: bool, gpus: Optional[str] = "all",
                   environ: Optional[dict[str, str]] = None, workdir: Optional[Path] = None,
                   backend: Optional[str] = None) -> list[str]:
    environ = dict(os.environ if environ is None else environ)
    workdir = Path(workdir or os.getcwd()).resolve()
    # docker takes a relative -v source for the name of a volume (and refuses the slashes): every host path
    # is made absolute (found with a real engine: --llem-out out failed with "invalid characters")
    io_dir, series_dir, package_root = (Path(p).resolve() for p in (io_dir, series_dir, package_root))
    cmd = ["docker", "run", "--rm", "--name", name]
    if gpus:
        cmd += ["--gpus", gpus]
    needed = BACKEND_RUN_FLAGS.get(backend or "", [])
    cmd += needed if needed else (["--ipc=host"] if ipc_host else ["--shm-size", shm_size])
    cmd += ["-v", f"{io_dir}:{IO_DIR}", "-v", f"{series_dir}:{SERIES_DIR}",
            "-v", f"{package_root / 'llem_bench'}:{CODE_DIR}/llem_bench:ro", "-e", f"PYTHONPATH={CODE_DIR}",
            # relative paths in the study (prompt files, local models) resolve as they do here
            "-v", f"{workdir}:{workdir}:ro", "-w", str(workdir)]
    caches = {}
    for key in ("LLEM_CACHE_DIR", "HF_HOME"):  # model caches: the container reuses what is on the host
        if environ.get(key):
            caches[key] = str(Path(environ[key]).resolve())
            cmd += ["-v", f"{caches[key]}:{caches[key]}", "-e", f"{key}={caches[key]}"]
    for key in sorted(environ):
        if key.startswith(PASS_ENV_PREFIXES) and key not in NOT_PASSED and key not in caches:
            cmd += ["-e", key]
    return cmd + ["--entrypoint", "python3", image, "-m", "llem_bench.isolation.worker",
                  f"{IO_DIR}/request.json", f"{IO_DIR}/result.json"]


def kill_container(name: str) -> None:
    """Kill and remove: `rm -f` also catches a container the killed CLI had created but not started yet."""
    if shutil.which("docker"):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
