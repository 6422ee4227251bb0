"""Results in other tools' formats: pytest-benchmark JSON, github-action-benchmark, CSV, pandas."""

from __future__ import annotations

import csv
import io
import json
import statistics
from bisect import bisect_left, bisect_right
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from llem_bench.metrics import METRICS
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import write_text_atomic

if TYPE_CHECKING:
    import pandas

Results = Union[Iterable[ExperimentResult], dict[str, ExperimentResult]]


def _ok(results: Results) -> list[ExperimentResult]:
    items = results.values() if isinstance(results, dict) else results
    return [r for r in items if r.status == "ok"]


# --- pytest-benchmark ----------------------------------------------------------------------------

def _quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 exactly as pytest-benchmark computes them (so its tables agree with ours)."""
    n, s = len(data), sorted(data)
    if n == 1:
        return s[0], s[0]
    if n % 2 == 0:
        return statistics.median(s[: n // 2]), statistics.median(s[n // 2:])
    k, q = n // 4, n % 4
    if q == 1:
        return 0.25 * s[k - 1] + 0.75 * s[k], 0.75 * s[3 * k] + 0.25 * s[3 * k + 1]
    return 0.75 * s[k] + 0.25 * s[k + 1], 0.25 * s[3 * k + 1] + 0.75 * s[3 * k + 2]


def benchmark_stats(data: list[float]) -> dict[str, Any]:
    """pytest-benchmark's `stats` block for per-round durations in seconds."""
    s = sorted(data)
    mean = statistics.mean(data)
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_out = sum(v < lo or v > hi for v in data)
    std_out = sum(v < mean - std or v > mean + std for v in data)
    total = sum(data)
    return {
        "min": s[0], "max": s[-1], "mean": mean, "stddev": std, "rounds": len(data), "median": statistics.median(s),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": std_out,
        "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": s[0] if len(s) == 1 else s[bisect_left(s, lo)],
        "hd15iqr": s[0] if len(s) == 1 else s[bisect_right(s, hi) - 1],
        "ops": len(data) / total if total else 0, "total": total, "iterations": 1, "data": list(data),
    }


def _machine_info(env: dict[str, Any]) -> dict[str, Any]:
    nvml = env.get("nvml") or {}
    platform = str(env.get("platform") or "")
    return {
        "node": env.get("host"), "processor": env.get("cpu"), "platform": platform or None,
        "system": platform.split("-")[0] or None, "python_implementation": "CPython",
        "python_version": env.get("python"),
        "cpu": {"brand_raw": env.get("cpu"), "count": env.get("cpu_count")},
        "gpus": [g.get("name") for g in nvml.get("gpus", [])], "gpu_driver": nvml.get("driver"),
        "cuda_driver": nvml.get("cuda_driver"), "packages": env.get("packages", {}),
    }


def _pytest_benchmark_version() -> str:
    try:
        return metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:
        return "5.1.0"


def round_times(r: ExperimentResult) -> tuple[list[float], list[int]]:
    """(seconds per workload pass, passes) of every cycle. A cycle's window is min_window_s plus the
    overshoot of its last pass, so the window length says how many passes fitted, not how fast one was;
    the time of one pass (wall_time_s / passes) is what a pytest-benchmark round must be."""
    times, passes = [], []
    for cycle in r.cycles:
        n = int(cycle.get("passes") or 0)
        if n <= 0 or not cycle.get("wall_time_s"):
            raise ValueError(f"{r.key}: cycle without a pass count; cannot export per-pass times")
        times.append(cycle["wall_time_s"] / n)
        passes.append(n)
    return times, passes


def to_pytest_benchmark_json(results: Results) -> dict[str, Any]:
    """One benchmark per successful experiment run (per repeat); a round is a measured cycle, its time the
    cycle's time per workload pass (wall_time_s / passes; passes in extra_info). Metric means (energy
    included; None when unavailable) go to extra_info."""
    ok = [r for r in _ok(results) if r.metrics.get("wall_time_s")]
    env = ok[0].environment if ok else {}
    benchmarks = []
    for r in ok:
        name = f"test_{r.backend}[{r.key}]"
        cycles, passes = round_times(r)
        benchmarks.append({
            "group": r.study, "name": name, "fullname": f"benchmarks/{r.backend}/test_{r.backend}_energy.py::{name}",
            "params": {"llem_experiment": r.key}, "param": r.key,
            "extra_info": {**{m: r.mean(m) for m in METRICS}, "energy_source": r.energy.get("source"),
                           "config_hash": r.config_hash, "run_id": r.run_id, "model": r.model,
                           "test_id": r.test_id, "repeat": r.repeat, "passes": passes,
                           "round": "seconds per workload pass (window wall time / passes)",
                           "requests_per_pass": r.workload.get("num_requests"),
                           "output_tokens_per_pass": (r.cycles[0]["output_tokens"] / passes[0]) if r.cycles else None},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(cycles), "max_time": None,
                        "min_time": r.config.get("measurement", {}).get("min_window_s"),
                        "warmup": r.warmup.get("runs", 0) > 0},
            "stats": benchmark_stats(cycles),
        })
    stamps = [r.finished_at or r.started_at for r in ok]
    return {
        "machine_info": _machine_info(env),
        "commit_info": {"id": env.get("git_commit") or "unknown", "dirty": bool(env.get("git_dirty")),
                        "branch": env.get("git_branch") or "(unknown)", "project": "llem-bench",
                        "time": None, "author_time": None},
        "benchmarks": benchmarks,
        "datetime": max(stamps) if stamps else None,
        "version": _pytest_benchmark_version(),
    }


# --- github-action-benchmark ---------------------------------------------------------------------

def to_github_action_benchmark(results: Results) -> tuple[list[dict], list[dict]]:
    """(customBiggerIsBetter, customSmallerIsBetter) entries, one per experiment and metric; unavailable
    metrics are left out. With repeats the value is the mean over repeats and the range its 95% CI (one
    entry per test id, as the dashboard expects one point per name and commit)."""
    from llem_bench.results.repeats import by_test_id, metric_over_repeats

    bigger, smaller = [], []
    for test_id, runs in by_test_id(_ok(results)).items():
        r = runs[0]
        for metric, definition in METRICS.items():
            unit, higher_is_better, description = definition.unit, definition.higher_is_better, definition.description
            if len(runs) > 1:
                over = metric_over_repeats(runs, metric)
                if over is None:
                    continue
                value, high = over["mean"], over["ci95_high"]
                what = f"mean of {over['n']} repeats (per-repeat means), 95% CI"
            else:
                s = r.metrics.get(metric)
                if s is None:
                    continue
                value, high = s.mean, s.ci95_high
                what = f"mean of {s.n} cycles of one run, 95% CI"
            half = f"± {high - value:.6g}" if high is not None else "n/a"
            (bigger if higher_is_better else smaller).append({
                "name": f"{test_id} - {metric}", "unit": unit, "value": value, "range": half,
                "extra": f"{description}; {what}; run {r.run_id}",
            })
    return bigger, smaller


# --- tables --------------------------------------------------------------------------------------

def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "passthrough":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    return out


def result_row(r: ExperimentResult) -> dict[str, Any]:
    """One flat row: identity, config.<dotted key>, and per metric mean/std/n/ci95_low/ci95_high."""
    row: dict[str, Any] = {
        "test_id": r.test_id, "repeat": r.repeat, "config_hash": r.config_hash, "study": r.study, "run_id": r.run_id,
        "status": r.status, "backend": r.backend, "model": r.model,
        "git_commit": r.environment.get("git_commit"), "energy_source": r.energy.get("source"),
    }
    row.update({f"config.{k}": v for k, v in _flat(r.config).items() if k not in ("study", "backend", "model")})
    for metric in METRICS:
        s = r.metrics.get(metric)
        for part in ("mean", "std", "n", "ci95_low", "ci95_high"):
            row[f"{metric}_{part}"] = getattr(s, part) if s else None
    return row


def _rows(results: Iterable[ExperimentResult]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = [result_row(r) for r in results]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, rows


def to_csv(results: Results, path: str | Path) -> Path:
    """One row per experiment (failed ones included, metrics empty)."""
    items = list(results.values() if isinstance(results, dict) else results)
    columns, rows = _rows(items)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)


def _result_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    files = sorted(path.glob("*.json")) if path.name == "results" else sorted(path.glob("**/results/*.json"))
    if not files:
        raise ValueError(f"{path}: no result files (looked for results/*.json below it)")
    return files


def load_results(path_or_paths: str | Path | Iterable[str | Path]) -> "pandas.DataFrame":
    """Result JSONs, run folders, or any folder above them (e.g. reports/) as a DataFrame, one row per
    experiment, with the same columns as to_csv."""
    import pandas as pd

    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    files = list(dict.fromkeys(f for p in paths for f in _result_files(Path(p))))
    results = [ExperimentResult.model_validate_json(f.read_text()) for f in files]
    columns, rows = _rows(results)
    return pd.DataFrame(rows, columns=columns)
