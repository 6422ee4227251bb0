"""The offline scenario: a fixed batch of requests submitted at once, measured in energy windows.

Order (docs/methodology.md): full-shape warmup until pass times settle, N measured cycles (each a
synchronised energy window that repeats the workload until it lasts min_window_s), a prefill-only
window for the prefill/decode split, streaming passes for latency. The prefill window and the
streaming passes are optional: a failure there is recorded as {"reason": ...} and a warning, and
the measured cycles are kept.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

from llem_bench.backends.base import Backend, PassOutput
from llem_bench.config.experiment import STABILITY_MIN_RUNS
from llem_bench.energy.meter import EnergyMeter
from llem_bench.energy.probe import Probe
from llem_bench.harness.latency import compare_throughput, summarize_passes
from llem_bench.stats import cv
from llem_bench.workload.prompts import Workload


@dataclasses.dataclass
class OfflineMeasurement:
    warmup: dict[str, Any]
    cycles: list[dict[str, Any]]
    observed_counts: list[int]
    prefill: Optional[dict[str, Any]]
    latency: dict[str, Any]
    cached_prompt_tokens: Optional[list[int]] = None  # per request of the cycles; None: not reported


def measure_offline(backend: Backend, workload: Workload, meter: EnergyMeter, probe: Probe, measurement: Any,
                    warnings: list[str], progress: Callable[..., None]) -> OfflineMeasurement:
    probe.mark("warmup_start")
    warmup = _warm_up(backend, workload, measurement.warmup, warnings, progress)
    probe.mark("warmup_end")
    cycles, observed_counts, cached = [], [], []
    for index in range(measurement.cycles):
        # said before the window opens: nothing is printed inside it
        progress(f"cycle {index + 1}/{measurement.cycles}: measuring a window of >= {measurement.min_window_s:g} s",
                 window_s=measurement.min_window_s)
        cycle, outputs = _measure_cycle(backend, workload, meter, probe, measurement.min_window_s)
        cycles.append(cycle)
        for out in outputs:
            observed_counts.extend(out.output_tokens)
            cached = None if cached is None or out.cached_prompt_tokens is None else cached + out.cached_prompt_tokens
        progress(f"cycle {index + 1}/{measurement.cycles}: "
                 f"{cycle['output_tokens'] / cycle['wall_time_s']:.1f} out tok/s, {cycle['passes']} pass(es) in "
                 f"{cycle['wall_time_s']:.2f} s" + (f", {cycle['energy_j']:.1f} J" if cycle["energy_j"] is not None else ""))
    prefill = _optional("prefill window", warnings, lambda: _prefill_window(backend, workload, meter, probe, measurement)) \
        if measurement.phases else None
    latency = _optional("streaming passes", warnings, lambda: _streaming(backend, workload, measurement.latency_passes,
                                                                         cycles, warnings, progress)) \
        if measurement.latency else {"reason": "measurement.latency: false"}
    return OfflineMeasurement(warmup, cycles, observed_counts, prefill, latency, cached)


def _warm_up(backend: Backend, workload: Workload, spec: Any, warnings: list[str],
             progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Whole-workload passes (the exact shapes that will be measured) until pass times settle.

    Stability = CV of the last 3 pass times <= cv_target, never counting the cold first pass (it pays
    for allocation, compilation, cache fills and would keep the CV high forever), and no trend: the
    last pass may not be slower or faster than the first of the three by more than cv_target."""
    times: list[float] = []
    stable: Optional[bool] = None
    if spec.output_tokens is not None and spec.output_tokens != workload.output_tokens:
        warnings.append(f"warmup generated {spec.output_tokens} tokens per request, the measurement "
                        f"{workload.output_tokens}: not a full-shape warmup, so the first cycles may pay for "
                        "shapes the warmup never ran")
        workload = dataclasses.replace(workload, output_tokens=spec.output_tokens)
    while len(times) < spec.max_runs:
        backend.synchronize()
        start = time.perf_counter()
        backend.run_pass(workload)
        backend.synchronize()
        times.append(time.perf_counter() - start)
        progress(f"warmup {len(times)} (at most {spec.max_runs}): pass took {times[-1]:.2f} s")
        if len(times) >= max(spec.min_runs, STABILITY_MIN_RUNS) and _settled(times[1:][-3:], spec.cv_target):
            stable = True
            break
    checked = spec.max_runs >= STABILITY_MIN_RUNS
    last3 = times[1:][-3:]
    if stable is None and checked:
        stable = False
        warnings.append(f"warmup did not stabilise: CV of the last 3 pass times {cv(last3):.1%} (first pass "
                        f"excluded; target {spec.cv_target:.0%}, no trend) after {len(times)} runs (raise "
                        "measurement.warmup.max_runs)")
    return {"runs": len(times), "times_s": [round(t, 4) for t in times], "stable": stable,
            "cv_last3": cv(last3) if len(last3) >= 3 else None, "cv_target": spec.cv_target,
            "excludes_first_pass": True,
            "note": None if checked else f"stability not checked: max_runs {spec.max_runs} < {STABILITY_MIN_RUNS} "
                                         "(a fixed warmup; the verdict says so)"}


def _settled(last3: list[float], cv_target: float) -> bool:
    if len(last3) < 3:
        return False
    trend = abs(last3[-1] - last3[0]) / (sum(last3) / 3)
    return (cv(last3) or 0.0) <= cv_target and trend <= cv_target


def _window(backend: Backend, meter: EnergyMeter, probe: Probe, label: str, min_window_s: float,
            one_pass: Callable[[], PassOutput]) -> tuple[dict[str, Any], list[PassOutput]]:
    """Repeat `one_pass` inside one synchronised energy window until it lasts min_window_s."""
    outputs: list[PassOutput] = []
    passes = 0
    backend.reset_peak_memory()
    backend.synchronize()
    probe.mark(f"{label}_start")
    meter.begin()
    start = time.perf_counter()
    while True:
        outputs.append(one_pass())
        passes += 1
        backend.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= min_window_s:
            break
    window = meter.end()
    probe.mark(f"{label}_end")
    result = {"passes": passes, "wall_time_s": elapsed, "energy_j": window.joules,
              "per_gpu_energy_j": window.per_gpu_joules}
    if window.counter_joules is not None:
        result["nvml_counter_energy_j"] = window.counter_joules
    return result, outputs


def _measure_cycle(backend: Backend, workload: Workload, meter: EnergyMeter, probe: Probe, min_window_s: float):
    cycle, outputs = _window(backend, meter, probe, "window", min_window_s, lambda: backend.run_pass(workload))
    counts = [n for out in outputs for n in out.output_tokens]
    peak_mb, _ = backend.peak_memory_mb()
    cycle.update(output_tokens=sum(counts), requests=len(counts), input_tokens=workload.input_tokens * cycle["passes"],
                 peak_memory_mb=peak_mb)
    return cycle, outputs


def _prefill_window(backend: Backend, workload: Workload, meter: EnergyMeter, probe: Probe, measurement: Any):
    if not hasattr(backend, "run_prefill_pass"):
        return {"reason": f"the {backend.name} backend has no prefill-only pass"}
    # The same floor as the measured windows: a shorter one is dominated by the ~100 ms counter steps.
    window, _ = _window(backend, meter, probe, "prefill", measurement.min_window_s,
                        lambda: backend.run_prefill_pass(workload))
    return window


def _optional(phase: str, warnings: list[str], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an optional phase after the cycles; its failure must not throw the measured cycles away."""
    try:
        return run()
    except Exception as exc:
        reason = f"{phase} failed: {type(exc).__name__}: {exc}"
        warnings.append(reason.splitlines()[0][:500])
        return {"reason": reason}


def _streaming(backend: Backend, workload: Workload, passes: int, cycles: list[dict[str, Any]],
               warnings: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    """`passes` streaming passes after the cycles, outside the energy windows; no output in between."""
    if not hasattr(backend, "run_streaming_pass"):
        return {"reason": f"the {backend.name} backend does not stream yet"}
    progress(f"streaming passes for latency: {passes}")
    runs = [backend.run_streaming_pass(workload) for _ in range(passes)]
    summary = summarize_passes(runs)
    summary["method"] = (f"{passes} extra pass(es) after the cycles, outside the energy windows; "
                         + backend.streaming_method)
    summary["throughput_check"], warning = compare_throughput(
        summary["streaming_output_tokens_per_s"], [c["output_tokens"] / c["wall_time_s"] for c in cycles])
    if warning:
        warnings.append(warning)
    return summary


def split_phases(prefill: Optional[dict], cycles: list[dict], workload: Workload, energy_reason: Optional[str],
                 backend_name: str = "") -> dict[str, Any]:
    """Prefill = the prefill-only window per pass; decode = full pass - prefill, per pass, with the
    observed token counts of the measured cycles (not the plan: with ignore_eos off they differ)."""
    if not prefill or "reason" in prefill:
        return {"reason": (prefill or {}).get("reason", "measurement.phases: false")}
    passes = sum(c["passes"] for c in cycles)
    full_s = sum(c["wall_time_s"] for c in cycles) / passes
    pre_s = prefill["wall_time_s"] / prefill["passes"]
    # Observed per pass; the first token of each request is prefill's.
    decode_tokens = (sum(c["output_tokens"] for c in cycles) - sum(c["requests"] for c in cycles)) / passes
    method = "prefill = the same batches stopped after their first token; decode = full pass - prefill"
    if backend_name == "vllm":
        method += (" (approximate for vLLM: with more requests than max_num_seqs, or chunked prefill, prefill "
                   "and decode overlap in the full pass, so the prefill-only pass is not its prefill share)")
    decode: dict[str, Any] = {"time_s": None, "tokens": decode_tokens, "tokens_per_s": None}
    out: dict[str, Any] = {"method": method, "prefill": {"time_s": pre_s, "tokens": workload.input_tokens},
                           "decode": decode}
    if decode_tokens <= 0:
        decode["reason"] = "no decode: every request generated a single token"
    elif full_s <= pre_s:
        decode["reason"] = (f"the prefill-only pass ({pre_s:.4f} s) took as long as the full pass ({full_s:.4f} s): "
                            "decode time is below what the windows resolve")
    else:
        decode.update(time_s=full_s - pre_s, tokens_per_s=decode_tokens / (full_s - pre_s))
    energies = [c["energy_j"] for c in cycles]
    if prefill["energy_j"] is not None and None not in energies:
        full_j, pre_j = sum(energies) / passes, prefill["energy_j"] / prefill["passes"]
        out["prefill"].update(energy_j=pre_j, energy_per_input_token_j=pre_j / workload.input_tokens)
        if decode.get("reason"):
            decode["energy_j"] = decode["energy_per_token_j"] = None
        elif full_j <= pre_j:
            decode.update(energy_j=None, energy_per_token_j=None,
                          energy_reason=f"prefill-only pass energy ({pre_j:.3f} J) >= full pass ({full_j:.3f} J)")
        else:
            decode.update(energy_j=full_j - pre_j, energy_per_token_j=(full_j - pre_j) / decode_tokens)
    else:
        out["energy_reason"] = energy_reason or "energy unavailable in a window"
    return out


def check_tokens(ignore_eos: bool, workload: Workload, counts: list[int], warnings: list[str]) -> dict[str, Any]:
    wrong = [c for c in counts if c != workload.output_tokens]
    check = {"expected_per_request": workload.output_tokens, "requests": len(counts),
             "requests_off_plan": len(wrong), "enforced": ignore_eos}
    if wrong and ignore_eos:
        warnings.append(f"{len(wrong)} of {len(counts)} requests did not generate exactly "
                        f"{workload.output_tokens} tokens (e.g. {wrong[0]})")
    check["ok"] = not (wrong and ignore_eos)
    return check
