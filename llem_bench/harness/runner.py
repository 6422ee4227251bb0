"""Run one experiment on a loaded backend: full-shape warmup until stable, then N measured cycles,
each a CUDA-synchronised energy window that repeats the workload until it is long enough."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.backends.base import Backend
from llem_bench.config.study import Experiment
from llem_bench.energy.meter import EnergyMeter
from llem_bench.harness.metrics import ENERGY_METRICS, METRICS, cycle_metrics
from llem_bench.harness.stats import cv, summarize
from llem_bench.results.environment import environment
from llem_bench.results.schema import ExperimentResult, MetricSummary
from llem_bench.results.store import utc_now
from llem_bench.workload.prompts import Workload, prepare_workload
from llem_bench.workload.synthetic import checkpoint_dir, is_synthetic

HIGH_CV = 0.05
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
    meter_factory: Callable[[list[int]], EnergyMeter],
    *,
    run_id: str,
    started_at: str,
    model_reused: bool,
    load_s: float,
) -> ExperimentResult:
    config = experiment.config
    measurement = config.measurement
    warnings: list[str] = []

    prep_start = time.perf_counter()
    workload = prepare_workload(config.workload, backend.tokenizer)
    prep_s = time.perf_counter() - prep_start
    meter = meter_factory(backend.cuda_ordinals())

    warmup = _warm_up(backend, workload, measurement.warmup, warnings)

    cycles = []
    observed_counts: list[int] = []
    for index in range(measurement.cycles):
        cycle, counts = _measure_cycle(backend, workload, meter, measurement.min_window_s)
        cycles.append(cycle)
        observed_counts.extend(counts)
        log(f"{experiment.test_id}: cycle {index + 1}/{measurement.cycles}: "
            f"{cycle['output_tokens_per_s']:.1f} out tok/s, {cycle['passes']} pass(es) in {cycle['wall_time_s']:.2f} s"
            + (f", {cycle['energy_j']:.1f} J" if cycle["energy_j"] is not None else ""))

    token_check = _check_tokens(config.workload.ignore_eos, workload, observed_counts, warnings)
    metrics, unavailable = _summaries(cycles, meter.reason)
    for name in CV_CHECKED:
        summary = metrics[name]
        if summary and summary.cv is not None and summary.cv > HIGH_CV:
            warnings.append(f"{name}: CV {summary.cv:.1%} across cycles is above {HIGH_CV:.0%}")
    if measurement.min_window_s < 1.0 and meter.available:
        warnings.append(f"min_window_s {measurement.min_window_s} s: the NVML counter updates every ~100 ms, "
                        "so short windows carry several % quantisation error")
    _, peak_method = backend.peak_memory_mb()

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
        warnings=warnings,
        environment=environment(),
        finished_at=utc_now(),
    )


def _warm_up(backend: Backend, workload: Workload, spec: Any, warnings: list[str]) -> dict[str, Any]:
    """Whole-workload passes (the exact shapes that will be measured) until pass times settle."""
    times: list[float] = []
    stable: Optional[bool] = None
    while len(times) < spec.max_runs:
        backend.synchronize()
        start = time.perf_counter()
        backend.run_pass(workload)
        backend.synchronize()
        times.append(time.perf_counter() - start)
        last = times[-3:]
        if len(times) >= max(spec.min_runs, 3) and (cv(last) or 0.0) <= spec.cv_target:
            stable = True
            break
    if stable is None and spec.max_runs >= 3:
        stable = False
        warnings.append(f"warmup did not stabilise: CV of the last 3 pass times {cv(times[-3:]):.1%} > "
                        f"{spec.cv_target:.0%} after {len(times)} runs (raise measurement.warmup.max_runs)")
    return {"runs": len(times), "times_s": [round(t, 4) for t in times], "stable": stable,
            "cv_last3": cv(times[-3:]) if len(times) >= 3 else None, "cv_target": spec.cv_target,
            "note": None if spec.max_runs >= 3 else "stability not checked: max_runs < 3"}


def _measure_cycle(backend: Backend, workload: Workload, meter: EnergyMeter, min_window_s: float):
    counts: list[int] = []
    passes = 0
    backend.reset_peak_memory()
    backend.synchronize()
    meter.begin()
    start = time.perf_counter()
    while True:
        counts.extend(backend.run_pass(workload).output_tokens)
        passes += 1
        backend.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= min_window_s:
            break
    window = meter.end()
    peak_mb, _ = backend.peak_memory_mb()
    values = cycle_metrics(
        wall_time_s=elapsed, input_tokens=workload.input_tokens * passes, output_tokens=sum(counts),
        requests=len(counts), energy_j=window.joules, peak_memory_mb=peak_mb,
    )
    cycle = {"passes": passes, "output_tokens": sum(counts), "requests": len(counts),
             "energy_j": window.joules, "per_gpu_energy_j": window.per_gpu_joules, **values}
    return cycle, counts


def _check_tokens(ignore_eos: bool, workload: Workload, counts: list[int], warnings: list[str]) -> dict[str, Any]:
    wrong = [c for c in counts if c != workload.output_tokens]
    check = {"expected_per_request": workload.output_tokens, "requests": len(counts),
             "requests_off_plan": len(wrong), "enforced": ignore_eos}
    if wrong and ignore_eos:
        warnings.append(f"{len(wrong)} of {len(counts)} requests did not generate exactly "
                        f"{workload.output_tokens} tokens (e.g. {wrong[0]})")
    check["ok"] = not (wrong and ignore_eos)
    return check


def _summaries(cycles: list[dict], energy_reason: Optional[str]):
    metrics: dict[str, Optional[MetricSummary]] = {}
    unavailable: dict[str, str] = {}
    for name in METRICS:
        summary = summarize([c[name] for c in cycles])
        metrics[name] = MetricSummary(**summary) if summary else None
        if summary is None:
            unavailable[name] = energy_reason if name in ENERGY_METRICS and energy_reason else "not measured"
    return metrics, unavailable


def _synthetic_info(model: str) -> Optional[dict]:
    if not is_synthetic(model):
        return None
    marker = Path(checkpoint_dir(model)) / "llem_synthetic.json"
    return json.loads(marker.read_text()) if marker.is_file() else None
