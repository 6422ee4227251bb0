"""Energy meters behind one tiny begin/end window API (the Zeus idea).

A meter that cannot measure says why (`reason`) and returns None: energy is never estimated and
never reported as zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Protocol


@dataclass
class EnergyWindow:
    joules: Optional[float]
    per_gpu_joules: dict[str, float] = field(default_factory=dict)
    reason: Optional[str] = None


class EnergyMeter(Protocol):
    source: str
    available: bool
    reason: Optional[str]

    def begin(self) -> None: ...

    def end(self) -> EnergyWindow: ...

    def describe(self) -> dict: ...


class UnavailableMeter:
    source = "none"
    available = False

    def __init__(self, reason: str):
        self.reason = reason

    def begin(self) -> None:
        pass

    def end(self) -> EnergyWindow:
        return EnergyWindow(joules=None, reason=self.reason)

    def describe(self) -> dict:
        return {"source": self.source, "available": False, "reason": self.reason, "gpus": []}


class NvmlCounterMeter:
    """Sum of `nvmlDeviceGetTotalEnergyConsumption` (mJ, since driver load) deltas over the GPUs
    the experiment uses. Callers synchronise the device before `begin` and `end`."""

    source = "nvml_counter"
    available = True
    reason = None

    def __init__(self, handles: dict[str, object]):
        import pynvml

        self._nvml = pynvml
        self._handles = handles  # uuid -> NVML handle
        self._start: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        return {uuid: self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for uuid, h in self._handles.items()}

    def begin(self) -> None:
        self._start = self._read()

    def end(self) -> EnergyWindow:
        stop = self._read()
        per_gpu = {uuid: (stop[uuid] - self._start[uuid]) / 1000.0 for uuid in stop}
        return EnergyWindow(joules=sum(per_gpu.values()), per_gpu_joules=per_gpu)

    def describe(self) -> dict:
        from llem_bench.energy.gpus import gpu_facts

        return {"source": self.source, "available": True, "reason": None,
                "gpus": [gpu_facts(h) for h in self._handles.values()]}


def make_energy_meter(mode: str, cuda_ordinals: list[int]) -> EnergyMeter:
    """`cuda_ordinals` are the CUDA device indices the experiment uses, as this process sees them
    (after CUDA_VISIBLE_DEVICES). An empty list means the experiment runs on the CPU."""
    if mode == "none":
        return UnavailableMeter("energy measurement disabled (measurement.energy: none)")
    if not cuda_ordinals:
        meter: EnergyMeter = UnavailableMeter("the experiment runs on the CPU; NVML measures GPU energy only")
    else:
        try:
            from llem_bench.energy.gpus import nvml_handles_for

            meter = NvmlCounterMeter(nvml_handles_for(cuda_ordinals))
        except Exception as exc:  # NVML missing, no driver, counter unsupported...
            meter = UnavailableMeter(f"NVML energy counter unavailable: {exc}")
    if mode == "nvml" and not meter.available:
        raise RuntimeError(f"measurement.energy: nvml was requested but {meter.reason}")
    return meter


def visible_device_tokens() -> Optional[list[str]]:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [t.strip() for t in value.split(",") if t.strip()]
