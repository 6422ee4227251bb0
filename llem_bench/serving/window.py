"""The steady-state window of a serving run, from per-request timestamps alone (pure, testable).

Rule (ML.ENERGY's, generalised beyond rate = inf): let B be the plateau of the number of requests
being decoded (first token seen, not finished), the time-weighted median over the run, clipped to
[1, N/4]. The window opens at the B-th first token (the batch has filled) and closes at the
(N-B-1)-th completion (the queue is about to drain). For a closed loop at concurrency C B is C (configured,
not measured); at rate = inf it is the engine's batch limit (max_num_seqs) when N is large enough.

A window is checked for stationarity: its four quarters must each hold the window's mean decode
count and output token rate within STATIONARY_TOLERANCE; otherwise it is a warning, not hidden.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

STATIONARY_TOLERANCE = 0.25
MIN_WINDOW_S = 20.0  # ML.ENERGY drops runs whose steady window is shorter
MIN_COVERAGE = 0.5


def step_series(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, int]]:
    """(time, count after it) of how many intervals are open, at every start and end."""
    events = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals], key=lambda e: (e[0], e[1]))
    series, level = [], 0
    for t, delta in events:
        level += delta
        if series and series[-1][0] == t:
            series[-1] = (t, level)
        else:
            series.append((t, level))
    return series


def level_at(series: Sequence[tuple[float, int]], t: float) -> int:
    level = 0
    for ts, value in series:
        if ts > t:
            break
        level = value
    return level


def time_weighted(series: Sequence[tuple[float, int]], t0: float, t1: float) -> list[tuple[int, float]]:
    """(level, seconds spent at it) over [t0, t1]."""
    points = [(t0, level_at(series, t0))] + [(t, v) for t, v in series if t0 < t < t1]
    out = []
    for (ta, va), (tb, _) in zip(points, points[1:] + [(t1, 0)]):
        if tb > ta:
            out.append((va, tb - ta))
    return out


def mean_level(series: Sequence[tuple[float, int]], t0: float, t1: float) -> float:
    parts = time_weighted(series, t0, t1)
    total = sum(d for _, d in parts)
    return sum(v * d for v, d in parts) / total if total > 0 else 0.0


def median_level(series: Sequence[tuple[float, int]], t0: float, t1: float) -> float:
    parts = sorted(time_weighted(series, t0, t1))
    half, acc = sum(d for _, d in parts) / 2, 0.0
    for value, d in parts:
        acc += d
        if acc >= half:
            return float(value)
    return 0.0


def steady_window(first_tokens: Sequence[float], finishes: Sequence[float], run_start: float,
                  run_end: float, plateau: Optional[float] = None) -> dict[str, Any]:
    """The window [start, end] of one run's completed requests (first_tokens[i], finishes[i] of request i).
    `plateau`: the configured one (a closed loop's concurrency) instead of the measured median."""
    n = len(finishes)
    decoding = step_series(list(zip(first_tokens, finishes)))
    rule = ("opens at the B-th first token, closes at the (N-B-1)-th completion; B = " +
            ("the closed loop's concurrency" if plateau is not None else
             "time-weighted median of requests being decoded over the run") + ", clipped to [1, N/4]")
    if n < 4:
        return {"start": None, "end": None, "rule": rule, "reason": f"{n} completed requests (needs >= 4)"}
    plateau = plateau if plateau is not None else median_level(decoding, run_start, run_end)
    b = int(min(max(1, round(plateau)), n // 4))
    start = sorted(first_tokens)[b - 1]
    close_index = n - b - 2  # the (N-B-1)-th completion, 1-based
    end = sorted(finishes)[close_index] if close_index >= 0 else None
    out: dict[str, Any] = {"rule": rule, "plateau_decoding": plateau, "b": b, "n": n, "start": start, "end": end,
                           "reason": None}
    if end is None or end <= start:
        out.update(start=None, end=None, reason=f"the (N-B-1)-th completion comes before the B-th first token "
                   f"(N={n}, B={b}): the run never reached a steady state")
        return out
    out["duration_s"] = end - start
    out["coverage"] = (end - start) / (run_end - run_start) if run_end > run_start else None
    out["mean_decoding"] = mean_level(decoding, start, end)
    return out


def tokens_between(chunk_times: Sequence[Sequence[float]], chunk_tokens: Sequence[Sequence[int]], t0: float,
                   t1: float, closed: bool = False) -> int:
    """Output tokens whose event arrived in [t0, t1) ([t0, t1] with closed=True, for the last segment),
    so consecutive segments never count an event twice."""
    return sum(n for times, counts in zip(chunk_times, chunk_tokens) for t, n in zip(times, counts)
               if t0 <= t < t1 or (closed and t == t1))


def stationarity(series: Sequence[tuple[float, int]], chunk_times: Sequence[Sequence[float]],
                 chunk_tokens: Sequence[Sequence[int]], t0: float, t1: float, parts: int = 4,
                 tolerance: float = STATIONARY_TOLERANCE) -> dict[str, Any]:
    """Mean decode count and output token rate per quarter of the window, against the window's own."""
    edges = [t0 + (t1 - t0) * k / parts for k in range(parts + 1)]
    levels = [mean_level(series, a, b) for a, b in zip(edges, edges[1:])]
    rates = [tokens_between(chunk_times, chunk_tokens, a, b) / (b - a) for a, b in zip(edges, edges[1:])]
    whole_level = mean_level(series, t0, t1)
    whole_rate = tokens_between(chunk_times, chunk_tokens, t0, t1) / (t1 - t0)

    def spread(values: list[float], whole: float) -> Optional[float]:
        return max(abs(v - whole) / whole for v in values) if whole > 0 else None

    level_spread, rate_spread = spread(levels, whole_level), spread(rates, whole_rate)
    stationary = all(s is not None and s <= tolerance for s in (level_spread, rate_spread))
    return {"quarters_mean_decoding": levels, "quarters_output_tokens_per_s": rates,
            "max_deviation_decoding": level_spread, "max_deviation_tokens_per_s": rate_spread,
            "tolerance": tolerance, "stationary": stationary}


def window_warnings(window: dict[str, Any]) -> list[str]:
    if window.get("start") is None:
        return [f"no steady-state window: {window.get('reason')}"]
    out = []
    if window["duration_s"] < MIN_WINDOW_S:
        out.append(f"steady-state window of {window['duration_s']:.1f} s is under {MIN_WINDOW_S:.0f} s")
    if window.get("coverage") is not None and window["coverage"] < MIN_COVERAGE:
        out.append(f"steady-state window covers {window['coverage']:.0%} of the run (< {MIN_COVERAGE:.0%})")
    check = window.get("stationarity") or {}
    if check.get("stationary") is False:
        out.append("steady-state window is not stationary: a quarter's decode count or token rate is more than "
                   f"{check['tolerance']:.0%} off the window's (max {_pct(check['max_deviation_decoding'])} / "
                   f"{_pct(check['max_deviation_tokens_per_s'])})")
    return out


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.0%}"
