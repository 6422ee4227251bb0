"""Streaming latency from real timestamps: TTFT, inter-token latency, TPOT, end-to-end.

A backend stamps each *delivery*: the moment new tokens of a request reach the host, with how many
arrived. Several tokens can arrive at once (vLLM `stream_interval`, speculative or assisted
decoding), so ITL is the gap between deliveries divided by the tokens delivered: per token, never a
made-up zero gap. When requests share stamps (PyTorch: every request of a static batch gets its
tokens at the same step), the backend returns one timing for the whole batch (`requests` > 1), so
a stamp is counted once. `n` is the number of values, `n_independent` the number of distinct stamps
they come from; p90/p99 are left out when too few independent stamps stand behind them, and the
CI of a mean is taken over the streaming passes (the replicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from llem_bench.stats import summarize

# A percentile needs at least this many independent samples to say anything beyond the maximum.
PERCENTILE_MIN_N = {"p90": 10, "p99": 100}


@dataclass
class RequestTiming:
    """perf_counter times of one request (or of one batch whose requests share every stamp):
    when its pass started (queue), when it was submitted, each delivery of new tokens as
    (time, tokens), and completion."""

    pass_start: float
    submitted: float
    deliveries: list[tuple[float, int]] = field(default_factory=list)
    end: float = 0.0
    requests: int = 1  # requests these stamps stand for (a static batch: its size)

    @property
    def tokens(self) -> int:
        return sum(k for _, k in self.deliveries)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of nothing")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def distribution(samples: Sequence[tuple[float, tuple, int]]) -> Optional[dict]:
    """samples: (value in ms, stamp key, pass index). Percentiles over the values; n_independent =
    distinct stamp keys; the mean's 95% CI over the per-pass means (None with one pass)."""
    if not samples:
        return None
    values = [v for v, _, _ in samples]
    n_independent = len({key for _, key, _ in samples})
    out: dict[str, Any] = {"mean": sum(values) / len(values), "p50": percentile(values, 50)}
    omitted = {}
    for name, need in PERCENTILE_MIN_N.items():
        if n_independent >= need:
            out[name] = percentile(values, float(name[1:]))
        else:
            out[name] = None
            omitted[name] = f"needs >= {need} independent samples, have {n_independent}"
    passes = sorted({p for _, _, p in samples})
    pass_means = [_mean([v for v, _, p in samples if p == i]) for i in passes]
    spread = summarize(pass_means) if len(pass_means) >= 2 else None
    out.update(n=len(values), n_independent=n_independent, passes=len(passes),
               pass_means=pass_means,
               ci95_low=spread["ci95_low"] if spread else None, ci95_high=spread["ci95_high"] if spread else None)
    if omitted:
        out["omitted"] = omitted
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def summarize_passes(passes: list[list[RequestTiming]]) -> dict[str, Any]:
    """TTFT = first delivery - submission; ITL = gap between consecutive deliveries of a request /
    tokens in the later one (one value per delivery); TPOT = (e2e - TTFT) / (tokens - 1) per request;
    e2e = completion - submission; queue = submission - pass start. Plus each pass's own throughput."""
    ttft, itl, tpot, e2e, queue = [], [], [], [], []
    multi = deliveries = 0
    per_pass = []
    for index, timings in enumerate(passes):
        for r in timings:
            if not r.deliveries:
                continue
            first = r.deliveries[0][0]
            ttft.append(((first - r.submitted) * 1e3, (index, first), index))
            for (before, _), (at, tokens) in zip(r.deliveries, r.deliveries[1:]):
                itl.append(((at - before) * 1e3 / tokens, (index, at), index))
            deliveries += len(r.deliveries)
            multi += sum(1 for _, k in r.deliveries if k > 1)
            e2e.append(((r.end - r.submitted) * 1e3, (index, r.end), index))
            if r.tokens > 1:
                tpot.append(((r.end - first) * 1e3 / (r.tokens - 1), (index, first, r.end), index))
            queue.append(((r.submitted - r.pass_start) * 1e3, (index, r.submitted), index))
        per_pass.append(_pass_throughput(timings))
    return {
        "ttft_ms": distribution(ttft), "itl_ms": distribution(itl), "tpot_ms": distribution(tpot),
        "e2e_latency_ms": distribution(e2e), "queue_ms": distribution(queue),
        "itl_basis": _itl_basis(deliveries, multi),
        "passes": len(passes),
        "requests": sum(r.requests for r in passes[0]) if passes else 0,
        "stamps_shared_by": max((r.requests for t in passes for r in t), default=1),
        "streaming_output_tokens_per_s": summarize([p for p in per_pass if p is not None])
        if per_pass and None not in per_pass else None,
    }


def _pass_throughput(timings: list[RequestTiming]) -> Optional[float]:
    """Generated tokens of one streaming pass / its wall time (pass start to the last completion)."""
    if not timings:
        return None
    tokens = sum(r.tokens * r.requests for r in timings)
    elapsed = max(r.end for r in timings) - timings[0].pass_start
    return tokens / elapsed if elapsed > 0 and tokens else None


def _itl_basis(deliveries: int, multi: int) -> str:
    if multi == 0:
        return "per token: every delivery carried one token (per step = per token)"
    return (f"per token: {multi} of {deliveries} deliveries carried several tokens (stream_interval, speculative "
            "or assisted decoding); each gap is divided by the tokens it delivered")


def compare_throughput(streaming: Optional[dict], window_values: list[float]) -> tuple[dict[str, Any], Optional[str]]:
    """The streaming passes' own tok/s beside the windows' tok/s; a warning when they differ by more
    than the windows' 95% CI half-width (or 10% when the windows have no CI)."""
    window = summarize(window_values)
    if not streaming or not window:
        return {"reason": "no streaming throughput or no window throughput"}, None
    diff = streaming["mean"] / window["mean"] - 1
    half = (window["ci95_high"] - window["mean"]) if window["ci95_high"] is not None else None
    limit = half / window["mean"] if half is not None else 0.10
    out = {"streaming_tokens_per_s": streaming["mean"], "window_tokens_per_s": window["mean"],
           "relative_difference": diff, "limit": limit,
           "limit_basis": "window 95% CI half-width" if half is not None else "10% (one cycle: no window CI)"}
    if abs(diff) <= limit:
        return out, None
    return out, (f"streaming passes ran at {streaming['mean']:.1f} out tok/s, the windows at {window['mean']:.1f} "
                 f"({diff:+.1%}, beyond the {out['limit_basis']} {limit:.1%}): latency and throughput come from "
                 "different executions, read them together with care")
