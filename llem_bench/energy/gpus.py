"""NVML handles for the GPUs a process uses, matched by UUID so CUDA_VISIBLE_DEVICES is honoured."""

from __future__ import annotations

from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_init():
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def nvml_handles_for(cuda_ordinals: list[int]) -> dict[str, Any]:
    """uuid -> handle for CUDA ordinals as seen by this process."""
    import torch

    pynvml = nvml_init()
    by_uuid = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        by_uuid[_text(pynvml.nvmlDeviceGetUUID(handle)).removeprefix("GPU-")] = handle
    handles = {}
    for ordinal in cuda_ordinals:
        uuid = str(torch.cuda.get_device_properties(ordinal).uuid).removeprefix("GPU-")
        if uuid not in by_uuid:
            raise RuntimeError(f"CUDA device {ordinal} (uuid {uuid}) not found by NVML")
        handles[uuid] = by_uuid[uuid]
    return handles


def counter_supported(handle: Any) -> bool:
    """Volta and newer have the total-energy counter; older GPUs answer NotSupported."""
    import pynvml

    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return True
    except pynvml.NVMLError_NotSupported:
        return False


def visible_handles() -> dict[str, Any]:
    """uuid -> handle of every GPU this process may use (all CUDA ordinals it sees)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return nvml_handles_for(list(range(torch.cuda.device_count())))


def gpu_facts(handle: Any) -> dict[str, Any]:
    import pynvml

    def safe(fn, *args):
        try:
            return fn(*args)
        except Exception:
            return None

    limit = safe(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    return {
        "name": _text(safe(pynvml.nvmlDeviceGetName, handle)),
        "uuid": _text(safe(pynvml.nvmlDeviceGetUUID, handle)),
        "power_limit_w": limit / 1000.0 if limit else None,
        "sm_clock_max_mhz": safe(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_max_mhz": safe(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM),
    }


def system_gpu_facts() -> dict[str, Any]:
    """Driver, CUDA driver version and every GPU NVML sees; {'available': False, 'reason'} otherwise."""
    try:
        pynvml = nvml_init()
    except Exception as exc:
        return {"available": False, "reason": f"NVML unavailable: {exc}"}
    cuda = pynvml.nvmlSystemGetCudaDriverVersion()
    return {
        "available": True,
        "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        "cuda_driver": f"{cuda // 1000}.{(cuda % 1000) // 10}",
        "gpus": [gpu_facts(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())],
    }
