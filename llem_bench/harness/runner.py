"""Run one experiment on a loaded backend.

Order (docs/methodology.md): resident idle power, full-shape warmup until pass times settle,
N measured cycles (each a CUDA-synchronised energy window that repeats the workload until it
lasts min_window_s), a prefill-only window for the prefill/decode split, one streaming pass for
latency. A power sampler runs throughout, so every window can be checked against the samples.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.backends.base import Backend
from llem_bench.config.study import Experiment
from llem_bench.energy.meter import EnergyMeter
from llem_bench.harness.latency import summarize_requests
from llem_bench.harness.metrics import ENERGY_METRICS, METRICS, cycle_metrics
from llem_bench.harness.roofline import decode_roofline
from llem_bench.harness.stats import cv, summarize
from llem_bench.harness.validity import verdict
from llem_bench.results.environment import environment
from llem_bench.results.schema import ExperimentResult, MetricSummary
from llem_bench.results.store import utc_now
from llem_bench.workload.prompts import Workload, prepare_workload
from llem_bench.workload.synthetic import checkpoint_dir, is_synthetic

# Throughput variants share one denominator (window time): warn about spread once, on the headline.
CV_CHECKED = ("output_tokens_per_s", "energy_per_output_token_j")


def log(message: str) -> None:
    print(f"llem-bench: {message}", file=sys.stderr, flush=True)


def base_result(experiment: Experiment, run_id: str, started_at: str) -> dict[str, Any]:
    config = experiment.config
    return dict(
        test_id=experiment.test_id, config_hash=experiment.config_hash, study=config.study, run_id=run_id,
        backend=config.backend, model=config.model, synthetic=is_synthetic(config.model),
        config=config.canonical(), explicit=experiment.explicit, started_at=started_at,
    )


def failed_result(experiment: Experiment, run_id: str, started_at: str, error: str) -> ExperimentResult:
    return ExperimentResult(**base_result(experiment, run_id, started_at), status="failed", error=error,
                            environment=environment(), finished_at=utc_now())


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


def run_experiment(
    experiment: Experiment,
    backend: Backend,
    meter_factory: Callable[..., EnergyMeter],
    *,
    run_id: str,
    started_at: str,
    model_reused: bool,
    load_s: float,
    idle_before_load: Optional[dict] = None,
    timeseries_dir: Optional[Path] = None,
) -> ExperimentResult:
    config = experiment.config
    measurement = config.measurement
    warnings: list[str] = []

    prep_start = time.perf_counter()
    workload = prepare_workload(config.workload, backend.tokenizer)
    prep_s = time.perf_counter() - prep_start
    probe = Probe(backend, measurement.sampler_interval_s)
    meter = _make_meter(meter_factory, backend, probe)
    try:
        idle_resident = _idle_resident(probe, measurement.baseline_idle_s)
        probe.mark("warmup_start")
        warmup = _warm_up(backend, workload, measurement.warmup, warnings)
        probe.mark("warmup_end")
        cycles, observed_counts = [], []
        for index in range(measurement.cycles):
            cycle, counts = _measure_cycle(backend, workload, meter, probe, measurement.min_window_s)
            cycles.append(cycle)
            observed_counts.extend(counts)
            log(f"{experiment.test_id}: cycle {index + 1}/{measurement.cycles}: "
                f"{cycle['output_tokens'] / cycle['wall_time_s']:.1f} out tok/s, {cycle['passes']} pass(es) in "
                f"{cycle['wall_time_s']:.2f} s" + (f", {cycle['energy_j']:.1f} J" if cycle["energy_j"] is not None else ""))
        prefill = _prefill_window(backend, workload, meter, probe, measurement) if measurement.phases else None
        latency = _streaming(backend, workload) if measurement.latency else {"reason": "measurement.latency: false"}
    finally:
        samples = probe.sampler.stop() if probe.sampler else None

    power = _power_summary(samples, cycles, probe.reason)
    idle_w = (idle_resident or {}).get("mean_power_w")
    for cycle in cycles:
        cycle.update(cycle_metrics(
            wall_time_s=cycle["wall_time_s"], input_tokens=cycle["input_tokens"], output_tokens=cycle["output_tokens"],
            requests=cycle["requests"], energy_j=cycle["energy_j"], peak_memory_mb=cycle["peak_memory_mb"],
            idle_power_w=idle_w, peak_power_w=cycle.get("peak_power_w")))
    token_check = _check_tokens(config.workload.ignore_eos, workload, observed_counts, warnings)
    metrics, unavailable = _summaries(cycles, meter.reason, idle_w is not None, samples is not None)
    for name in CV_CHECKED:
        summary = metrics[name]
        if summary and summary.cv is not None and summary.cv > 0.05:
            warnings.append(f"{name}: CV {summary.cv:.1%} across cycles is above 5%")
    phases = _phases(prefill, cycles, workload, meter.reason)
    _, peak_method = backend.peak_memory_mb()
    timeseries = _write_timeseries(samples, timeseries_dir, experiment.test_id)
    validity = verdict(
        energy_available=meter.available, energy_reason=meter.reason, token_ok=token_check["ok"],
        cvs={n: metrics[n].cv if metrics[n] else None for n in CV_CHECKED},
        window_s=min(c["wall_time_s"] for c in cycles), throttling=power.get("throttle_reasons", []),
        cross_check=power.get("cross_check"), other_processes=_foreign_processes(meter),
    )
    return ExperimentResult(
        **base_result(experiment, run_id, started_at),
        status="ok",
        synthetic_info=_synthetic_info(config.model),
        effective=backend.effective_config(),
        workload=workload.summary(),
        energy=meter.describe(),
        metrics=metrics,
        unavailable=unavailable,
        cycles=cycles,
        warmup=warmup,
        timings={"load_s": round(load_s, 3), "model_reused": model_reused, "workload_prep_s": round(prep_s, 3),
                 "warmup_s": round(sum(warmup["times_s"]), 3)},
        token_check=token_check,
        peak_memory_method=peak_method,
        idle={"before_load": idle_before_load, "resident": idle_resident,
              "net_method": "energy - resident idle power x window time" if idle_w is not None else None,
              "reason": None if idle_resident else _idle_reason(probe, measurement.baseline_idle_s)},
        power=power,
        latency=latency,
        phases=phases,
        roofline=_roofline(backend, workload, meter, phases),
        validity=validity,
        timeseries=timeseries,
        warnings=warnings,
        environment=environment(),
        finished_at=utc_now(),
    )


def _make_meter(meter_factory: Callable[..., EnergyMeter], backend: Backend, probe: Probe) -> EnergyMeter:
    return meter_factory(backend.cuda_ordinals(), probe.sampler)


def _idle_resident(probe: Probe, seconds: float) -> Optional[dict]:
    if probe.sampler is None or seconds <= 0:
        return None
    from llem_bench.energy.idle import idle_from_window

    t0 = probe.mark("idle_start")
    time.sleep(seconds)  # the idle measurement interval itself
    t1 = probe.mark("idle_end")
    probe.sampler.wait_for_sample_after(t1)
    return idle_from_window(probe.sampler.snapshot(), t0, t1)


def _idle_reason(probe: Probe, seconds: float) -> str:
    return "measurement.baseline_idle_s: 0" if seconds <= 0 else f"no power sampler: {probe.reason}"


def _warm_up(backend: Backend, workload: Workload, spec: Any, warnings: list[str]) -> dict[str, Any]:
    """Whole-workload passes (the exact shapes that will be measured) until pass times settle."""
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
        if len(times) >= max(spec.min_runs, 3) and (cv(times[-3:]) or 0.0) <= spec.cv_target:
            stable = True
            break
    if stable is None and spec.max_runs >= 3:
        stable = False
        warnings.append(f"warmup did not stabilise: CV of the last 3 pass times {cv(times[-3:]):.1%} > "
                        f"{spec.cv_target:.0%} after {len(times)} runs (raise measurement.warmup.max_runs)")
    return {"runs": len(times), "times_s": [round(t, 4) for t in times], "stable": stable,
            "cv_last3": cv(times[-3:]) if len(times) >= 3 else None, "cv_target": spec.cv_target,
            "note": None if spec.max_runs >= 3 else "stability not checked: max_runs < 3"}


def _window(backend: Backend, meter: EnergyMeter, probe: Probe, label: str, min_window_s: float,
            one_pass: Callable[[], list[int]]) -> tuple[dict[str, Any], list[int]]:
    """Repeat `one_pass` inside one synchronised energy window until it lasts min_window_s."""
    counts: list[int] = []
    passes = 0
    backend.reset_peak_memory()
    backend.synchronize()
    probe.mark(f"{label}_start")
    meter.begin()
    start = time.perf_counter()
    while True:
        counts.extend(one_pass())
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
    return result, counts


def _measure_cycle(backend: Backend, workload: Workload, meter: EnergyMeter, probe: Probe, min_window_s: float):
    cycle, counts = _window(backend, meter, probe, "window", min_window_s,
                            lambda: backend.run_pass(workload).output_tokens)
    peak_mb, _ = backend.peak_memory_mb()
    cycle.update(output_tokens=sum(counts), requests=len(counts), input_tokens=workload.input_tokens * cycle["passes"],
                 peak_memory_mb=peak_mb)
    return cycle, counts


def _prefill_window(backend: Backend, workload: Workload, meter: EnergyMeter, probe: Probe, measurement: Any):
    if not hasattr(backend, "run_prefill_pass"):
        return {"reason": f"the {backend.name} backend has no prefill-only pass"}
    window, _ = _window(backend, meter, probe, "prefill", max(0.5, measurement.min_window_s / 2),
                        lambda: backend.run_prefill_pass(workload).output_tokens)
    return window


def _streaming(backend: Backend, workload: Workload) -> dict[str, Any]:
    if not hasattr(backend, "run_streaming_pass"):
        return {"reason": f"the {backend.name} backend does not stream yet"}
    summary = summarize_requests(backend.run_streaming_pass(workload))
    summary["method"] = "one extra pass after the cycles, outside the energy windows; " + backend.streaming_method
    return summary


def _phases(prefill: Optional[dict], cycles: list[dict], workload: Workload, energy_reason: Optional[str]) -> dict[str, Any]:
    if not prefill or "reason" in prefill:
        return {"reason": (prefill or {}).get("reason", "measurement.phases: false")}
    passes = sum(c["passes"] for c in cycles)
    full_s = sum(c["wall_time_s"] for c in cycles) / passes
    pre_s = prefill["wall_time_s"] / prefill["passes"]
    decode_tokens = workload.expected_output_tokens - workload.num_requests  # the first token is prefill's
    out: dict[str, Any] = {
        "method": "prefill = the same batches stopped after their first token; decode = full pass - prefill",
        "prefill": {"time_s": pre_s, "tokens": workload.input_tokens},
        "decode": {"time_s": full_s - pre_s, "tokens": decode_tokens,
                   "tokens_per_s": decode_tokens / (full_s - pre_s) if full_s > pre_s else None},
    }
    energies = [c["energy_j"] for c in cycles]
    if prefill["energy_j"] is not None and None not in energies:
        full_j, pre_j = sum(energies) / passes, prefill["energy_j"] / prefill["passes"]
        out["prefill"].update(energy_j=pre_j, energy_per_input_token_j=pre_j / workload.input_tokens)
        out["decode"].update(energy_j=full_j - pre_j,
                             energy_per_token_j=(full_j - pre_j) / decode_tokens if decode_tokens else None)
    else:
        out["energy_reason"] = energy_reason or "energy unavailable in a window"
    return out


def _roofline(backend: Backend, workload: Workload, meter: EnergyMeter, phases: dict) -> dict[str, Any]:
    if not hasattr(backend, "model_shape"):
        return {"fraction": None, "reason": f"the {backend.name} backend does not report its model shape"}
    names = [g.get("name") for g in meter.describe().get("gpus", [])]
    avg_context = workload.input_tokens / workload.num_requests + workload.output_tokens / 2
    decode_tps = phases.get("decode", {}).get("tokens_per_s")
    return decode_roofline(backend.model_shape(), names, backend.decode_batch(workload), avg_context, decode_tps)


def _power_summary(samples: Any, cycles: list[dict], reason: Optional[str]) -> dict[str, Any]:
    if samples is None:
        return {"reason": f"no power sampler: {reason}"}
    from llem_bench.energy.sampler import summarize_window

    windows = []
    for i, cycle in enumerate(cycles):
        window = summarize_window(samples, samples.mark_time("window_start", i), samples.mark_time("window_end", i))
        cycle["peak_power_w"] = window["total"]["max_power_w"]
        cycle["sampled_energy_j"] = window["total"]["energy_j"]
        cycle["cross_check"] = window["total"]["cross_check"]
        windows.append(window["total"])
    counter = [c["energy_j"] for c in cycles]
    sampled = [w["energy_j"] for w in windows]
    from llem_bench.energy.sampler import cross_check

    both = None not in counter and None not in sampled
    return {
        "interval_s": samples.interval_s, "samples": len(samples.rows), "errors": samples.errors,
        "throttle_reasons": sorted({r for w in windows for r in w["throttle_reasons"]}),
        "max_temperature_c": max((w["max_temperature_c"] for w in windows if w["max_temperature_c"] is not None),
                                 default=None),
        "cross_check": cross_check(sum(counter), sum(sampled)) if both else None,
        "cross_check_instant": cross_check(sum(counter), sum(w["instant_energy_j"] for w in windows))
        if both and None not in [w["instant_energy_j"] for w in windows] else None,
    }


def _foreign_processes(meter: EnergyMeter) -> list[str]:
    from llem_bench.hygiene import foreign_gpu_processes

    return foreign_gpu_processes(getattr(meter, "handles", {}))


def _write_timeseries(samples: Any, folder: Optional[Path], test_id: str) -> Optional[str]:
    if samples is None or folder is None:
        return None
    from llem_bench.energy.sampler import to_csv

    path = to_csv(samples, Path(folder) / f"{test_id}.csv")
    return f"{Path(folder).name}/{path.name}"


def _check_tokens(ignore_eos: bool, workload: Workload, counts: list[int], warnings: list[str]) -> dict[str, Any]:
    wrong = [c for c in counts if c != workload.output_tokens]
    check = {"expected_per_request": workload.output_tokens, "requests": len(counts),
             "requests_off_plan": len(wrong), "enforced": ignore_eos}
    if wrong and ignore_eos:
        warnings.append(f"{len(wrong)} of {len(counts)} requests did not generate exactly "
                        f"{workload.output_tokens} tokens (e.g. {wrong[0]})")
    check["ok"] = not (wrong and ignore_eos)
    return check


def _summaries(cycles: list[dict], energy_reason: Optional[str], has_idle: bool, has_sampler: bool):
    metrics: dict[str, Optional[MetricSummary]] = {}
    unavailable: dict[str, str] = {}
    for name in METRICS:
        summary = summarize([c[name] for c in cycles])
        metrics[name] = MetricSummary(**summary) if summary else None
        if summary is not None:
            continue
        if name in ENERGY_METRICS and energy_reason:
            unavailable[name] = energy_reason
        elif name == "energy_per_output_token_net_j" and not has_idle:
            unavailable[name] = "no idle baseline (needs the power sampler and measurement.baseline_idle_s > 0)"
        elif name == "peak_power_w" and not has_sampler:
            unavailable[name] = "no power sampler"
        else:
            unavailable[name] = "not measured"
    return metrics, unavailable


def _synthetic_info(model: str) -> Optional[dict]:
    if not is_synthetic(model):
        return None
    marker = Path(checkpoint_dir(model)) / "llem_synthetic.json"
    return json.loads(marker.read_text()) if marker.is_file() else None
