"""The power sampler of one experiment, or nothing: marks and waits that are no-ops without a GPU."""

from __future__ import annotations

import time
from typing import Optional

from llem_bench.backends.base import Backend


class Probe:
    """The power sampler, or nothing: marks and waits that are no-ops without a GPU."""

    def __init__(self, backend: Backend, interval_s: float):
        self.sampler = None
        self.reason: Optional[str] = None
        ordinals = backend.cuda_ordinals()
        if not ordinals:
            self.reason = "the experiment runs on the CPU"
        elif interval_s <= 0:
            self.reason = "sampler off (measurement.sampler_interval_s: 0)"
        else:
            try:
                from llem_bench.energy.gpus import nvml_handles_for
                from llem_bench.energy.sampler import NvmlSampler

                self.sampler = NvmlSampler(nvml_handles_for(ordinals), interval_s).start()
            except Exception as exc:
                self.reason = f"NVML sampler unavailable: {exc}"

    def mark(self, label: str) -> float:
        return self.sampler.mark(label) if self.sampler else time.perf_counter()
