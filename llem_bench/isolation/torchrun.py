"""Launch a tensor parallel PyTorch experiment (pytorch.tp_plan) under torchrun.

One process per rank: `python -m torch.distributed.run --standalone --nproc-per-node K -m
llem_bench.isolation.worker REQUEST RESULT`. Rank k uses GPU k of the worker's set (the GPUs
CUDA_VISIBLE_DEVICES gives this process, e.g. its xdist slot's); CPU ranks (device: cpu, or a host
without GPUs) get no GPU at all. Rank 0 runs the experiment and writes the result; the others
join its passes (backends/pytorch_tp.py). One launch per experiment: the ranks do not outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from llem_bench.config.errors import ConfigError
from llem_bench.scaleout.gpus import NodeGpus

TERM_GRACE_S = 10  # torchrun stops its ranks on SIGTERM; SIGKILL after this


def needs_torchrun(config: Any) -> bool:
    return config.backend == "pytorch" and config.pytorch.tp_plan is not None


def cpu_ranks(config: Any, gpus: NodeGpus) -> bool:
    device = config.pytorch.device
    return device == "cpu" or (device == "auto" and not gpus.tokens)


def world_size(config: Any, gpus: NodeGpus) -> int:
    """Ranks of the launch: pytorch.tp_size, or every GPU of the worker's set. ConfigError with the fix."""
    section = config.pytorch
    if cpu_ranks(config, gpus):
        if section.tp_size is None:
            raise ConfigError("pytorch.tp_size: tp_plan on CPU ranks (device: cpu, or no GPU visible) has no GPU set "
                              "to size itself by; set tp_size to the number of CPU processes, e.g. tp_size: 2")
        return section.tp_size
    if not gpus.tokens:
        raise ConfigError(f"pytorch.device: {section.device} with tp_plan, but no GPU is visible ({gpus.reason}); use "
                          "device: cpu with tp_size for CPU ranks")
    have = len(gpus.tokens)
    if section.tp_size is not None and section.tp_size > have:
        raise ConfigError(f"pytorch.tp_size is {section.tp_size} but the worker's GPU set has {have} "
                          f"({', '.join(gpus.tokens)}, from {gpus.source}); lower tp_size or give the worker more GPUs "
                          f"(--llem-gpus-per-worker {section.tp_size}, or CUDA_VISIBLE_DEVICES)")
    if have < 2 and section.tp_size is None:
        raise ConfigError(f"pytorch.tp_plan shards over 2 or more GPUs, but the worker's GPU set has {have} "
                          f"({', '.join(gpus.tokens)}); give it more (--llem-gpus-per-worker 2) or remove tp_plan")
    return section.tp_size or have


def check_launches(experiments: list, runners: dict, gpus: NodeGpus) -> None:
    """Pre-flight, before any model loads: every tp_plan experiment can be launched here."""
    for exp in experiments:
        if not needs_torchrun(exp.config):
            continue
        runner = runners.get(exp.backend)
        if runner is not None and runner.kind == "docker":
            raise ConfigError(f"{exp.test_id}: pytorch.tp_plan runs under torchrun on this host; the docker: runner "
                              "does not launch it yet. Use runner subprocess or venv:<python> for the pytorch backend")
        try:
            world_size(exp.config, gpus)
        except ConfigError as exc:
            raise ConfigError(f"{exp.test_id}: {exc}") from None


def command(python: str, ranks: int, request: Path, result: Path) -> list[str]:
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "--max-restarts=0",
            "-m", "llem_bench.isolation.worker", str(request), str(result)]


def environment(base: dict[str, str], cpu: bool, ranks: int) -> dict[str, str]:
    env = dict(base)
    if cpu:  # transformers shards over the accelerator torch sees: CPU ranks must see none
        env["CUDA_VISIBLE_DEVICES"] = ""
        # torchrun would give each rank 1 thread; share the cores instead (an explicit setting wins)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    return env


def launch(python: str, config: Any, gpus: NodeGpus, request: Path, result: Path, log_path: Path,
           env: dict[str, str], timeout_s: Optional[float]) -> int:
    """Run the launch to its end; its exit status. TimeoutError when it outlived timeout_s (ranks stopped)."""
    ranks = world_size(config, gpus)
    cmd = command(python, ranks, request, result)
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=environment(env, cpu_ranks(config, gpus), ranks), start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s; torchrun and its ranks stopped") from None
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """torchrun starts each rank in a session of its own, so killing torchrun's group would leave them:
    SIGTERM lets torchrun stop them; a rank whose torchrun is gone dies too (worker.die_with_parent)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def python_of(spec: Any) -> str:
    return spec.python or sys.executable  # inprocess: this interpreter
