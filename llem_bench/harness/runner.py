"""Run one experiment on a loaded backend: the experiment's frame around a scenario.

The frame: resident idle power before, then the scenario (scenarios/offline.py: warmup, measured
cycles, prefill and streaming passes), then metrics, statistics, verdict and the result. A power
sampler runs throughout, so every window can be checked against the samples.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.backends.base import Backend
from llem_bench.config.study import Experiment
from llem_bench.energy.idle import note_gpu_work, settle_and_measure
from llem_bench.energy.meter import EnergyMeter
from llem_bench.energy.probe import Probe
from llem_bench.energy.sampler import mean_present
from llem_bench.metrics import ENERGY_METRICS, METRICS, cycle_metrics
from llem_bench.progress import status
from llem_bench.harness.prefix_cache import check_prefix_cache, duplicate_prompts_warning
from llem_bench.harness.roofline import decode_roofline
from llem_bench.stats import summarize
from llem_bench.harness.validity import host_bound_warning, verdict
from llem_bench.results.environment import environment
from llem_bench.scenarios.offline import check_tokens, measure_offline, split_phases
from llem_bench.results.schema import ExperimentResult, MetricSummary
from llem_bench.results.store import utc_now
from llem_bench.workload.prompts import Workload, prepare_workload
from llem_bench.workload.synthetic import checkpoint_dir, is_synthetic

# Throughput variants share one denominator (window time): warn about spread once, on the headline.
# The net metric is checked too: it is a small difference of two large numbers and can be noisy alone.
CV_CHECKED = ("output_tokens_per_s", "energy_per_output_token_j", "energy_per_output_token_net_j")
NET_SHARE_MIN = 0.05  # a net under 5% of gross is within what the idle baseline's error can move


def log(message: str) -> None:
    print(f"llem-bench: {message}", file=sys.stderr, flush=True)


def base_result(experiment: Experiment, run_id: str, started_at: str) -> dict[str, Any]:
    config = experiment.config
    return dict(
        test_id=experiment.test_id, config_hash=experiment.config_hash, repeat=experiment.repeat,
        repeats=experiment.repeats, study=config.study, run_id=run_id,
        backend=config.backend, model=config.model, synthetic=is_synthetic(config.model),
        config=config.canonical(), explicit=experiment.explicit, started_at=started_at,
    )


def failed_result(experiment: Experiment, run_id: str, started_at: str, error: str) -> ExperimentResult:
    return ExperimentResult(**base_result(experiment, run_id, started_at), status="failed", error=error,
                            environment=environment(), finished_at=utc_now())


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
    if config.scenario != "offline":  # serving scenarios measure differently: scenarios/serving.py
        from llem_bench.scenarios.serving import run_serving

        return run_serving(experiment, backend, meter_factory, run_id=run_id, started_at=started_at,
                           model_reused=model_reused, load_s=load_s, idle_before_load=idle_before_load,
                           timeseries_dir=timeseries_dir)
    measurement = config.measurement
    warnings: list[str] = []

    prep_start = time.perf_counter()
    workload = prepare_workload(config.workload, backend.tokenizer)
    prep_s = time.perf_counter() - prep_start
    probe = Probe(backend, measurement.sampler_interval_s)
    meter = _make_meter(meter_factory, backend, probe)
    duplicates = duplicate_prompts_warning(workload)
    if duplicates:
        warnings.append(duplicates)
    try:
        # Idle only serves net energy: without an energy measurement it would be waiting for nothing.
        idle_resident = _idle_resident(probe, measurement.baseline_idle_s) if meter.available else None
        offline = measure_offline(backend, workload, meter, probe, measurement, warnings,
                                  progress=status)
        warmup, cycles, latency = offline.warmup, offline.cycles, offline.latency
    finally:
        note_gpu_work()  # the next idle window waits from here
        samples = probe.sampler.stop() if probe.sampler else None

    power = _power_summary(samples, cycles, probe.reason, meter.source)
    idle_w = (idle_resident or {}).get("mean_power_w") if meter.available else None
    for cycle in cycles:
        cycle.update(cycle_metrics(
            wall_time_s=cycle["wall_time_s"], input_tokens=cycle["input_tokens"], output_tokens=cycle["output_tokens"],
            requests=cycle["requests"], energy_j=cycle["energy_j"], peak_memory_mb=cycle["peak_memory_mb"],
            idle_power_w=idle_w, peak_power_w=cycle.get("peak_power_w")))
    token_check = check_tokens(config.workload.ignore_eos, workload, offline.observed_counts, warnings)
    token_check["prefix_cache"] = check_prefix_cache(getattr(config.backend_config, "reuse_prefix_cache", None),
                                                     offline.cached_prompt_tokens)
    if token_check["prefix_cache"].get("flag"):
        warnings.append(token_check["prefix_cache"]["flag"])
    host_bound = host_bound_warning(power.get("gpu_busy_pct"))
    if host_bound:
        warnings.append(host_bound)
    metrics, unavailable = _summaries(cycles, meter.reason, idle_w is not None, samples is not None)
    net = _net_energy(metrics, cycles, idle_resident, warnings)
    for name in CV_CHECKED:
        summary = metrics[name]
        if summary and summary.cv is not None and summary.cv > 0.05:
            warnings.append(f"{name}: CV {summary.cv:.1%} across cycles is above 5%")
    phases = split_phases(offline.prefill, cycles, workload, meter.reason, backend.name)
    _, peak_method = backend.peak_memory_mb()
    timeseries = _write_timeseries(samples, timeseries_dir, experiment.key)
    validity = verdict(
        energy_available=meter.available, energy_reason=meter.reason, token_ok=token_check["ok"],
        cvs={n: metrics[n].cv if metrics[n] else None for n in CV_CHECKED},
        window_s=min(c["wall_time_s"] for c in cycles), throttle_fraction=power.get("throttle_fraction", {}),
        cross_check=power.get("cross_check"), other_processes=_foreign_processes(meter),
        warmup=warmup, cycles=len(cycles), net_flag=net.get("net_flag"),
        trend=_cycle_trend([c["output_tokens_per_s"] for c in cycles]),
        prefix_cache=token_check["prefix_cache"].get("flag"),
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
        idle={"before_load": idle_before_load, "resident": idle_resident, **net,
              "reason": None if idle_resident else _idle_reason(probe, measurement.baseline_idle_s, meter)},
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
    """Idle power with the model resident, from the energy counter after power stopped falling."""
    if probe.sampler is None or seconds <= 0:
        return None
    return settle_and_measure(probe.sampler, seconds)


def _net_energy(metrics: dict, cycles: list[dict], idle: Optional[dict], warnings: list[str]) -> dict[str, Any]:
    """Widen the net metric's CI by the idle baseline's uncertainty and flag a net that means little.

    The same idle power is subtracted from every cycle, so its error is systematic: it does not shrink
    with more cycles and adds to the cycle spread instead of averaging out:
        half-width = sqrt(h_cycles^2 + (u_idle x mean(window_s / output_tokens))^2)
    """
    name = "energy_per_output_token_net_j"
    summary, gross = metrics.get(name), metrics.get("energy_per_output_token_j")
    if summary is None or idle is None:
        return {"net_method": None}
    u_idle = idle.get("uncertainty_w") or 0.0
    idle_term = u_idle * sum(c["wall_time_s"] / c["output_tokens"] for c in cycles) / len(cycles)
    out: dict[str, Any] = {
        "net_method": "energy - resident idle power x window time (idle from the same energy counter)",
        "net_ci_method": "half-width = sqrt(cycle CI half-width^2 + (idle uncertainty W x mean window s / "
                         "output tokens)^2): the idle error is the same in every cycle",
        "net_idle_term_j": idle_term,
    }
    if summary.ci95_low is not None:
        half = math.hypot((summary.ci95_high - summary.ci95_low) / 2, idle_term)
        summary.ci95_low, summary.ci95_high = summary.mean - half, summary.mean + half
    share = summary.mean / gross.mean if gross and gross.mean else None
    out["net_share_of_gross"] = share
    if share is not None and share <= 0:
        out["net_flag"] = f"net energy is not positive ({summary.mean:.4g} J/token): the idle baseline is above the load"
    elif share is not None and share < NET_SHARE_MIN:
        out["net_flag"] = (f"net energy is {share:.1%} of gross (< {NET_SHARE_MIN:.0%}): within what the idle "
                       "baseline's error can move; read the gross number")
    if out.get("net_flag"):
        warnings.append(out["net_flag"])
    return out


def _cycle_trend(values: list[float]) -> Optional[str]:
    """A monotonic drift across >= 3 cycles larger than the 5% CV limit: the warmup did not finish."""
    if len(values) < 3:
        return None
    rising = all(b > a for a, b in zip(values, values[1:]))
    falling = all(b < a for a, b in zip(values, values[1:]))
    change = (values[-1] - values[0]) / (sum(values) / len(values))
    if (rising or falling) and abs(change) > 0.05:
        return f"output tok/s drifts {change:+.1%} monotonically over the {len(values)} cycles (not warmed up?)"
    return None


def _idle_reason(probe: Probe, seconds: float, meter: EnergyMeter) -> str:
    if not meter.available:
        return f"not measured: energy unavailable ({meter.reason})"
    return "measurement.baseline_idle_s: 0" if seconds <= 0 else f"no power sampler: {probe.reason}"


def _roofline(backend: Backend, workload: Workload, meter: EnergyMeter, phases: dict) -> dict[str, Any]:
    if not hasattr(backend, "model_shape"):
        return {"fraction": None, "reason": f"the {backend.name} backend does not report its model shape"}
    names = [g.get("name") for g in meter.describe().get("gpus", [])] or _gpu_names(backend)
    avg_context = workload.input_tokens / workload.num_requests + workload.output_tokens / 2
    decode = phases.get("decode", {})
    reason = decode.get("reason") or phases.get("reason") or "decode throughput not measured"
    return decode_roofline(backend.model_shape(), names, backend.decode_batch(workload), avg_context,
                           decode.get("tokens_per_s"), layer_sequential=getattr(backend, "layer_sequential", False),
                           no_measurement_reason=f"decode throughput not measured: {reason}")


def _gpu_names(backend: Backend) -> list[str]:
    """GPU names from NVML when the meter has none (measurement.energy: none on a GPU): the roofline
    needs the GPU, not the energy measurement."""
    if not backend.cuda_ordinals():
        return []
    try:
        from llem_bench.energy.gpus import gpu_facts, nvml_handles_for

        return [gpu_facts(h)["name"] for h in nvml_handles_for(backend.cuda_ordinals()).values()]
    except Exception:
        return []


def _power_summary(samples: Any, cycles: list[dict], reason: Optional[str], meter_source: str) -> dict[str, Any]:
    if samples is None:
        return {"reason": f"no power sampler: {reason}"}
    from llem_bench.energy.sampler import cross_check, summarize_window

    windows = []
    for i, cycle in enumerate(cycles):
        window = summarize_window(samples, samples.mark_time("window_start", i), samples.mark_time("window_end", i))
        total = window["total"]
        # Peak from the instantaneous field where every GPU has it; the ~1 s average flattens spikes.
        instant = total["max_instant_power_w"]
        cycle["peak_power_w"] = instant if instant is not None else total["max_power_w"]
        cycle["peak_power_1s_avg_w"] = total["max_power_w"]
        cycle["sampled_energy_j"] = total["energy_j"]
        cycle["cross_check"] = total["cross_check"]
        windows.append(total)
    all_instant = bool(windows) and None not in [w["max_instant_power_w"] for w in windows]
    counter = [c["energy_j"] for c in cycles]
    sampled = [w["energy_j"] for w in windows]
    same_source = meter_source == "nvml_power_samples"
    both = None not in counter and None not in sampled and not same_source
    skipped = {"relative_difference": None, "agree": None, "reason": "same source: the energy is the integrated "
               "power samples (no energy counter), so comparing them with themselves cannot fail"}
    if same_source:
        for cycle in cycles:
            cycle["cross_check"] = skipped
    fractions: dict[str, float] = {}
    for w in windows:
        for name, share in w["throttle_fraction"].items():
            fractions[name] = max(fractions.get(name, 0.0), share)
    return {
        "interval_s": samples.interval_s, "samples": len(samples.rows), "errors": samples.errors,
        "peak_power_field": "power_instant_w (NVML_FI_DEV_POWER_INSTANT)" if all_instant
        else "power_w (nvmlDeviceGetPowerUsage, a ~1 s average: the driver has no instantaneous field)",
        "peak_power_1s_avg_w": max((w["max_power_w"] for w in windows if w["max_power_w"] is not None), default=None),
        "throttle_reasons": sorted({r for w in windows for r in w["throttle_reasons"]}),
        "throttle_fraction": fractions,
        "max_temperature_c": max((w["max_temperature_c"] for w in windows if w["max_temperature_c"] is not None),
                                 default=None),
        "gpu_busy_pct": mean_present([w.get("mean_gpu_util_pct") for w in windows]),
        "cross_check": skipped if same_source else cross_check(sum(counter), sum(sampled)) if both else None,
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
