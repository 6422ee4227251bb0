"""Figures for report.html, as base64 PNG (matplotlib Agg; imported lazily: it is an extra)."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path
from typing import Any, Optional

from llem_bench.results.schema import ExperimentResult


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float = 7.0, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def scatter_series(results: list[ExperimentResult]) -> dict[str, list[tuple[float, float, str]]]:
    """backend -> [(output tok/s, J per output token, test id)] of experiments with both numbers."""
    series: dict[str, list[tuple[float, float, str]]] = {}
    for r in results:
        tps, jpt = r.mean("output_tokens_per_s"), r.mean("energy_per_output_token_j")
        if r.status == "ok" and tps is not None and jpt is not None:
            series.setdefault(r.backend, []).append((tps, jpt, r.test_id))
    return series


def energy_vs_throughput(results: list[ExperimentResult]) -> tuple[str, str]:
    """(png, caption): J/token against tok/s, one series per backend; throughput bars without energy."""
    series = scatter_series(results)
    fig, ax = _figure()
    if series:
        for backend, points in sorted(series.items()):
            ax.scatter([p[0] for p in points], [p[1] for p in points], label=backend, s=40)
        xs = [p[0] for pts in series.values() for p in pts]
        ys = [p[1] for pts in series.values() for p in pts]
        if max(xs) > 10 * min(xs):
            ax.set_xscale("log")
        if max(ys) > 10 * min(ys):
            ax.set_yscale("log")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("energy per output token (J)")
        ax.legend(title="backend")
        ax.grid(True, which="both", alpha=0.3)
        return _png(fig), "Energy per output token against throughput; lower right is better."
    ok = [r for r in results if r.status == "ok" and r.mean("output_tokens_per_s") is not None]
    ax.barh([r.test_id for r in ok], [r.mean("output_tokens_per_s") for r in ok])
    ax.set_xlabel("output tokens/s")
    reason = next((r.unavailable.get("energy_per_output_token_j") for r in ok if r.unavailable), "not measured")
    return _png(fig), f"Throughput only: energy is unavailable in every experiment ({reason})."


def varying_settings(results: list[ExperimentResult]) -> dict[str, list[Any]]:
    """Flattened settings (from the resolved config) whose values differ between experiments."""
    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif not isinstance(v, list):
                out[f"{prefix}{k}"] = v
        return out

    rows = [flat(r.config) for r in results]
    keys = sorted({k for row in rows for k in row} - {"study"})
    return {k: [row.get(k) for row in rows] for k in keys if len({str(row.get(k)) for row in rows}) > 1}


def bars_per_axis(results: list[ExperimentResult], metric: str = "output_tokens_per_s") -> list[tuple[str, str]]:
    """One bar chart per varying setting: the metric's mean per experiment, labelled by that setting."""
    ok = [r for r in results if r.status == "ok" and r.mean(metric) is not None]
    figures = []
    for key, values in list(varying_settings(ok).items())[:4]:
        fig, ax = _figure(7.0, 0.35 * len(ok) + 1.2)
        labels = [f"{key.split('.')[-1]}={v} | {r.backend}" for r, v in zip(ok, values)]
        ax.barh(range(len(ok)), [r.mean(metric) for r in ok])
        ax.set_yticks(range(len(ok)), labels, fontsize=8)
        ax.set_xlabel(metric)
        figures.append((key, _png(fig)))
    return figures


def read_timeseries(path: Path) -> tuple[list[tuple[float, float]], list[tuple[str, float]]]:
    """(t, summed power) per tick and (mark, t), from the sampler CSV."""
    by_t: dict[float, float] = {}
    marks = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] == "mark":
                marks.append((row["mark"], float(row["t_s"])))
            elif row["power_w"]:
                t = round(float(row["t_s"]), 3)
                by_t[t] = by_t.get(t, 0.0) + float(row["power_w"])
    return sorted(by_t.items()), marks


def power_timeseries(path: Path, title: str) -> Optional[str]:
    if not path.is_file():
        return None
    points, marks = read_timeseries(path)
    if not points:
        return None
    step = max(1, len(points) // 2000)  # keep the page small
    points = points[::step]
    fig, ax = _figure(8.0, 3.0)
    ax.plot([p[0] for p in points], [p[1] for p in points], lw=0.8, color="black")
    colours = {"window": "tab:green", "warmup": "tab:orange", "prefill": "tab:purple", "idle": "tab:blue"}
    for name, colour in colours.items():
        starts = [t for m, t in marks if m == f"{name}_start"]
        ends = [t for m, t in marks if m == f"{name}_end"]
        for i, (a, b) in enumerate(zip(starts, ends)):
            ax.axvspan(a, b, color=colour, alpha=0.15, label=name if i == 0 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("GPU power (W)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)
