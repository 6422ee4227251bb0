"""Energy meters behind one tiny begin/end window API (the Zeus idea).

A meter that cannot measure says why (`reason`) and returns None: energy is never estimated and
never reported as zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol


@dataclass
class EnergyWindow:
    joules: Optional[float]
    per_gpu_joules: dict[str, float] = field(default_factory=dict)
    reason: Optional[str] = None
    counter_joules: Optional[float] = None  # NVML counter over the same window, when another source measured


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

    def __init__(self, handles: dict[str, Any]):
        import pynvml

        self._nvml = pynvml
        self.handles = handles  # uuid -> NVML handle
        self._start: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        return {uuid: self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for uuid, h in self.handles.items()}

    def begin(self) -> None:
        self._start = self._read()

    def end(self) -> EnergyWindow:
        stop = self._read()
        per_gpu = {uuid: (stop[uuid] - self._start[uuid]) / 1000.0 for uuid in stop}
        return EnergyWindow(joules=sum(per_gpu.values()), per_gpu_joules=per_gpu)

    def describe(self) -> dict:
        from llem_bench.energy.gpus import gpu_facts

        return {"source": self.source, "available": True, "reason": None,
                "gpus": [gpu_facts(h) for h in self.handles.values()]}


class SampledMeter:
    """For GPUs without the energy counter: power samples integrated over the window."""

    source = "nvml_power_samples"
    available = True
    reason = None

    def __init__(self, handles: dict[str, Any], sampler: Any):
        self.handles, self._sampler = handles, sampler
        self._t0 = 0.0

    def begin(self) -> None:
        self._t0 = self._sampler.mark("meter_begin")

    def end(self) -> EnergyWindow:
        from llem_bench.energy.sampler import summarize_window

        t1 = self._sampler.mark("meter_end")
        self._sampler.wait_for_sample_after(t1)
        summary = summarize_window(self._sampler.snapshot(), self._t0, t1)
        per_gpu = {uuid: g["energy_j"] for uuid, g in summary["gpus"].items() if g["energy_j"] is not None}
        total = summary["total"]["energy_j"]
        return EnergyWindow(joules=total, per_gpu_joules=per_gpu,
                            reason=None if total is not None else "power samples do not cover the window")

    def describe(self) -> dict:
        from llem_bench.energy.gpus import gpu_facts

        return {"source": self.source, "available": True, "reason": "GPU has no total-energy counter",
                "gpus": [gpu_facts(h) for h in self.handles.values()]}


class ZeusMeter:
    """Zeus's ZeusMonitor windows over the same GPUs (an independent implementation to cross-check)."""

    source = "zeus"
    available = True
    reason = None

    def __init__(self, handles: dict[str, Any], cuda_ordinals: list[int]):
        from zeus.monitor import ZeusMonitor

        self.handles = handles
        # Zeus keys its energies by CUDA index; the other meters (and the sampler) by UUID. `handles`
        # follows the order of `cuda_ordinals` (nvml_handles_for), so index i is the i-th UUID.
        self._uuid_of = dict(zip(cuda_ordinals, handles))
        self._monitor = ZeusMonitor(gpu_indices=cuda_ordinals, approx_instant_energy=False)
        self._counter = NvmlCounterMeter(handles)  # read at the same edges, for the cross-check
        self._n = 0

    def begin(self) -> None:
        self._n += 1
        self._counter.begin()
        self._monitor.begin_window(f"llem-{self._n}", sync_execution=False)

    def end(self) -> EnergyWindow:
        measurement = self._monitor.end_window(f"llem-{self._n}", sync_execution=False)
        counter = self._counter.end()
        per_gpu = {self._uuid_of.get(i, str(i)): float(j) for i, j in measurement.gpu_energy.items()}
        return EnergyWindow(joules=sum(per_gpu.values()), per_gpu_joules=per_gpu, counter_joules=counter.joules)

    def describe(self) -> dict:
        from llem_bench.energy.gpus import gpu_facts

        return {"source": self.source, "available": True, "reason": None,
                "note": "on Volta and newer Zeus reads the same NVML energy counter, so Zeus vs "
                        "nvml_counter_energy_j is a consistency check, not an independent measurement",
                "gpus": [gpu_facts(h) for h in self.handles.values()]}


def make_energy_meter(mode: str, cuda_ordinals: list[int], sampler: Any = None) -> EnergyMeter:
    """`cuda_ordinals` are the CUDA device indices the experiment uses, as this process sees them
    (after CUDA_VISIBLE_DEVICES). An empty list means the experiment runs on the CPU. `sampler`
    (an NvmlSampler over the same GPUs) serves GPUs that have no energy counter."""
    if mode == "none":
        return UnavailableMeter("energy measurement disabled (measurement.energy: none)")
    if not cuda_ordinals:
        meter: EnergyMeter = UnavailableMeter("the experiment runs on the CPU; NVML measures GPU energy only")
    else:
        try:
            from llem_bench.energy.gpus import counter_supported, nvml_handles_for

            handles = nvml_handles_for(cuda_ordinals)
            if mode == "zeus":
                meter = ZeusMeter(handles, cuda_ordinals)
            elif all(counter_supported(h) for h in handles.values()):
                meter = NvmlCounterMeter(handles)
            elif sampler is not None:
                meter = SampledMeter(handles, sampler)
            else:
                meter = UnavailableMeter("GPU has no total-energy counter and the power sampler is off "
                                         "(measurement.sampler_interval_s: 0)")
        except Exception as exc:  # NVML missing, no driver, zeus missing...
            meter = UnavailableMeter(f"{'Zeus' if mode == 'zeus' else 'NVML'} energy unavailable: {exc}")
    if mode in ("nvml", "zeus") and not meter.available:
        raise RuntimeError(f"measurement.energy: {mode} was requested but {meter.reason}")
    return meter


def visible_device_tokens() -> Optional[list[str]]:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [t.strip() for t in value.split(",") if t.strip()]
