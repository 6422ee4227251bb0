"""Idle power: what the GPUs draw doing nothing, before the model loads and with it resident.

Net energy subtracts idle power x window time from energy read off the NVML total-energy counter, so
the idle power must come from the same counter (the `energy_mj` column the sampler records every
tick), never from `power_w`: on Ampere/Hopper that field is a ~1 s trailing average, and right after
work it still carries the load (a committed H100 run recorded 151.7 W where the counter said 126.3 W).
Before the idle window we therefore wait at least MIN_QUIET_S after the last GPU work and until power
has stopped falling (plateau), up to MAX_SETTLE_S, and record how long after the last work the window
started.

Uncertainty (a 95%-style half-width in W, see docs/methodology.md "Idle and net energy"):
    u_idle = sqrt(u_quantum^2 + u_spread^2)
    u_quantum = 2 x P_idle x update_s / T      the counter moves in ~100 ms steps: each edge can be
                                                one update late (worst case, both edges)
    u_spread  = t95(k-1) x s / sqrt(k)          s = std of the idle power over k ~1 s sub-windows
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from llem_bench.energy.sampler import NvmlSampler, Samples, summarize_window
from llem_bench.stats import mean, stdev, t95

MIN_QUIET_S = 2.0  # never start an idle window sooner than this after the last GPU work
MAX_SETTLE_S = 20.0  # stop waiting for a plateau after this long (recorded, not hidden)
PLATEAU_STEP_S = 1.0  # compare the mean power of the last second with the second before it
PLATEAU_TOLERANCE_W, PLATEAU_TOLERANCE_REL = 2.0, 0.02  # "not falling": dropped by less than this
SUB_WINDOW_S = 1.0  # idle spread: std of the power over sub-windows of about this length
DEFAULT_UPDATE_S = 0.1  # NVML counter/power update period on recent GPUs when the samples cannot tell

# Time of the last GPU work in this process (perf_counter), set by the pool after a load or close and
# by the runner after an experiment's passes. None: no GPU work in this process yet.
_last_gpu_work: Optional[float] = None


def note_gpu_work(t: Optional[float] = None) -> None:
    global _last_gpu_work
    _last_gpu_work = time.perf_counter() if t is None else t


def seconds_since_gpu_work(now: float) -> Optional[float]:
    return None if _last_gpu_work is None else now - _last_gpu_work


def tick_power(samples: Samples, t0: float, t1: float) -> tuple[str, list[tuple[float, float]]]:
    """(field, [(t, total power of one tick)]) in [t0, t1]: the instantaneous field where every GPU has
    it (it follows the GPU without the ~1 s lag), else the averaged one (lags: a conservative plateau)."""
    rows = [r for r in samples.rows if t0 <= r["t"] <= t1]
    field = "power_instant_w" if rows and all(r.get("power_instant_w") is not None for r in rows) else "power_w"
    ticks: dict[int, list] = {}
    for r in rows:
        if r.get(field) is not None:
            entry = ticks.setdefault(r["tick"], [r["t"], 0.0])
            entry[1] += r[field]
    return field, [(t, p) for t, p in ticks.values()]


def plateaued(points: list[tuple[float, float]], now: float, step: float = PLATEAU_STEP_S) -> bool:
    """Power stopped falling: the mean of the last `step` seconds is not lower than the mean of the
    `step` before it by more than max(PLATEAU_TOLERANCE_W, PLATEAU_TOLERANCE_REL)."""
    last = [p for t, p in points if now - step <= t <= now]
    before = [p for t, p in points if now - 2 * step <= t < now - step]
    if not last or not before:
        return False
    drop = mean(before) - mean(last)
    return drop <= max(PLATEAU_TOLERANCE_W, PLATEAU_TOLERANCE_REL * mean(before))


def wait_until_quiet(sampler: Any, min_quiet_s: float = MIN_QUIET_S, max_s: float = MAX_SETTLE_S,
                     poll_s: float = 0.2) -> dict[str, Any]:
    """Sleep until >= min_quiet_s after the last GPU work (or since now, when unknown) and power has
    stopped falling, or max_s passed. Returns what happened, for the result."""
    start = time.perf_counter()
    since = seconds_since_gpu_work(start)
    quiet_from = start - (since or 0.0)
    field, plateau = None, False
    while True:
        now = time.perf_counter()
        if now - quiet_from >= min_quiet_s:
            field, points = tick_power(sampler.snapshot(), now - 2 * PLATEAU_STEP_S - 0.05, now)
            plateau = plateaued(points, now, PLATEAU_STEP_S)
            if plateau or now - start >= max_s:
                break
        time.sleep(poll_s)
    return {"waited_s": round(now - start, 3), "plateau": plateau, "plateau_field": field,
            "wait_outcome": "power stopped falling" if plateau else
            f"still falling after {max_s:g} s (MAX_SETTLE_S): idle may be overstated"}


def update_interval_s(samples: Samples, t0: float, t1: float) -> float:
    """How often the counter actually moved in [t0, t1] (median gap between changes of `energy_mj` of
    one GPU); DEFAULT_UPDATE_S when the samples cannot tell."""
    gaps: list[float] = []
    for gpu in samples.gpus():
        changes, last = [], None
        for r in samples.rows:
            if r["gpu"] == gpu and t0 <= r["t"] <= t1 and r.get("energy_mj") is not None:
                if last is not None and r["energy_mj"] != last:
                    changes.append(r["t"])
                last = r["energy_mj"]
        gaps += [b - a for a, b in zip(changes, changes[1:])]
    return sorted(gaps)[len(gaps) // 2] if gaps else DEFAULT_UPDATE_S


def _window_energy(samples: Samples, t0: float, t1: float) -> tuple[Optional[float], str]:
    total = summarize_window(samples, t0, t1)["total"]
    if total["counter_energy_j"] is not None:
        return total["counter_energy_j"], "counter"
    return total["energy_j"], "power_w"


def idle_from_window(samples: Samples, t0: float, t1: float) -> dict[str, Any]:
    duration = t1 - t0
    energy, source = _window_energy(samples, t0, t1)
    if energy is None or duration <= 0:
        return {"mean_power_w": None, "seconds": duration, "reason": "samples do not cover the idle window"}
    power = energy / duration
    k = max(1, int(duration // SUB_WINDOW_S))
    edges = [t0 + duration * i / k for i in range(k + 1)]
    parts = [_window_energy(samples, a, b)[0] for a, b in zip(edges, edges[1:])]
    sub_powers = [e / (b - a) for e, a, b in zip(parts, edges, edges[1:]) if e is not None]
    update_s = update_interval_s(samples, t0, t1)
    u_quantum = 2 * abs(power) * update_s / duration
    u_spread = t95(len(sub_powers) - 1) * stdev(sub_powers) / math.sqrt(len(sub_powers)) if len(sub_powers) >= 2 else 0.0
    return {
        "mean_power_w": power, "seconds": duration, "samples": summarize_window(samples, t0, t1)["total"]["samples"],
        "uncertainty_w": math.sqrt(u_quantum ** 2 + u_spread ** 2),
        "uncertainty_parts_w": {"counter_quantum": u_quantum, "spread": u_spread, "update_interval_s": update_s,
                                "sub_window_powers_w": sub_powers},
        "method": ("NVML total-energy counter delta over the idle window / its length" if source == "counter" else
                   "no energy counter on these GPUs: the averaged power field integrated over the idle window "
                   "(the same basis as the gross energy), after waiting for a plateau"),
    }


def settle_and_measure(sampler: Any, seconds: float, label: str = "idle") -> dict[str, Any]:
    """Wait until quiet, then an idle window of `seconds` on `sampler`'s GPUs."""
    wait = wait_until_quiet(sampler)
    t0 = sampler.mark(f"{label}_start")
    since = seconds_since_gpu_work(t0)
    time.sleep(seconds)  # the idle measurement interval itself
    t1 = sampler.mark(f"{label}_end")
    sampler.wait_for_sample_after(t1)
    idle = idle_from_window(sampler.snapshot(), t0, t1)
    idle.update(wait)
    idle["seconds_after_last_gpu_work"] = round(since, 3) if since is not None else None
    if since is None:
        idle["last_gpu_work"] = "none in this process before the window (time since earlier work unknown)"
    return idle


def measure_idle(handles: dict[str, Any], seconds: float, interval_s: float = 0.1) -> Optional[dict[str, Any]]:
    """Idle power of `handles` over `seconds` with a sampler of its own (e.g. before a model loads)."""
    if not handles or seconds <= 0:
        return None
    sampler = NvmlSampler(handles, interval_s).start()
    try:
        return settle_and_measure(sampler, seconds)
    finally:
        sampler.stop()
