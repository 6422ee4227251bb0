"""Streaming latency from real per-token timestamps: TTFT, inter-token latency, end-to-end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass
class RequestTiming:
    """perf_counter times of one request: when its pass started (queue), when its batch was
    submitted, each generated token, and completion."""

    pass_start: float
    submitted: float
    token_times: list[float] = field(default_factory=list)
    end: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of nothing")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def distribution(values_ms: Sequence[float]) -> Optional[dict]:
    if not values_ms:
        return None
    return {"mean": sum(values_ms) / len(values_ms), "p50": percentile(values_ms, 50),
            "p90": percentile(values_ms, 90), "p99": percentile(values_ms, 99), "n": len(values_ms)}


def summarize_requests(requests: list[RequestTiming]) -> dict:
    """TTFT from submission to first token; ITL pooled over every gap between consecutive tokens of
    a request; e2e from submission to completion; queue from pass start to submission."""
    ttft, itl, e2e, queue = [], [], [], []
    for r in requests:
        if not r.token_times:
            continue
        ttft.append((r.token_times[0] - r.submitted) * 1e3)
        itl.extend((b - a) * 1e3 for a, b in zip(r.token_times, r.token_times[1:]))
        e2e.append((r.end - r.submitted) * 1e3)
        queue.append((r.submitted - r.pass_start) * 1e3)
    return {"ttft_ms": distribution(ttft), "itl_ms": distribution(itl), "e2e_latency_ms": distribution(e2e),
            "queue_ms": distribution(queue), "requests": len(requests)}
