"""Run one experiment on a loaded backend: the experiment's frame around a scenario.

The frame: resident idle power before, then the scenario (scenarios/offline.py: warmup, measured
cycles, prefill and streaming passes), then metrics, statistics, verdict and the result. A power
sampler runs throughout, so every window can be checked against the samples.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.backends.base import Backend
from llem_bench.config.study import Experiment
from llem_bench.energy.meter import EnergyMeter
from llem_bench.energy.probe import Probe
from llem_bench.metrics import ENERGY_METRICS, METRICS, cycle_metrics
from llem_bench.harness.roofline import decode_roofline
from llem_bench.stats import summarize
from llem_bench.harness.validity import verdict
from llem_bench.results.environment import environment
from llem_bench.scenarios.offline import check_tokens, measure_offline, split_phases
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
    try:
        idle_resident = _idle_resident(probe, measurement.baseline_idle_s)
        offline = measure_offline(backend, workload, meter, probe, measurement, warnings,
                                  progress=lambda message: log(f"{experiment.test_id}: {message}"))
        warmup, cycles, latency = offline.warmup, offline.cycles, offline.latency
    finally:
        samples = probe.sampler.stop() if probe.sampler else None

    power = _power_summary(samples, cycles, probe.reason)
    idle_w = (idle_resident or {}).get("mean_power_w")
    for cycle in cycles:
        cycle.update(cycle_metrics(
            wall_time_s=cycle["wall_time_s"], input_tokens=cycle["input_tokens"], output_tokens=cycle["output_tokens"],
            requests=cycle["requests"], energy_j=cycle["energy_j"], peak_memory_mb=cycle["peak_memory_mb"],
            idle_power_w=idle_w, peak_power_w=cycle.get("peak_power_w")))
    token_check = check_tokens(config.workload.ignore_eos, workload, offline.observed_counts, warnings)
    metrics, unavailable = _summaries(cycles, meter.reason, idle_w is not None, samples is not None)
    for name in CV_CHECKED:
        summary = metrics[name]
        if summary and summary.cv is not None and summary.cv > 0.05:
            warnings.append(f"{name}: CV {summary.cv:.1%} across cycles is above 5%")
    phases = split_phases(offline.prefill, cycles, workload, meter.reason)
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
