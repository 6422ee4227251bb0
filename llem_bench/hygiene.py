"""GPU hygiene before an experiment: no leftover memory from earlier work, and power and
temperature back near idle, so one experiment's heat does not leak into the next one's energy."""

from __future__ import annotations

import os
import time
from typing import Any, Optional


def _gpus() -> tuple[Optional[Any], list[Any], Optional[str]]:
    try:
        from llem_bench.energy.gpus import nvml_init

        nvml = nvml_init()
        return nvml, [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())], None
    except Exception as exc:
        return None, [], f"NVML unavailable ({exc})"


def residual_memory(max_mb: float) -> dict[str, Any]:
    """Memory other processes hold on the GPUs (this process's own model may be resident on purpose)."""
    nvml, handles, reason = _gpus()
    if nvml is None:
        return {"skipped": reason}
    mine = os.getpid()
    found = []
    for handle in handles:
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:
            procs = []
        for proc in procs:
            used = (proc.usedGpuMemory or 0) / 2**20
            if proc.pid != mine:
                found.append({"pid": proc.pid, "used_mb": round(used), "name": _process_name(proc.pid)})
    total = sum(p["used_mb"] for p in found)
    return {"other_processes": found, "other_used_mb": total, "max_mb": max_mb, "ok": total <= max_mb}


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def settle(target_power_w: Optional[float], max_wait_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Wait (bounded) until the summed GPU power is back at or below `target_power_w`."""
    if max_wait_s <= 0:
        return {"skipped": "settle wait disabled (--llem-settle-s 0)"}
    nvml, handles, reason = _gpus()
    if nvml is None:
        return {"skipped": reason}
    if target_power_w is None:
        return {"skipped": "no idle reference yet"}
    start = time.perf_counter()
    power = _power(nvml, handles)
    while power > target_power_w and time.perf_counter() - start < max_wait_s:
        time.sleep(poll_s)  # polling the device, bounded by max_wait_s
        power = _power(nvml, handles)
    return {"waited_s": round(time.perf_counter() - start, 2), "power_w": round(power, 1),
            "target_w": round(target_power_w, 1), "reached": power <= target_power_w}


def _power(nvml: Any, handles: list[Any]) -> float:
    return sum(nvml.nvmlDeviceGetPowerUsage(h) for h in handles) / 1000.0


def session_idle_power() -> Optional[float]:
    """Summed GPU power now (at session start, before anything is loaded)."""
    nvml, handles, _ = _gpus()
    if nvml is None or not handles:
        return None
    samples = []
    for _ in range(5):
        samples.append(_power(nvml, handles))
        time.sleep(0.2)  # five readings over a second: the power field is a ~1 s average anyway
    return min(samples)


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])  # field 4: ppid
        except (OSError, ValueError, IndexError):
            break
    return seen


def foreign_gpu_processes(handles: dict[str, Any]) -> list[str]:
    """Compute processes on these GPUs that are neither this process nor its children (a vLLM
    engine core is our child); any other one shares the GPU and the energy counter with us."""
    try:
        import pynvml
    except ImportError:
        return []
    mine = os.getpid()
    found = []
    for handle in handles.values():
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:
            continue
        for proc in procs:
            if mine not in _ancestors(proc.pid):
                found.append(f"{_process_name(proc.pid)} (pid {proc.pid})")
    return found
