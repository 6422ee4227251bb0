"""Idle power: what the GPUs draw doing nothing, before the model loads and with it resident."""

from __future__ import annotations

import time
from typing import Any, Optional

from llem_bench.energy.sampler import NvmlSampler, Samples, summarize_window


def idle_from_window(samples: Samples, t0: float, t1: float) -> dict[str, Any]:
    total = summarize_window(samples, t0, t1)["total"]
    return {"mean_power_w": total["mean_power_w"], "seconds": t1 - t0, "samples": total["samples"],
            "method": "NVML power samples integrated over an idle window, divided by its length"}


def measure_idle(handles: dict[str, Any], seconds: float, interval_s: float = 0.05) -> Optional[dict[str, Any]]:
    """Idle power of `handles` over `seconds` with a sampler of its own (e.g. before a model loads)."""
    if not handles or seconds <= 0:
        return None
    sampler = NvmlSampler(handles, interval_s).start()
    t0 = sampler.mark("idle_start")
    time.sleep(seconds)  # this is the measurement interval itself, not a wait for something
    t1 = sampler.mark("idle_end")
    samples = sampler.stop()
    return idle_from_window(samples, t0, t1)
