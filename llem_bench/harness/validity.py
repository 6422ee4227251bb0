"""One verdict per result, with the reasons: valid, warning (usable, read the reasons) or invalid."""

from __future__ import annotations

from typing import Any, Optional

from llem_bench.metrics import HOST_BOUND_PCT

HIGH_CV = 0.05
INVALID_CV = 0.25
SHORT_WINDOW_S = 5.0
MIN_CYCLES = 2  # below this there is no spread, so no CI and no CV: never a valid measurement
# Net energy is derived (gross minus idle): a noisy net is a warning, it does not invalidate the gross numbers.
WARN_ONLY_CV = frozenset({"energy_per_output_token_net_j"})
THROTTLE_WARN = 0.05  # share of a window's samples with a throttling reason that makes it a warning


def host_bound_warning(gpu_busy_pct: Optional[float]) -> Optional[str]:
    """A result whose GPU idled most of its windows measures the host as much as the GPU: its throughput
    follows the CPU's speed and load (on the lent H200s, tok/s tracked a 22-29% busy share cycle by cycle)."""
    if gpu_busy_pct is None or gpu_busy_pct >= HOST_BOUND_PCT:
        return None
    return (f"GPU busy only {gpu_busy_pct:.0f}% of the measured windows (NVML utilization): host-bound (CPU, "
            "kernel launches or batch too small), so throughput tracks the host and varies with its load; CUDA "
            "graphs, a larger batch or a less loaded host move it")


def verdict(*, energy_available: bool, energy_reason: Optional[str], token_ok: bool, cvs: dict[str, Optional[float]],
            window_s: float, throttle_fraction: dict[str, float], cross_check: Optional[dict],
            other_processes: list[str], warmup: Optional[dict], cycles: Optional[int],
            net_flag: Optional[str] = None, trend: Optional[str] = None,
            prefix_cache: Optional[str] = None) -> dict[str, Any]:
    invalid, warning = [], []
    if not token_ok:
        invalid.append("token counts do not match the plan")
    if cycles is None:
        pass  # a scenario without cycles (serving: one steady-state window)
    elif cycles < MIN_CYCLES:
        invalid.append(f"{cycles} measured cycle: no spread, so no CI or CV (measurement.cycles >= {MIN_CYCLES})")
    elif cycles == 2:
        warning.append("2 cycles: the 95% CI uses t = 12.7 and the CV is one difference (measurement.cycles >= 3)")
    if warmup is not None:
        if warmup.get("stable") is False:
            cv_last3 = warmup.get("cv_last3")
            warning.append("warmup did not stabilise" + (f" (CV of the last 3 pass times {cv_last3:.1%})"
                                                          if cv_last3 is not None else ""))
        elif warmup.get("stable") is None:
            warning.append(f"warmup stability not checked ({warmup.get('note') or 'no check'})")
    if trend:
        warning.append(trend)
    if net_flag:
        warning.append(net_flag)
    if prefix_cache:  # cache hits inside a pass: the prefill of those prompts is missing from the energy
        warning.append(prefix_cache)
    if not energy_available:
        warning.append(f"energy unavailable: {energy_reason}")
    elif window_s < SHORT_WINDOW_S:
        warning.append(f"measured windows of {window_s:.1f} s are short for a ~100 ms energy counter "
                       f"(>= {SHORT_WINDOW_S:.0f} s keeps quantisation under ~2%)")
    for name, cv in cvs.items():
        if cv is None:
            continue
        if name in WARN_ONLY_CV and cv > HIGH_CV:
            warning.append(f"{name} CV {cv:.1%} across cycles (> {HIGH_CV:.0%}; a small difference of two "
                           "large numbers: read the gross energy)")
        elif cv > INVALID_CV:
            invalid.append(f"{name} CV {cv:.1%} across cycles (> {INVALID_CV:.0%})")
        elif cv > HIGH_CV:
            warning.append(f"{name} CV {cv:.1%} across cycles (> {HIGH_CV:.0%})")
    throttled = {name: share for name, share in throttle_fraction.items() if share >= THROTTLE_WARN}
    if throttled:
        warning.append("GPU throttled in the measured windows: " +
                       ", ".join(f"{name} {share:.0%} of samples" for name, share in sorted(throttled.items())))
    if cross_check and cross_check.get("agree") is False:
        warning.append(f"energy counter and integrated power samples disagree by "
                       f"{cross_check['relative_difference']:+.1%} (> {cross_check['threshold']:.0%})")
    if other_processes:
        warning.append(f"other processes on the GPU: {', '.join(other_processes)}")
    return {"verdict": "invalid" if invalid else "warning" if warning else "valid", "reasons": invalid + warning}
