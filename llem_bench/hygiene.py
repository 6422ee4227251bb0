"""GPU hygiene before an experiment: no leftover memory from earlier work, and power and
temperature back near the session's idle level, so one experiment's heat and leftovers do not
leak into the next one's energy.

Every check returns a dict with an `outcome` line (for the manifest and `timings.hygiene`);
without NVML the checks say "skipped: NVML unavailable (<reason>)" and never wait.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from llem_bench.procstat import stat_fields

# "Near idle": power within 15% + 10 W of the idle reading (the power field is a ~1 s average
# and idles noisily), each GPU within 5 degC of its temperature at session start.
POWER_TOLERANCE, POWER_MARGIN_W, TEMPERATURE_MARGIN_C = 0.15, 10.0, 5
# Seen on an H200: after heavy work the GPU holds ~125 W for minutes against a 90 W idle start, so
# waiting for the target would spend the whole bound before every experiment. When power has moved
# less than this over the last PLATEAU_S and no temperature is still falling, waiting longer will not
# help: stop, and record that it plateaued above the target.
PLATEAU_S, PLATEAU_TOLERANCE, PLATEAU_MARGIN_W = 10.0, 0.02, 3.0


class ResidualMemoryError(RuntimeError):
    """Other processes hold more GPU memory than --llem-max-residual-mb allows (--llem-residual fail)."""


class NvmlGpus:
    """The few NVML reads hygiene needs, over every GPU the machine has, or only over `uuids` (an xdist
    worker pinned to its GPUs must not wait for, or warn about, the GPUs of the other workers).
    Tests pass a fake."""

    def __init__(self, nvml: Any, uuids: Optional[set[str]] = None):
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if uuids is not None:
            self.handles = [h for h in self.handles if _uuid(nvml, h) in uuids]

    def power_w(self) -> float:
        return sum(self.nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1000.0

    def temperatures_c(self) -> list[int]:
        return [self.nvml.nvmlDeviceGetTemperature(h, self.nvml.NVML_TEMPERATURE_GPU) for h in self.handles]

    def processes(self) -> list[tuple[int, float]]:
        """(pid, MiB) of every compute process; memory is unknown (0) where the driver will not say."""
        found = []
        for handle in self.handles:
            try:
                procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:
                continue
            found += [(p.pid, (p.usedGpuMemory or 0) / 2**20) for p in procs]
        return found


def _uuid(nvml: Any, handle: Any) -> str:
    value = nvml.nvmlDeviceGetUUID(handle)
    return value.decode() if isinstance(value, bytes) else str(value)


def open_gpus() -> tuple[Optional[NvmlGpus], Optional[str]]:
    """(gpus, None), or (None, why NVML cannot be used)."""
    try:
        from llem_bench.energy.gpus import nvml_init
        from llem_bench.scaleout.gpus import pinned_uuids

        gpus = NvmlGpus(nvml_init(), pinned_uuids())
    except Exception as exc:
        return None, f"NVML unavailable ({type(exc).__name__}: {exc})"
    if not gpus.handles:
        return None, "no GPU (NVML sees none)"
    return gpus, None


@dataclass(frozen=True)
class IdleReference:
    power_w: float
    temperatures_c: list[int]

    @property
    def power_target_w(self) -> float:
        return self.power_w * (1 + POWER_TOLERANCE) + POWER_MARGIN_W

    @property
    def temperature_targets_c(self) -> list[int]:
        return [t + TEMPERATURE_MARGIN_C for t in self.temperatures_c]


def idle_reference(gpus: NvmlGpus, readings: int = 5, interval_s: float = 0.2) -> IdleReference:
    """Power and temperatures now, before anything is loaded: the level later experiments settle to."""
    power = []
    for i in range(readings):
        power.append(gpus.power_w())
        if i + 1 < readings:
            time.sleep(interval_s)  # spaced readings of a ~1 s average power field, not a wait for an event
    return IdleReference(min(power), gpus.temperatures_c())


def residual_memory(gpus: Optional[NvmlGpus], why_not: Optional[str], max_mb: float) -> dict[str, Any]:
    """GPU memory held by processes that are not this one or its children (a model this process
    keeps resident on purpose, or a vLLM engine core it started, is not residue)."""
    if gpus is None:
        return {"outcome": f"skipped: {why_not}"}
    mine = os.getpid()
    others = [{"pid": pid, "name": _process_name(pid), "used_mb": round(mb)}
              for pid, mb in gpus.processes() if mine not in _ancestors(pid)]
    total = sum(p["used_mb"] for p in others)
    ok = total <= max_mb
    named = ", ".join(f"{p['name']} (pid {p['pid']}, {p['used_mb']} MiB)" for p in others) or "none"
    outcome = (f"{'ok' if ok else 'over limit'}: {total} MiB held by other processes "
               f"(limit {max_mb:.0f} MiB, --llem-max-residual-mb): {named}")
    return {"outcome": outcome, "ok": ok, "other_used_mb": total, "max_mb": max_mb, "other_processes": others}


def settle(gpus: Optional[NvmlGpus], why_not: Optional[str], reference: Optional[IdleReference],
           max_wait_s: float, poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Wait, at most `max_wait_s`, until power and every GPU's temperature are back near idle."""
    if max_wait_s <= 0:
        return {"outcome": "skipped: disabled (--llem-settle-s 0)"}
    if gpus is None:
        return {"outcome": f"skipped: {why_not}"}
    if reference is None:
        return {"outcome": "skipped: no idle reference was taken at session start"}
    start = clock()
    history: list[tuple[float, float, list[int]]] = []
    while True:
        power, temps = gpus.power_w(), gpus.temperatures_c()
        waiting = _not_settled(reference, power, temps)
        waited = clock() - start
        history.append((waited, power, temps))
        plateau = bool(waiting) and _plateaued(history)
        if not waiting or plateau or waited >= max_wait_s:
            break
        sleep(min(poll_s, max_wait_s - waited))  # polling the device, bounded by max_wait_s
    record = {"waited_s": round(waited, 2), "power_w": round(power, 1),
              "target_power_w": round(reference.power_target_w, 1), "temperatures_c": temps,
              "target_temperatures_c": reference.temperature_targets_c, "reached": not waiting,
              "plateaued": plateau}
    if plateau:
        record["outcome"] = (f"plateaued above idle after {waited:.0f} s (no change over {PLATEAU_S:g} s, waiting "
                             f"longer would not help): " + "; ".join(waiting))
    elif waiting:
        record["outcome"] = (f"not settled after {waited:.0f} s (--llem-settle-s {max_wait_s:g}): "
                             + "; ".join(waiting))
    else:
        record["outcome"] = (f"settled after {waited:.1f} s: {power:.0f} W <= {reference.power_target_w:.0f} W, "
                             f"temperatures {temps} within {TEMPERATURE_MARGIN_C} degC of the start")
    return record


def _plateaued(history: list[tuple[float, float, list[int]]]) -> bool:
    """Over the last PLATEAU_S of readings, power stayed within a few percent and no GPU cooled."""
    now = history[-1][0]
    if now < PLATEAU_S:
        return False
    window = [(power, temps) for t, power, temps in history if t >= now - PLATEAU_S]
    powers = [power for power, _ in window]
    flat = max(powers) - min(powers) <= max(PLATEAU_TOLERANCE * max(powers), PLATEAU_MARGIN_W)
    cooling = any(first > last for first, last in zip(window[0][1], window[-1][1]))
    return flat and not cooling


def _not_settled(reference: IdleReference, power: float, temps: list[int]) -> list[str]:
    reasons = []
    if power > reference.power_target_w:
        reasons.append(f"{power:.0f} W > {reference.power_target_w:.0f} W (idle {reference.power_w:.0f} W)")
    for i, (now, target) in enumerate(zip(temps, reference.temperature_targets_c)):
        if now > target:
            reasons.append(f"GPU {i} at {now} degC > {target} degC")
    return reasons


class Hygiene:
    """The checks one session runs before each experiment, with its idle reference."""

    def __init__(self, max_residual_mb: float, on_residual: str, settle_s: float, gpus_opener=open_gpus):
        self.max_residual_mb, self.on_residual, self.settle_s = max_residual_mb, on_residual, settle_s
        self._opener = gpus_opener
        self._opened = False
        self.gpus: Optional[NvmlGpus] = None
        self.why_not: Optional[str] = None
        self.reference: Optional[IdleReference] = None

    def _open(self) -> None:
        # Lazily, at the first experiment: that is before this session loads anything.
        if not self._opened:
            self._opened = True
            self.gpus, self.why_not = self._opener()
            if self.gpus is not None and self.settle_s > 0:
                self.reference = idle_reference(self.gpus)

    def before(self, test_id: str) -> dict[str, Any]:
        """Run the checks; raise ResidualMemoryError in fail mode, warn (returned in the outcome) otherwise."""
        self._open()
        memory = residual_memory(self.gpus, self.why_not, self.max_residual_mb)
        if memory.get("ok") is False and self.on_residual == "fail":
            raise ResidualMemoryError(f"{test_id}: GPU memory {memory['outcome']}; stop those processes, raise "
                                      "--llem-max-residual-mb, or pass --llem-residual warn")
        return {"residual_memory": memory, "settle": settle(self.gpus, self.why_not, self.reference, self.settle_s)}


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"  # another PID namespace (e.g. a container) or already gone


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        parsed = stat_fields(pid)
        try:
            pid = int(parsed[1][1])  # field 4: ppid
        except (TypeError, ValueError, IndexError):  # unreadable (None) or malformed
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
