"""The serving scenarios: requests arrive at a rate (open loop) or N stay in flight (closed loop),
each streamed from an engine (an OpenAI-compatible server on localhost); metrics and energy over
the steady-state window (serving/window.py), ramp-up and drain reported beside it.

Order: resident idle power, warmup requests (discarded), the measured run with the power sampler
marking its edges, then window, metrics and verdict. Every figure of the window (throughput,
latency, energy) is computed from events inside the same window.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.config.study import Experiment
from llem_bench.energy.meter import EnergyMeter
from llem_bench.energy.probe import Probe
from llem_bench.harness.latency import distribution
from llem_bench.metrics import ENERGY_METRICS, METRICS, SERVING_ENERGY_METRICS, SERVING_METRICS, cycle_metrics
from llem_bench.results.schema import ExperimentResult, MetricSummary
from llem_bench.results.store import utc_now
from llem_bench.serving.arrivals import arrival_offsets
from llem_bench.serving.client import LoadRun, RequestRecord, run_load, run_load_processes
from llem_bench.procstat import cpu_use, group_cpu_seconds
from llem_bench.serving.window import (stationarity, steady_window, step_series, tokens_between,
                                       window_warnings)
from llem_bench.workload.lengths import PlannedRequest, plan_requests, plan_summary

CLIENT_CPU_WARN = 0.8
SERVER_STAMPS_REASON = "per-request queueing delay needs the in-process engine (a server reports no per-request stamps)"
INPROCESS_CPU_REASON = "the in-process engine has no server process (it runs in the worker)"
SERVER_CPU_WARN = 0.9  # a server's main process near one core: its event loop may hold back streamed tokens


def build_plan(config: Any, tokenizer: Any) -> list[PlannedRequest]:
    serving = config.serving
    n = serving.num_requests
    open_loop = config.scenario == "serving"
    offsets = arrival_offsets(n, serving.rate_per_s, serving.arrival, serving.burstiness, serving.seed) \
        if open_loop else [0.0] * n
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return plan_requests(serving, config.workload, len(tokenizer), special, offsets)


def _warmup_plan(plan: list[PlannedRequest], count: int) -> list[PlannedRequest]:
    # Different prompts from the measured ones (reversed ids), so the prefix cache gains nothing.
    return [PlannedRequest(i, 0.0, r.prompt_token_ids[::-1], r.output_tokens) for i, r in enumerate(plan[:count])]


def measure_serving(experiment: Experiment, backend: Any, meter: EnergyMeter, probe: Probe,
                    warnings: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    config = experiment.config
    serving = config.serving
    plan = build_plan(config, backend.tokenizer)
    open_loop = config.scenario == "serving"
    concurrency = serving.concurrency

    send, scrape, loop = backend.sender(config)
    warm = None
    if serving.warmup_requests:
        start = time.perf_counter()
        warm_run = run_load(send, _warmup_plan(plan, serving.warmup_requests),
                            concurrency=concurrency or serving.warmup_requests, open_loop=False, loop=loop)
        failed = [r.error for r in warm_run.records if not r.ok]
        if failed:
            backend.check_alive()
            raise RuntimeError(f"warmup request failed: {failed[0]}")
        warm = {"requests": serving.warmup_requests, "wall_time_s": round(time.perf_counter() - start, 3)}
    # Identical prompts in the previous experiment (same seed, same server) must not hit the cache.
    reuse = getattr(config.vllm, "reuse_prefix_cache", False)
    if reuse:
        prefix = {"reset": False, "reason": "vllm.reuse_prefix_cache: true"}
    else:
        prefix = backend.reset_prefix_cache()
    progress(f"{len(plan)} requests, {_load_text(config)}")
    group, no_group = backend.process_group() if hasattr(backend, "process_group") else (None, INPROCESS_CPU_REASON)
    cpu_before = group_cpu_seconds(group) if group else None
    probe.mark("run_start")
    meter.begin()
    if serving.client_processes > 1:
        load = run_load_processes(backend.base_url, backend.payload_args(config), plan,
                                  processes=serving.client_processes, concurrency=concurrency, open_loop=open_loop,
                                  scrape_s=serving.scrape_interval_s)
    else:
        load = run_load(send, plan, concurrency=concurrency, open_loop=open_loop, scrape=scrape,
                        scrape_s=serving.scrape_interval_s, loop=loop)
    total_energy = meter.end()
    probe.mark("run_end")
    server_cpu = (cpu_use(cpu_before, group_cpu_seconds(group), load.end - load.start, group) if group
                  else {"reason": no_group})
    failed = [r for r in load.records if not r.ok]
    # a server that died mid-run fails the experiment with its log tail, not with its requests' errors
    backend.check_alive(grace_s=5.0 if failed else 0.0)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(plan)} requests failed, e.g. request {failed[0].index}: "
                           f"{failed[0].error}")
    if not reuse and not prefix["reset"]:  # checked, where the server reports its cache hits
        prefix.update(cache_hits(load.records))
        if prefix.get("cached_prompt_tokens") is None:
            warnings.append(f"prefix cache not reset before the run ({prefix['reason']}): prompts an earlier "
                            "experiment sent to this engine may hit it")
        elif prefix["cached_prompt_tokens"]:
            warnings.append(f"prefix cache not reset before the run ({prefix['reason']}): the server reports "
                            f"{prefix['cached_prompt_tokens']} prompt tokens of {prefix['requests_with_hits']} "
                            "requests served from its cache, prefill the run did not do")
    return {"plan": plan, "load": load, "warmup": warm, "total_energy": total_energy, "prefix_cache": prefix,
            "server_cpu": server_cpu}


def cache_hits(records: list[RequestRecord]) -> dict[str, Any]:
    """Prompt tokens the server says came from its prefix cache (usage.prompt_tokens_details.cached_tokens),
    so a cache that could not be reset is checked instead of assumed; {} when a request lacks the field."""
    reported = [r.cached_prompt_tokens for r in records]
    if not reported or None in reported:
        return {}
    return {"cached_prompt_tokens": sum(reported), "requests_with_hits": sum(1 for n in reported if n),
            "checked_by": "usage.prompt_tokens_details.cached_tokens of every request"}


def _load_text(config: Any) -> str:
    serving = config.serving
    if config.scenario == "concurrency":
        return f"closed loop, {serving.concurrency} in flight"
    cap = f", at most {serving.concurrency} in flight" if serving.concurrency else ""
    return f"open loop, rate {serving.rate} req/s ({serving.arrival}){cap}"


def describe(config: Any) -> str:
    """One line for `llem validate`."""
    serving = config.serving
    lengths = lambda spec, default: spec.dist if spec else f"fixed {default}"  # noqa: E731
    return (f"{config.scenario}: {serving.num_requests} requests, {_load_text(config)}; input "
            f"{lengths(serving.input_tokens, config.workload.input_tokens or config.workload.max_input_tokens)}, "
            f"output {lengths(serving.output_tokens, config.workload.output_tokens)} tokens; engine {serving.engine}; "
            f"energy={config.measurement.energy}")


# --- analysis of one run ---------------------------------------------------------------------------

def request_latencies(records: list[RequestRecord], t0: float, t1: float) -> dict[str, list[tuple[float, tuple, int]]]:
    """Per-request latencies (ms) of the requests that belong to [t0, t1] (see SERVING_METRICS), as
    distribution() samples (value, stamp key, pass 0): every request has its own stamps; ITL is one
    value per delivery (gap / tokens in it), never one gap counted once per token."""
    ttft, itl, tpot, e2e = [], [], [], []
    for i, r in enumerate(records):
        if t0 <= r.first_token <= t1:
            ttft.append(((r.first_token - r.sent) * 1e3, (i, "first"), 0))
        for (a, b), n in zip(zip(r.chunk_times, r.chunk_times[1:]), r.chunk_tokens[1:]):
            if t0 <= b <= t1:
                itl.append(((b - a) * 1e3 / n, (i, b), 0))
        if t0 <= r.finished <= t1:
            e2e.append(((r.finished - r.sent) * 1e3, (i, "end"), 0))
            if r.output_tokens > 1:
                tpot.append(((r.chunk_times[-1] - r.first_token) * 1e3 / (r.output_tokens - 1), (i, "end"), 0))
    return {"ttft_ms": ttft, "itl_ms": itl, "tpot_ms": tpot, "e2e_latency_ms": e2e}


def good_requests(records: list[RequestRecord], slo: Any, t0: float, t1: float) -> Optional[int]:
    """Requests finished in [t0, t1] meeting every objective that is set; None when none is set."""
    if slo.ttft_ms is None and slo.itl_ms is None and slo.e2e_ms is None:
        return None
    good = 0
    for r in records:
        if not t0 <= r.finished <= t1:
            continue
        ttft = (r.first_token - r.sent) * 1e3
        tpot = (r.chunk_times[-1] - r.first_token) * 1e3 / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
        e2e = (r.finished - r.sent) * 1e3
        if (slo.ttft_ms is None or ttft <= slo.ttft_ms) and (slo.itl_ms is None or tpot <= slo.itl_ms) \
                and (slo.e2e_ms is None or e2e <= slo.e2e_ms):
            good += 1
    return good


def queue_time_ms(scrapes: list[dict[str, Any]]) -> Optional[float]:
    key_sum, key_count = "vllm:request_queue_time_seconds_sum", "vllm:request_queue_time_seconds_count"
    have = [s for s in scrapes if key_sum in s and key_count in s]
    if len(have) < 2 or have[-1][key_count] <= have[0][key_count]:
        return None
    return (have[-1][key_sum] - have[0][key_sum]) / (have[-1][key_count] - have[0][key_count]) * 1e3


def token_check(records: list[RequestRecord], ignore_eos: bool, warnings: list[str]) -> dict[str, Any]:
    off = [r for r in records if r.output_tokens != r.planned_output_tokens]
    check = {"expected": "each request's planned output length", "requests": len(records),
             "requests_off_plan": len(off), "enforced": ignore_eos,
             "examples": [{"index": r.index, "planned": r.planned_output_tokens, "got": r.output_tokens} for r in off[:5]],
             # where each count came from: the server's usage, the engine's own outputs, or (a server that
             # sends no usage) one token per streamed event with text, which undercounts multi-token events
             "counted_by": dict(Counter(r.counted_by or "none" for r in records))}
    if off and ignore_eos:
        warnings.append(f"{len(off)} of {len(records)} requests did not generate their planned output length "
                        f"(e.g. request {off[0].index}: {off[0].output_tokens} of {off[0].planned_output_tokens})")
    check["ok"] = not (off and ignore_eos)
    return check


def energy_between(samples: Any, t0: float, t1: float, reason: Optional[str]) -> dict[str, Any]:
    """GPU energy of [t0, t1]: the energy counter interpolated at both edges (the sampler keeps
    timestamped readings), else integrated power samples; null with the reason when neither exists."""
    if samples is None or not samples.rows:
        return {"energy_j": None, "reason": reason or "no power sampler"}
    from llem_bench.energy.sampler import summarize_window

    total = summarize_window(samples, t0, t1)["total"]
    # Peak from the instantaneous field where the driver has it; the ~1 s average hides short peaks.
    instant = total["max_instant_power_w"] is not None
    peak = {"peak_power_w": total["max_instant_power_w"] if instant else total["max_power_w"],
            "peak_power_field": "power_instant_w" if instant else "power_w (~1 s average)",
            "throttle_fraction": total["throttle_fraction"], "throttle_reasons": total["throttle_reasons"],
            "max_temperature_c": total["max_temperature_c"], "gpu_busy_pct": total["mean_gpu_util_pct"]}
    if total["counter_energy_j"] is not None:
        return {"energy_j": total["counter_energy_j"], "method": "energy counter interpolated at the window edges",
                "sampled_energy_j": total["energy_j"], "cross_check": total["cross_check"], **peak}
    if total["energy_j"] is not None:
        return {"energy_j": total["energy_j"], "method": "power samples integrated (no energy counter)", **peak}
    return {"energy_j": None, "reason": "the power samples do not cover the window"}


def analyse(config: Any, load: LoadRun, samples: Any, energy_reason: Optional[str], idle_w: Optional[float],
            warnings: list[str]) -> dict[str, Any]:
    records = load.records
    first = [r.first_token for r in records]
    finish = [r.finished for r in records]
    closed = config.serving.concurrency if config.scenario == "concurrency" else None
    window = steady_window(first, finish, load.start, load.end, plateau=closed)
    decoding = step_series(list(zip(first, finish)))
    in_flight = step_series([(r.sent, r.finished) for r in records])
    times, counts = [r.chunk_times for r in records], [r.chunk_tokens for r in records]
    segments: dict[str, Any] = {}
    edges = [("ramp_up", load.start, window["start"]), ("steady", window["start"], window["end"]),
             ("drain", window["end"], load.end)] if window["start"] is not None else [("whole_run", load.start, load.end)]
    for name, t0, t1 in edges:
        segments[name] = {"start_s": t0 - load.start, "duration_s": t1 - t0,
                          "output_tokens": tokens_between(times, counts, t0, t1, closed=t1 == load.end),
                          **energy_between(samples, t0, t1, energy_reason)}
    if window["start"] is None:
        warnings.extend(window_warnings(window))
        return {"window": window, "segments": segments, "metrics": {}, "cycle": None}
    t0, t1 = window["start"], window["end"]
    window["stationarity"] = stationarity(decoding, times, counts, t0, t1)
    warnings.extend(window_warnings(window))
    steady = segments["steady"]
    finished = [r for r in records if t0 <= r.finished <= t1]
    input_tokens = sum(r.input_tokens for r in finished)
    cycle = {"wall_time_s": t1 - t0, "energy_j": steady["energy_j"], "output_tokens": steady["output_tokens"],
             "requests": len(finished), "input_tokens": input_tokens, "peak_memory_mb": None}
    cycle.update(cycle_metrics(wall_time_s=t1 - t0, input_tokens=input_tokens, output_tokens=steady["output_tokens"],
                               requests=len(finished), energy_j=steady["energy_j"], peak_memory_mb=None,
                               idle_power_w=idle_w, peak_power_w=steady.get("peak_power_w")))
    metrics: dict[str, Optional[float]] = {}
    omitted: dict[str, str] = {}  # percentiles left out for too few samples, with the reason

    def add(name: str, dist: Optional[dict], quantities: tuple[str, ...]) -> None:
        for q in quantities:
            metrics[f"{name}_{q}"] = dist[q] if dist else None
            if dist and q in dist.get("omitted", {}):
                omitted[f"{name}_{q}"] = dist["omitted"][q]

    for name, values in request_latencies(records, t0, t1).items():
        add(name, distribution(values), ("mean", "p50", "p90", "p99"))
    good = good_requests(records, config.serving.slo, t0, t1)
    metrics["goodput_requests_per_s"] = good / (t1 - t0) if good is not None else None
    metrics["goodput_per_j"] = good / steady["energy_j"] if good is not None and steady["energy_j"] else None
    queues = [(r.engine_queue_ms, (i, "queue"), 0) for i, r in enumerate(records)
              if r.engine_queue_ms is not None and t0 <= r.finished <= t1]
    metrics["queue_time_ms_mean"] = sum(q for q, _, _ in queues) / len(queues) if queues else queue_time_ms(load.scrapes)
    add("queue_time_ms", distribution(queues), ("p50", "p90", "p99"))
    metrics["client_cpu_fraction"] = load.busiest_cpu_fraction
    return {"window": window, "segments": segments, "metrics": metrics, "omitted": omitted, "cycle": cycle,
            "good_requests": good, "in_flight_series": in_flight, "decoding_series": decoding}


def summaries(cycle: Optional[dict], serving_metrics: dict[str, Optional[float]], energy_reason: Optional[str],
              slo_set: bool, queue_reason: str, omitted: Optional[dict[str, str]], stamps_reason: str,
              memory_reason: str):
    """One value per metric (the steady window), as MetricSummary so reports and compare read it."""
    from llem_bench.stats import summarize

    metrics: dict[str, Optional[MetricSummary]] = {}
    unavailable: dict[str, str] = {}
    values = {**{m: (cycle or {}).get(m) for m in METRICS}, **{m: serving_metrics.get(m) for m in SERVING_METRICS}}
    for name, value in values.items():
        summary = summarize([value]) if value is not None else None
        metrics[name] = MetricSummary(**summary) if summary else None
        if summary is not None:
            continue
        if cycle is None:
            unavailable[name] = "no steady-state window"
        elif name in (omitted or {}):
            unavailable[name] = (omitted or {})[name]
        elif name in (*ENERGY_METRICS, *SERVING_ENERGY_METRICS) and energy_reason:
            unavailable[name] = energy_reason
        elif name.startswith("goodput") and not slo_set:
            unavailable[name] = "no serving.slo objective set"
        elif name == "energy_per_output_token_net_j":
            unavailable[name] = "no idle baseline (needs the power sampler and measurement.baseline_idle_s > 0)"
        elif name == "queue_time_ms_mean":
            unavailable[name] = queue_reason
        elif name.startswith("queue_time_ms_"):
            unavailable[name] = stamps_reason
        elif name == "peak_memory_mb":
            unavailable[name] = memory_reason
        else:
            unavailable[name] = "not measured"
    return metrics, unavailable


def write_requests(folder: Optional[Path], test_id: str, load: LoadRun, analysis: dict[str, Any]) -> Optional[str]:
    """Per-request timestamps (relative to the run start) and the running-request timelines, for plots."""
    if folder is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    origin = load.start
    rel = lambda t: None if t is None else t - origin  # noqa: E731
    doc = {
        "origin": "run start (perf_counter)", "run_s": load.end - origin,
        "window": [rel(analysis["window"].get("start")), rel(analysis["window"].get("end"))],
        "requests": [{**r.to_json(), "scheduled": rel(r.scheduled), "sent": rel(r.sent), "first_token": rel(r.first_token),
                      "finished": rel(r.finished), "chunk_times": [rel(t) for t in r.chunk_times]} for r in load.records],
        "in_flight": [[rel(t), n] for t, n in analysis.get("in_flight_series", [])],
        "decoding": [[rel(t), n] for t, n in analysis.get("decoding_series", [])],
        "scrapes": [{**s, "t": rel(s["t"])} for s in load.scrapes],
    }
    path = folder / f"{test_id}.requests.json"
    path.write_text(json.dumps(doc))
    return f"{folder.name}/{path.name}"


def run_serving(experiment: Experiment, backend: Any, meter_factory: Callable[..., EnergyMeter], *, run_id: str,
                started_at: str, model_reused: bool, load_s: float, idle_before_load: Optional[dict] = None,
                timeseries_dir: Optional[Path] = None) -> ExperimentResult:
    """The experiment frame of runner.run_experiment, around the serving measurement."""
    from llem_bench.harness import runner
    from llem_bench.harness.validity import verdict
    from llem_bench.results.environment import environment

    config = experiment.config
    measurement = config.measurement
    warnings: list[str] = []
    probe = Probe(backend, measurement.sampler_interval_s)
    meter = runner._make_meter(meter_factory, backend, probe)
    try:
        idle_resident = runner._idle_resident(probe, measurement.baseline_idle_s)
        run = measure_serving(experiment, backend, meter, probe, warnings,
                              progress=lambda m: runner.log(f"{experiment.test_id}: {m}"))
    finally:
        samples = probe.sampler.stop() if probe.sampler else None
    load: LoadRun = run["load"]
    energy_reason = meter.reason or (None if samples is not None else f"no power sampler: {probe.reason}")
    idle_w = (idle_resident or {}).get("mean_power_w")
    analysis = analyse(config, load, samples, energy_reason, idle_w, warnings)
    check = token_check(load.records, config.workload.ignore_eos, warnings)
    cpu = analysis["metrics"].get("client_cpu_fraction")
    if cpu is not None and cpu > CLIENT_CPU_WARN:
        warnings.append(f"a load-generator process used {cpu:.0%} of a core: it may be the bottleneck (raise "
                        "serving.client_processes)")
    server_cpu = run["server_cpu"]
    leader = next((p for p in server_cpu.get("processes", []) if p["leader"]), None)
    if analysis["cycle"] is not None:
        analysis["metrics"]["server_cpu_fraction"] = leader["cpu_fraction"] if leader else None
    if leader and (leader["cpu_fraction"] or 0) > SERVER_CPU_WARN:
        warnings.append(f"the server's main process ({leader['name']}, pid {leader['pid']}) used "
                        f"{leader['cpu_fraction']:.0%} of a core over the run: where it serves every stream from one "
                        "event loop, it may be what delays first tokens (TTFT), not the engine")
    server_cpu_reason = {} if leader else {"server_cpu_fraction": server_cpu.get("reason", "the server's main process "
                                                                                 "exited before the run's end")}
    if hasattr(backend, "queue_stamps_reason"):  # the in-process engine: vLLM's own per-request stamps
        mean_reason = stamps_reason = backend.queue_stamps_reason()
    else:
        stamps_reason = SERVER_STAMPS_REASON
        mean_reason = ("no request was queued between the first and last scrape"
                       if any("vllm:request_queue_time_seconds_count" in s for s in load.scrapes)
                       else "the server exposes no vllm:request_queue_time_seconds histogram")
    memory_reason = backend.peak_memory_mb()[1]
    metrics, unavailable = summaries(
        analysis["cycle"], analysis["metrics"], energy_reason, analysis.get("good_requests") is not None,
        mean_reason, {**analysis.get("omitted", {}), **server_cpu_reason}, stamps_reason, memory_reason)
    window = analysis["window"]
    steady = analysis["segments"].get("steady", {})
    validity = verdict(
        energy_available=meter.available, energy_reason=meter.reason, token_ok=check["ok"], cvs={},
        window_s=window.get("duration_s") or 0.0, throttle_fraction=steady.get("throttle_fraction", {}),
        cross_check=None, other_processes=runner._foreign_processes(meter), warmup=None,
        cycles=None)  # one steady-state window, not cycles: its spread comes from measurement.repeats
    for w in window_warnings(window):
        validity["reasons"].append(w)
        if validity["verdict"] == "valid":
            validity["verdict"] = "warning"
    timeseries = runner._write_timeseries(samples, timeseries_dir, experiment.key)
    requests_file = write_requests(timeseries_dir, experiment.key, load, analysis)
    total = run["total_energy"]
    return ExperimentResult(
        **runner.base_result(experiment, run_id, started_at),
        status="ok",
        synthetic_info=runner._synthetic_info(config.model),
        effective=backend.effective_config(),
        workload={"scenario": config.scenario, **plan_summary(run["plan"]), "load": _load_text(config)},
        energy=meter.describe(),
        metrics=metrics,
        unavailable=unavailable,
        cycles=[analysis["cycle"]] if analysis["cycle"] else [],
        warmup=run["warmup"] or {"requests": 0},
        timings={"load_s": round(load_s, 3), "model_reused": model_reused, "run_s": round(load.end - load.start, 3)},
        token_check=check,
        peak_memory_method=memory_reason,
        idle={"before_load": idle_before_load, "resident": idle_resident,
              "reason": None if idle_resident else runner._idle_reason(probe, measurement.baseline_idle_s, meter)},
        power={"reason": f"no power sampler: {probe.reason}"} if samples is None else
        {"interval_s": samples.interval_s, "samples": len(samples.rows), "errors": samples.errors,
         # the steady window's, as the offline results give their windows' (the report's power table reads them);
         # a low GPU busy share is no warning here: at a light request rate the GPU idles by design
         **{k: steady[k] for k in ("throttle_reasons", "throttle_fraction", "max_temperature_c", "gpu_busy_pct",
                                   "cross_check") if k in steady}},
        serving={
            "window": {k: v for k, v in window.items()},
            "segments": analysis["segments"],
            "whole_run": {"wall_time_s": load.end - load.start, "energy_j": total.joules,
                          "output_tokens": sum(r.output_tokens for r in load.records),
                          "requests": len(load.records)},
            "client": {"cpu_s": load.client_cpu_s, "cpu_fraction": analysis["metrics"].get("client_cpu_fraction"),
                       "process_cpu_s": load.process_cpu_s,
                       "send_lag_ms": distribution([((r.sent - r.scheduled) * 1e3, (i, "sent"), 0)
                                             for i, r in enumerate(load.records)]),
                       "processes": config.serving.client_processes},
            "server_cpu": server_cpu,
            "engine_gauges": _gauge_summary(load.scrapes, window),
            "prefix_cache": run["prefix_cache"],
            "requests_file": requests_file,
        },
        validity=validity,
        timeseries=timeseries,
        warnings=warnings,
        environment=environment(),
        finished_at=utc_now(),
    )


def _gauge_summary(scrapes: list[dict[str, Any]], window: dict[str, Any]) -> dict[str, Any]:
    """The engine's own running/waiting counts inside the window (vLLM /metrics), beside the client's view."""
    if not scrapes:
        return {"reason": "no /metrics scrapes (serving.scrape_interval_s: 0 or the server has none)"}
    inside = [s for s in scrapes if window.get("start") is not None and window["start"] <= s["t"] <= window["end"]]
    out: dict[str, Any] = {"scrapes": len(scrapes), "in_window": len(inside)}
    for key in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                "llamacpp:requests_processing", "llamacpp:requests_deferred"):
        values = [s[key] for s in inside if key in s]
        if values:
            out[key] = {"mean": sum(values) / len(values), "max": max(values), "min": min(values)}
    return out
