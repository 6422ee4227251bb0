"""Summary statistics and the tests the gate uses, on scipy.stats (t quantiles, Welch's t-test).

Two levels of replication exist (docs/methodology.md, "Statistics"): the cycles of one run (one
process, one model load) and the repeats of a run (measurement.repeats). Cycles leave out
run-to-run variance, so every test here is meant for per-repeat means; `summarize` is used for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats as _st

ALPHA = 0.05   # two-sided significance level of every test and CI
POWER = 0.80   # power used for the minimum detectable change and the repeats needed


def t_quantile(q: float, df: float) -> float:
    """Student-t quantile (fractional df allowed: Welch-Satterthwaite df are not integers)."""
    return float(_st.t.ppf(q, df))


def t95(df: float) -> float:
    """Two-sided 95% Student-t quantile."""
    return t_quantile(1 - ALPHA / 2, df)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def stdev(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1); None below 2 values: one value has no spread."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cv(values: Sequence[float]) -> Optional[float]:
    s = stdev(values)
    m = mean(values) if values else 0.0
    return s / abs(m) if s is not None and m != 0 else None


def summarize(values: Sequence[Optional[float]]) -> Optional[dict]:
    """mean, std, 95% CI and CV of per-cycle (or per-repeat) values; None if any value is missing.
    std, CV and the CI are None for a single value."""
    if not values or any(v is None for v in values):
        return None
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    m, s, n = mean(vals), stdev(vals), len(vals)
    half = t95(n - 1) * s / math.sqrt(n) if s is not None else None
    return {
        "mean": m, "std": s, "n": n, "cv": cv(vals),
        "ci95_low": m - half if half is not None else None,
        "ci95_high": m + half if half is not None else None,
        "values": vals,
    }


@dataclass
class Difference:
    """cand - base with its standard error, degrees of freedom, two-sided p and 95% CI."""

    diff: float
    se: float
    df: float
    p_value: float
    ci95: tuple[float, float]
    method: str


def welch(base: Sequence[float], cand: Sequence[float]) -> Difference:
    """Welch's t-test of two samples (scipy.stats.ttest_ind, equal_var=False)."""
    return welch_from_stats(mean(base), stdev(base), len(base), mean(cand), stdev(cand), len(cand))  # type: ignore[arg-type]


def welch_from_stats(mb: float, sb: float, nb: int, mc: float, sc: float, nc: int) -> Difference:
    """Welch's t-test from means, SDs and counts (scipy.stats.ttest_ind_from_stats, equal_var=False), and
    the 95% CI of cand - base from the same fractional Welch-Satterthwaite df."""
    diff = mc - mb
    vb, vc = sb ** 2 / nb, sc ** 2 / nc
    se = math.sqrt(vb + vc)
    if se == 0.0:
        df = float(nb + nc - 2)
        return Difference(diff, 0.0, df, 1.0 if diff == 0 else 0.0, (diff, diff), "welch")
    df = (vb + vc) ** 2 / (vb ** 2 / (nb - 1) + vc ** 2 / (nc - 1))
    p = float(_st.ttest_ind_from_stats(mc, sc, nc, mb, sb, nb, equal_var=False).pvalue)
    half = t95(df) * se
    return Difference(diff, se, df, p, (diff - half, diff + half), "welch")


def against_noise_floor(base_mean: float, nb: int, cand_mean: float, nc: int, sd: float, df: float) -> Difference:
    """Difference of two means when only one side (or history) supplies the run-to-run SD `sd` with `df`
    degrees of freedom, assumed to hold on both sides: se = sd * sqrt(1/nb + 1/nc). With one candidate
    run this is the prediction-interval test of that run against the baseline's repeats."""
    diff = cand_mean - base_mean
    se = sd * math.sqrt(1.0 / nb + 1.0 / nc)
    if se == 0.0:
        return Difference(diff, 0.0, df, 1.0 if diff == 0 else 0.0, (diff, diff), "noise floor")
    p = float(2 * _st.t.sf(abs(diff) / se, df))
    half = t95(df) * se
    return Difference(diff, se, df, p, (diff - half, diff + half), "noise floor")


def minimum_detectable(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-alpha t-test detects with the given power."""
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se


def welch_df_factor(sd_a: float, sd_b: float) -> float:
    """Welch's df with n repeats per side is welch_df_factor * (n - 1): 2 for equal SDs, 1 at the extreme."""
    va, vb = sd_a ** 2, sd_b ** 2
    return (va + vb) ** 2 / (va ** 2 + vb ** 2) if va + vb > 0 else 2.0


def repeats_needed(sd: float, effect: float, alpha: float = ALPHA, power: float = POWER,
                   limit: int = 1000, df_factor: float = 2.0) -> Optional[int]:
    """Repeats per side for a two-sample t-test (equal n, SD `sd`) to detect `effect` with the given
    power; None if more than `limit` (or the effect is 0). Degrees of freedom df_factor * (n - 1):
    2 for equal variances, less for Welch's with unequal ones (welch_df_factor), so the answer
    agrees with the detectable change printed beside it."""
    if effect <= 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, limit + 1):
        if minimum_detectable(sd * math.sqrt(2.0 / n), df_factor * (n - 1), alpha, power) <= effect:
            return n
    return None
