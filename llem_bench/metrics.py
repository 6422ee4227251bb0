"""Metric definitions: the one place that turns measured counts, times and energy into numbers.

Denominators are fixed here: output tokens are the generated tokens counted per sequence
(never padded widths); requests are completed requests; time is the CUDA-synchronised window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

@dataclass(frozen=True)
class Metric:
    """One metric's definition, read by the harness, the reports, the exports and the gate."""

    unit: str
    higher_is_better: bool
    description: str  # how it is measured
    energy: bool = False  # needs a GPU energy measurement


METRICS: dict[str, Metric] = {
    "output_tokens_per_s": Metric("tok/s", True, "generated tokens / window wall time"),
    "total_tokens_per_s": Metric("tok/s", True, "(prompt + generated tokens) / window wall time"),
    "requests_per_s": Metric("req/s", True, "completed requests / window wall time"),
    "energy_per_output_token_j": Metric("J", False, "GPU energy in the window / generated tokens", energy=True),
    "energy_per_output_token_net_j": Metric(
        "J", False, "(GPU energy - resident idle power x window time) / generated tokens; idle power from the "
        "same energy counter after power stopped falling; the CI adds the idle uncertainty", energy=True),
    "energy_per_request_j": Metric("J", False, "GPU energy in the window / completed requests", energy=True),
    "avg_power_w": Metric("W", False, "GPU energy in the window / window wall time", energy=True),
    "peak_power_w": Metric("W", False, "highest instantaneous GPU power sampled in the window (NVML field "
                           "power_instant_w, NVML_FI_DEV_POWER_INSTANT, summed over GPUs per tick; the ~1 s average "
                           "power_w where the driver lacks it, named in power.peak_power_field; the 1 s average "
                           "peak is kept as power.peak_power_1s_avg_w)", energy=True),
    "wall_time_s": Metric("s", False, "window wall time (CUDA-synchronised edges)"),
    "peak_memory_mb": Metric("MiB", False, "peak memory in the window (method recorded in the result)"),
}

ENERGY_METRICS = tuple(name for name, metric in METRICS.items() if metric.energy)

# power.gpu_busy_pct (NVML utilization over the measured windows) under this share: the host sets the pace, so
# throughput follows the CPU's speed and load. The verdict warns per result, compare per pair.
HOST_BOUND_PCT = 50.0


def cycle_metrics(
    *,
    wall_time_s: float,
    input_tokens: int,
    output_tokens: int,
    requests: int,
    energy_j: Optional[float],
    peak_memory_mb: Optional[float],
    idle_power_w: Optional[float] = None,
    peak_power_w: Optional[float] = None,
) -> dict[str, Optional[float]]:
    if wall_time_s <= 0:
        raise ValueError("window wall time must be positive")
    if output_tokens <= 0 or requests <= 0:
        raise ValueError("a measured window must complete at least one request with output")
    per = (lambda x: energy_j / x) if energy_j is not None else (lambda x: None)
    net_j = energy_j - idle_power_w * wall_time_s if energy_j is not None and idle_power_w is not None else None
    return {
        "output_tokens_per_s": output_tokens / wall_time_s,
        "total_tokens_per_s": (input_tokens + output_tokens) / wall_time_s,
        "requests_per_s": requests / wall_time_s,
        "energy_per_output_token_j": per(output_tokens),
        "energy_per_output_token_net_j": net_j / output_tokens if net_j is not None else None,
        "energy_per_request_j": per(requests),
        "avg_power_w": per(wall_time_s),
        "peak_power_w": peak_power_w if energy_j is not None else None,
        "wall_time_s": wall_time_s,
        "peak_memory_mb": peak_memory_mb,
    }


# --- serving scenarios (scenarios/serving.py) --------------------------------------------------------
# The offline metrics above are computed over the steady-state window of a serving run (one "cycle":
# the window); these are the serving-only ones, also over that window. Latency metrics are in ms.
SERVING_METRICS: dict[str, Metric] = {
    **{f"{name}_{q}": Metric("ms", False, f"{q} of {what}, requests of the steady-state window ({rule})")
       for name, what, rule in (
           ("ttft_ms", "time to first token (request sent -> first streamed token)", "first token in the window"),
           ("itl_ms", "inter-token latency (gap between streamed events / tokens in the later event)",
            "gaps ending in the window"),
           ("tpot_ms", "time per output token after the first ((last token - first token) / (tokens - 1))",
            "finished in the window"),
           ("e2e_latency_ms", "end-to-end latency (request sent -> stream done)", "finished in the window"))
       for q in ("mean", "p50", "p90", "p99")},
    "goodput_requests_per_s": Metric("req/s", True, "requests finished in the window that met every serving.slo "
                                     "objective / window time"),
    "goodput_per_j": Metric("req/J", True, "requests finished in the window that met every SLO / GPU energy in the "
                            "window", energy=True),
    "queue_time_ms_mean": Metric("ms", False, "engine-side queueing delay (queued -> scheduled): per request "
                                 "from vLLM's own stamps in-process, finished in the window; in server mode the mean "
                                 "of the server's vllm:request_queue_time_seconds histogram over the run"),
    **{f"queue_time_ms_{q}": Metric("ms", False, f"{q} of the engine-side queueing delay, requests finished in the "
                                    "window (in-process engine only: a server does not report it per request)")
       for q in ("p50", "p90", "p99")},
    "client_cpu_fraction": Metric("1", False, "CPU time of the busiest load-generator process's event loop / run "
                                  "wall time (near 1 = the client may be the bottleneck)"),
    "server_cpu_fraction": Metric("1", False, "CPU time of the server's main process (the group leader the suite "
                                  "started: vLLM's API server) / run wall time, from /proc; near 1 = its event loop may "
                                  "hold back streamed tokens"),
}

SERVING_ENERGY_METRICS = tuple(name for name, metric in SERVING_METRICS.items() if metric.energy)
