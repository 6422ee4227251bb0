"""Summary statistics over measured cycles (sample std, Student-t 95% confidence interval)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

# Two-sided 95% Student-t quantiles, df = 1..30; beyond that the normal value is close enough.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.960


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cv(values: Sequence[float]) -> Optional[float]:
    m = mean(values)
    return stdev(values) / abs(m) if len(values) >= 2 and m != 0 else None


def summarize(values: Sequence[Optional[float]]) -> Optional[dict]:
    """mean, std, 95% CI and CV of per-cycle values; None if any cycle lacks the value."""
    if not values or any(v is None for v in values):
        return None
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    m, s, n = mean(vals), stdev(vals), len(vals)
    half = t95(n - 1) * s / math.sqrt(n) if n >= 2 else None
    return {
        "mean": m, "std": s, "n": n, "cv": cv(vals),
        "ci95_low": m - half if half is not None else None,
        "ci95_high": m + half if half is not None else None,
        "values": vals,
    }
