"""Run-to-run noise: the spread of each metric over a study's repeats (measurement.repeats).

A run's cycles share one process, one model load and one thermal state, so their CV leaves out
run-to-run variance, which on real GPUs is the larger part (docs/methodology.md, "Statistics").
Here every experiment's per-repeat means are summarised: the mean over repeats, the between-repeat
SD and CV, a t-based 95% CI of the mean, and, beside it, the within-run cycle CV (the mean of the
repeats' cycle CVs). study.json stores it as the run's noise floor; the gate reads the same numbers.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from llem_bench.metrics import METRICS
from llem_bench.results.schema import ExperimentResult
from llem_bench.stats import summarize


def by_test_id(results: Iterable[ExperimentResult]) -> dict[str, list[ExperimentResult]]:
    """test_id -> its results (one per repeat), in repeat order."""
    groups: dict[str, list[ExperimentResult]] = {}
    for r in results:
        groups.setdefault(r.test_id, []).append(r)
    for runs in groups.values():
        runs.sort(key=lambda r: (r.repeat or 0, r.started_at))
    return groups


def metric_over_repeats(runs: list[ExperimentResult], metric: str) -> Optional[dict[str, Any]]:
    """mean of the per-repeat means, between-repeat SD/CV, n, 95% CI, per-repeat values, and the within-run
    cycle CV; None if no successful repeat measured the metric. Repeats that lack it are left out and counted."""
    ok = [r for r in runs if r.status == "ok"]
    means = [r.mean(metric) for r in ok]
    values = [m for m in means if m is not None]
    if not values:
        return None
    summary = summarize(values)
    assert summary is not None
    cycle_cvs = [r.metrics[metric].cv for r in ok if r.metrics.get(metric) and r.metrics[metric].cv is not None]
    return {
        "mean": summary["mean"], "sd": summary["std"], "cv": summary["cv"], "n": summary["n"],
        "ci95_low": summary["ci95_low"], "ci95_high": summary["ci95_high"], "values": values,
        "repeats": [r.repeat for r, m in zip(ok, means) if m is not None],
        "missing": len(means) - len(values),
        "cycle_cv": sum(cycle_cvs) / len(cycle_cvs) if cycle_cvs else None,
    }


def noise_floor(results: Iterable[ExperimentResult]) -> dict[str, dict[str, Any]]:
    """test_id -> {repeats, failed, metrics: {metric: metric_over_repeats}} for every experiment."""
    out = {}
    for test_id, runs in by_test_id(results).items():
        metrics = {m: s for m in METRICS if (s := metric_over_repeats(runs, m)) is not None}
        out[test_id] = {
            "repeats": len(runs), "failed": sum(r.status != "ok" for r in runs),
            "planned_repeats": max(r.repeats for r in runs), "metrics": metrics,
        }
    return out


def has_repeats(floor: dict[str, dict[str, Any]]) -> bool:
    return any(entry["repeats"] > 1 for entry in floor.values())
