"""Background NVML timeseries: power, clocks, temperature, utilisation and throttle reasons.

The energy counter (meter.py) gives the number; this sampler explains it (was the GPU throttled,
at what clock, how hot) and cross-checks it: power integrated over the window should agree with the
counter delta. Note that on recent GPUs `nvmlDeviceGetPowerUsage` is an average over a short
driver-side window, so short windows can disagree with the counter; `cross_check` makes that
visible rather than hiding it.

The sampler thread only calls NVML; everything below the class is pure and testable without a GPU.
"""

from __future__ import annotations

import bisect
import csv
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

# One row per GPU per tick. `power_w` is nvmlDeviceGetPowerUsage, which on Ampere/Hopper is a ~1 s
# trailing average; `power_instant_w` is NVML_FI_DEV_POWER_INSTANT where the driver has it.
# `throttle_mask` is the raw clocks-event bitmask, `energy_mj` the total-energy counter (optional:
# not every GPU has it).
FIELDS = ("power_w", "power_instant_w", "sm_clock_mhz", "mem_clock_mhz", "temperature_c", "gpu_util_pct",
          "mem_util_pct", "throttle_mask", "energy_mj")

# NVML clocks-event (formerly "throttle") reason bits, as in nvml.h / pynvml.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the GPU ran slower than it would have; the rest are benign (idle, a clock the
# user set, sync boost between GPUs, display).
THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                        "hw_power_brake_slowdown"})

AGREEMENT_THRESHOLD = 0.03  # sampled vs counter energy: relative difference tolerated


@dataclass
class Samples:
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"t", "tick", "gpu", *FIELDS}
    marks: list[tuple[str, float]] = field(default_factory=list)  # (label, perf_counter time)
    interval_s: Optional[float] = None
    errors: dict[str, str] = field(default_factory=dict)  # "<uuid>:<field>" -> first NVML error

    def gpus(self) -> list[str]:
        return list(dict.fromkeys(r["gpu"] for r in self.rows))

    def mark_time(self, label: str, occurrence: int = -1) -> float:
        """Time of a named mark; the last one by default (marks can repeat, e.g. once per cycle)."""
        times = [t for name, t in self.marks if name == label]
        if not times:
            raise KeyError(f"no mark named {label!r}; marks: {[name for name, _ in self.marks]}")
        return times[occurrence]


class NvmlSampler:
    """Samples every GPU in `handles` (uuid -> NVML handle, e.g. from `nvml_handles_for`, which also
    initialises NVML) every `interval_s` on a daemon thread, from `start()` to `stop()`."""

    # 100 ms like measurement.sampler_interval_s: NVML's power fields and counter update about every
    # 100 ms, so a shorter interval mostly repeats values (audit 1.4).
    def __init__(self, handles: dict[str, Any], interval_s: float = 0.1, energy_counter: bool = True):
        import pynvml

        self._nvml = pynvml
        self._handles = dict(handles)
        self.interval_s = interval_s
        self._energy_counter = energy_counter
        self._stop = threading.Event()
        self._lock = threading.Lock()  # rows are appended by the thread, marks by the caller
        self._new_rows = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None
        self._samples = Samples(interval_s=interval_s)
        self._unsupported: set[str] = set()  # "<uuid>:<field>" that said NotSupported: stop asking
        self._reasons_fn = lambda handle: clock_event_reasons(pynvml, handle)

    # -- NVML, one call at a time, each allowed to fail on its own ---------------------------------
    def _query(self, uuid: str, name: str, fn, *args) -> Any:
        key = f"{uuid}:{name}"
        if key in self._unsupported:
            return None
        try:
            return fn(*args)
        except self._nvml.NVMLError_FunctionNotFound:
            self._note_error(key, "function not found in this driver", permanent=True)
        except self._nvml.NVMLError_NotSupported as exc:
            self._note_error(key, f"NotSupported: {exc}", permanent=True)
        except Exception as exc:  # transient (GPU lost, timeout...): None for this tick only
            self._note_error(key, f"{type(exc).__name__}: {exc}", permanent=False)
        return None

    def _note_error(self, key: str, message: str, permanent: bool) -> None:
        self._samples.errors.setdefault(key, message)
        if permanent:
            self._unsupported.add(key)

    def _instant_power(self, handle: Any) -> int:
        nv = self._nvml
        value = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != nv.NVML_SUCCESS:
            raise nv.NVMLError(value.nvmlReturn)  # e.g. NotSupported on older GPUs/drivers
        return value.value.uiVal  # mW

    def _read(self, uuid: str, handle: Any) -> dict[str, Any]:
        nv, q = self._nvml, self._query
        t = time.perf_counter()  # power is the field integrated, so stamp the row right before it
        power_mw = q(uuid, "power_w", nv.nvmlDeviceGetPowerUsage, handle)
        util = q(uuid, "util", nv.nvmlDeviceGetUtilizationRates, handle)
        instant_mw = q(uuid, "power_instant_w", self._instant_power, handle)
        energy = q(uuid, "energy_mj", nv.nvmlDeviceGetTotalEnergyConsumption, handle) \
            if self._energy_counter else None
        return {
            "t": t,
            "gpu": uuid,
            "power_w": power_mw / 1000.0 if power_mw is not None else None,
            "power_instant_w": instant_mw / 1000.0 if instant_mw is not None else None,
            "sm_clock_mhz": q(uuid, "sm_clock_mhz", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": q(uuid, "mem_clock_mhz", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM),
            "temperature_c": q(uuid, "temperature_c", nv.nvmlDeviceGetTemperature, handle,
                               nv.NVML_TEMPERATURE_GPU),
            "gpu_util_pct": util.gpu if util is not None else None,
            "mem_util_pct": util.memory if util is not None else None,
            "throttle_mask": q(uuid, "throttle_mask", self._reasons_fn, handle),
            "energy_mj": energy,
        }

    def _tick(self, tick: int) -> None:
        rows = [{"tick": tick, **self._read(uuid, h)} for uuid, h in self._handles.items()]
        with self._new_rows:
            self._samples.rows.extend(rows)
            self._new_rows.notify_all()

    def _run(self) -> None:
        tick = 0
        deadline = time.perf_counter()
        # One tick right away and one after stop() so that marks made in between are always
        # bracketed by samples (integration then interpolates the edges and never extrapolates).
        while True:
            self._tick(tick)
            tick += 1
            deadline += self.interval_s
            # Pace on absolute deadlines so a slow NVML call does not make the interval drift.
            if self._stop.wait(max(0.0, deadline - time.perf_counter())):
                break
        self._tick(tick)

    # -- public --------------------------------------------------------------------------------------
    def start(self) -> "NvmlSampler":
        if self._thread is not None:
            raise RuntimeError("NvmlSampler already started; make a new one for another run")
        self._thread = threading.Thread(target=self._run, name="llem-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def mark(self, label: str) -> float:
        t = time.perf_counter()
        with self._lock:
            self._samples.marks.append((label, t))
        return t

    def wait_for_sample_after(self, t: float) -> bool:
        """Block until a sample newer than `t` exists, so a window ending at `t` is bracketed."""
        with self._new_rows:
            return self._new_rows.wait_for(
                lambda: bool(self._samples.rows) and self._samples.rows[-1]["t"] > t,
                timeout=max(1.0, 20 * self.interval_s))

    def snapshot(self) -> Samples:
        with self._lock:
            return Samples(rows=list(self._samples.rows), marks=list(self._samples.marks),
                           interval_s=self.interval_s, errors=dict(self._samples.errors))

    def stop(self) -> Samples:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._samples

    def __enter__(self) -> "NvmlSampler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- pure functions ----------------------------------------------------------------------------------

def _interp(times: Sequence[float], values: Sequence[float], t: float) -> float:
    i = bisect.bisect_left(times, t)
    if i < len(times) and times[i] == t:
        return values[i]
    ta, tb, va, vb = times[i - 1], times[i], values[i - 1], values[i]
    return va + (vb - va) * (t - ta) / (tb - ta)


def integrate_energy_j(times: Sequence[float], powers: Sequence[Optional[float]], t0: float,
                       t1: float) -> Optional[float]:
    """Trapezoid integral of power (W) over [t0, t1] in J, power linearly interpolated at the edges.
    Points whose power is None are skipped. None when the samples do not cover [t0, t1]: extrapolating
    would be an estimate, and llem-bench does not estimate."""
    if t1 < t0:
        raise ValueError(f"window ends before it starts: t0={t0}, t1={t1}")
    points = sorted((t, p) for t, p in zip(times, powers) if p is not None)
    if len(points) < 2 or t0 < points[0][0] or t1 > points[-1][0]:
        return None
    ts, ps = [t for t, _ in points], [p for _, p in points]
    inner = [(t, p) for t, p in points if t0 < t < t1]
    curve = [(t0, _interp(ts, ps, t0)), *inner, (t1, _interp(ts, ps, t1))]
    return sum((tb - ta) * (pa + pb) / 2.0 for (ta, pa), (tb, pb) in zip(curve, curve[1:]))


def clock_event_reasons(pynvml, handle) -> int:
    """The mask of reasons the clocks are held down: drivers >= 535 call them clocks-event reasons, older
    ones only answer to the throttle name."""
    new = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if new is not None:
        try:
            return new(handle)
        except pynvml.NVMLError_FunctionNotFound:
            pass
    return pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)


def decode_throttle_reasons(mask: Optional[int], throttling_only: bool = False) -> list[str]:
    """Names of the bits set in a clocks-event mask; `THROTTLING` says which ones slow the GPU down.
    Unknown bits come back as 'unknown_0x...' so nothing is silently dropped."""
    if not mask:
        return []
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    known = sum(CLOCK_EVENT_REASONS)
    names += [f"unknown_{hex(1 << b)}" for b in range(64) if mask & ~known & (1 << b)]
    return [n for n in names if n in THROTTLING] if throttling_only else names


def _gpu_window(rows: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    times = [r["t"] for r in rows]
    energy = integrate_energy_j(times, [r["power_w"] for r in rows], t0, t1)
    instant = integrate_energy_j(times, [r.get("power_instant_w") for r in rows], t0, t1)
    inside = [r for r in rows if t0 <= r["t"] <= t1]

    def values(name: str) -> list:
        return [r[name] for r in inside if r[name] is not None]

    counter = [(r["t"], r["energy_mj"]) for r in rows if r["energy_mj"] is not None]
    counter_j = None
    if len(counter) >= 2 and counter[0][0] <= t0 and t1 <= counter[-1][0]:
        ct, ce = [t for t, _ in counter], [e for _, e in counter]
        counter_j = (_interp(ct, ce, t1) - _interp(ct, ce, t0)) / 1000.0
    powers, sm, temps = values("power_w"), values("sm_clock_mhz"), values("temperature_c")
    instants = values("power_instant_w")
    reasons: list[str] = []
    masks = values("throttle_mask")
    throttled: dict[str, int] = {}
    for mask in masks:
        for name in decode_throttle_reasons(mask, throttling_only=True):
            throttled[name] = throttled.get(name, 0) + 1
            if name not in reasons:
                reasons.append(name)
    duration = t1 - t0
    # The NVML fields update about every 100 ms: count distinct consecutive values, not rows.
    tracked = "energy_mj" if any(r["energy_mj"] is not None for r in inside) else "power_w"
    changes = [b["t"] for a, b in zip(inside, inside[1:]) if b[tracked] is not None and b[tracked] != a[tracked]]
    return {
        "energy_j": energy,
        "reason": None if energy is not None else "power samples do not cover the window",
        # Time-weighted mean (energy / time), not the mean of samples, so uneven ticks don't bias it.
        "mean_power_w": energy / duration if energy is not None and duration > 0 else None,
        "max_power_w": max(powers) if powers else None,
        "max_instant_power_w": max(instants) if instants else None,
        "mean_sm_clock_mhz": sum(sm) / len(sm) if sm else None,
        # NVML utilization: the share of each ~100 ms sample period in which a kernel ran. Far below 100% on
        # a busy benchmark means the host (CPU, launches, batching) sets the pace, and its noise with it.
        "mean_gpu_util_pct": mean_present([r.get("gpu_util_pct") for r in inside]),
        "max_temperature_c": max(temps) if temps else None,
        "throttle_reasons": reasons,
        # Share of the window's samples with each throttling reason set (one 100 ms blip is not a throttled window).
        "throttle_fraction": {name: n / len(masks) for name, n in throttled.items()},
        "samples": len(inside),
        "effective_interval_s": (changes[-1] - changes[0]) / (len(changes) - 1) if len(changes) > 1 else None,
        "effective_interval_field": tracked,
        # Measured on an H100 (driver 580), vs the counter: the averaged power_w lags ~1 s (-4% on a
        # 10 s window starting from idle, -13% on 3 s) but follows bursty load; the instant field
        # is within 1% on steady load but aliases on bursty load (-17% with 0.15 s on/off). Hence
        # both, and a cross-check against the counter rather than trusting either.
        "instant_energy_j": instant,
        "counter_energy_j": counter_j,
    }


def mean_present(values: list) -> Optional[float]:
    """Mean of the values that are not None, or None."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summarize_window(samples: Samples, t0: float, t1: float) -> dict[str, Any]:
    """Per-GPU and total summary of [t0, t1] (perf_counter times, e.g. from `mark_time`)."""
    gpus = {uuid: _gpu_window([r for r in samples.rows if r["gpu"] == uuid], t0, t1) for uuid in samples.gpus()}
    parts = list(gpus.values())
    energies = [g["energy_j"] for g in parts]
    total_j = sum(energies) if parts and None not in energies else None
    # Total power per tick: the GPUs of one tick are read within microseconds of each other.
    by_tick: dict[int, float] = {}
    instant_by_tick: dict[int, list] = {}  # tick -> [sum, GPUs that answered]
    for r in samples.rows:
        if t0 <= r["t"] <= t1 and r["power_w"] is not None:
            by_tick[r["tick"]] = by_tick.get(r["tick"], 0.0) + r["power_w"]
        if t0 <= r["t"] <= t1 and r.get("power_instant_w") is not None:
            entry = instant_by_tick.setdefault(r["tick"], [0.0, 0])
            entry[0] += r["power_instant_w"]
            entry[1] += 1
    # Only ticks where every GPU answered, so a sum never leaves out a GPU.
    complete = [total for total, n in instant_by_tick.values() if n == len(parts)]
    counters = [g["counter_energy_j"] for g in parts]
    temps = [g["max_temperature_c"] for g in parts if g["max_temperature_c"] is not None]
    total = {
        "energy_j": total_j,
        "mean_power_w": total_j / (t1 - t0) if total_j is not None and t1 > t0 else None,
        "max_power_w": max(by_tick.values()) if by_tick else None,  # peak of the ~1 s averaged field
        "max_instant_power_w": max(complete) if complete else None,
        "max_temperature_c": max(temps) if temps else None,
        "mean_gpu_util_pct": mean_present([g["mean_gpu_util_pct"] for g in parts]),  # mean over the GPUs
        "throttle_reasons": sorted({n for g in parts for n in g["throttle_reasons"]}),
        "throttle_fraction": {n: max(g["throttle_fraction"].get(n, 0.0) for g in parts)
                              for n in sorted({n for g in parts for n in g["throttle_fraction"]})},
        "samples": sum(g["samples"] for g in parts),
        "counter_energy_j": sum(counters) if parts and None not in counters else None,
    }
    instants = [g["instant_energy_j"] for g in parts]
    total["instant_energy_j"] = sum(instants) if parts and None not in instants else None
    total["cross_check"] = cross_check(total["counter_energy_j"], total_j)
    total["cross_check_instant"] = cross_check(total["counter_energy_j"], total["instant_energy_j"])
    return {"t0": t0, "t1": t1, "duration_s": t1 - t0, "gpus": gpus, "total": total}


def cross_check(counter_j: Optional[float], sampled_j: Optional[float],
                threshold: float = AGREEMENT_THRESHOLD) -> dict[str, Any]:
    """Relative difference of sampled vs counter energy, (sampled - counter) / counter. `agree` is
    None (with a reason) when either number is missing: no verdict is better than a made-up one."""
    if counter_j is None or sampled_j is None:
        return {"relative_difference": None, "agree": None, "threshold": threshold,
                "reason": "counter energy missing" if counter_j is None else "sampled energy missing"}
    if counter_j <= 0:
        return {"relative_difference": None, "agree": None, "threshold": threshold,
                "reason": f"counter energy is {counter_j} J; nothing to compare against"}
    rel = (sampled_j - counter_j) / counter_j
    return {"relative_difference": rel, "agree": abs(rel) <= threshold, "threshold": threshold, "reason": None}


def to_csv(samples: Samples, path: str | Path) -> Path:
    """Tidy timeseries: one 'sample' row per GPU per tick and one 'mark' row per mark, in time order.
    `t_s` is relative to the first sample (marks made before it are negative)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    origin = min((r["t"] for r in samples.rows), default=min((t for _, t in samples.marks), default=0.0))
    header = ["t_s", "kind", "tick", "gpu", *FIELDS, "throttle_reasons", "mark"]
    out = [{"t_s": r["t"] - origin, "kind": "sample", "tick": r["tick"], "gpu": r["gpu"],
            **{f: r.get(f) for f in FIELDS}, "throttle_reasons": "|".join(decode_throttle_reasons(r["throttle_mask"])),
            "mark": ""} for r in samples.rows]
    out += [{"t_s": t - origin, "kind": "mark", "mark": label} for label, t in samples.marks]
    out.sort(key=lambda row: row["t_s"])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        for row in out:
            writer.writerow({k: ("" if v is None else f"{v:.6f}" if k == "t_s" else v) for k, v in row.items()})
    return path
