"""Figures for report.html, as base64 PNG (matplotlib Agg; imported lazily: it is an extra).

The figure builders (`scatter_figure`, `axis_figure`, `power_figure`) return matplotlib figures so
tests can read their series and legends; `energy_vs_throughput`, `bars_per_axis` and
`power_timeseries` turn them into PNG strings for the page."""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path
from typing import Any, Optional

from llem_bench.results.schema import ExperimentResult

MAX_POWER_POINTS = 1500  # per timeseries plot: keeps each PNG (and the page) small
MAX_AXES = 4  # bar charts per report
MAX_SERIES = 8  # bars per group in a bar chart
MISSING = "default"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float = 7.0, height: float = 4.2, ncols: int = 1):
    return _plt().subplots(1, ncols, figsize=(width, height), squeeze=False)


def _ok(results: list[ExperimentResult], metric: str = "output_tokens_per_s") -> list[ExperimentResult]:
    return [r for r in results if r.status == "ok" and r.mean(metric) is not None]


# --- settings that differ between experiments -----------------------------------------------------

def settings(result: ExperimentResult) -> dict[str, Any]:
    """The settings the study wrote (`explicit`), flattened to dotted keys; a backend's own section
    (`pytorch.batch_size`) is named by the setting alone (`batch_size`) so both backends line up."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, "" if not prefix and k == result.backend else f"{prefix}{k}.")
            elif not isinstance(v, list):
                out[f"{prefix}{k}"] = v

    walk(result.explicit or {}, "")
    if "dtype" not in out and result.config.get("dtype") is not None:
        out["dtype"] = result.config["dtype"]
    out["backend"] = result.backend
    return out


def varying_settings(results: list[ExperimentResult]) -> dict[str, list[Any]]:
    """key -> value per experiment (None where the study left it at its default), for the keys with
    more than one distinct value. A key only some backends have (pytorch's batch_size) is compared
    among the experiments of those backends."""
    rows = [settings(r) for r in results]
    keys = sorted({k for row in rows for k in row} - {"study"})
    varying = {}
    for k in keys:
        backends = {row["backend"] for row in rows if k in row}
        values = {str(row.get(k)) for row in rows if row["backend"] in backends}
        if len(values) > 1:
            varying[k] = [row.get(k) for row in rows]
    return varying


def _short(key: str) -> str:
    """batch_size, num_prompts, dtype; measurement settings keep their path (warmup.output_tokens)."""
    return key[len("measurement."):] if key.startswith("measurement.") else key.split(".")[-1]


def _tied(a: list[Any], b: list[Any]) -> bool:
    """True when two settings move together: each value of one goes with exactly one of the other."""
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    for x, y in zip(map(str, a), map(str, b)):
        if forward.setdefault(x, y) != y or backward.setdefault(y, x) != x:
            return False
    return True


def tied_axes(results: list[ExperimentResult]) -> dict[str, list[str]]:
    """axis -> the varying settings that move with it (e.g. batch_size -> [workload.num_prompts]
    when every batch is the whole prompt set): one chart, not one per name. Axes are kept in
    sweep order (most values first); a setting tied to a kept one is folded into it."""
    varying = varying_settings(results)
    candidates = [k for k in varying if k != "backend" and not k.startswith("measurement.")]
    candidates.sort(key=lambda k: -len({str(v) for v in varying[k] if v is not None}))
    kept: dict[str, list[str]] = {}
    for k in candidates:
        twin = next((axis for axis in kept if _tied(varying[axis], varying[k])), None)
        if twin is None:
            kept[k] = []
        else:
            kept[twin].append(k)
    return kept


def sweep_axes(results: list[ExperimentResult]) -> list[str]:
    """The varying settings worth a chart: not the backend (the scatter shows it), not the
    measurement method (cycles, warmup, meter: they label the bars instead), and not a setting tied
    to another axis (see tied_axes); most values first."""
    return list(tied_axes(results))[:MAX_AXES]


def axis_title(results: list[ExperimentResult], axis: str) -> str:
    """"batch_size (= num_prompts)": the axis and the settings that move with it."""
    twins = tied_axes(results).get(axis) or []
    return _short(axis) + (f" (= {', '.join(_short(t) for t in twins)})" if twins else "")


def _natural(label: str) -> list:
    """"batch_size=8" before "batch_size=64": numbers in a label compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", label)]


def _sort_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


def axis_groups(results: list[ExperimentResult], axis: str) -> tuple[list[Any], dict[str, dict[Any, ExperimentResult]]]:
    """(axis values in order, series label -> {axis value -> result}) for the experiments that have
    the setting. A series is the backend plus every other varying setting that is not tied to the
    axis (tied: one value per backend and axis value, e.g. batch_size = num_prompts)."""
    varying = varying_settings(results)
    all_rows = [(r, settings(r)) for r in results]
    backends = {s["backend"] for _, s in all_rows if s.get(axis) is not None}
    rows = [(r, {**s, axis: s[axis] if s.get(axis) is not None else MISSING})
            for r, s in all_rows if s["backend"] in backends]
    others = []
    for k in varying:
        if k in (axis, "backend"):
            continue
        cells: dict[tuple, set] = {}
        for _, s in rows:
            cells.setdefault((s["backend"], str(s[axis])), set()).add(str(s.get(k)))
        if any(len(v) > 1 for v in cells.values()):
            others.append(k)
    x_values = sorted({s[axis] for _, s in rows}, key=_sort_key)
    series: dict[str, dict[Any, ExperimentResult]] = {}
    for r, s in rows:
        label = ", ".join([r.backend] + [f"{_short(k)}={s[k] if s.get(k) is not None else MISSING}"
                                         for k in others])
        cell = series.setdefault(label, {})
        n = 2
        while s[axis] in cell:  # identical settings twice: keep both, as separate series
            cell = series.setdefault(f"{label} #{n}", {})
            n += 1
        cell[s[axis]] = r
    return x_values, series


def axis_figure(results: list[ExperimentResult], axis: str):
    """Grouped bars: throughput (and J/token where measured) per value of one sweep axis, with the 95% CI
    as error bars; invalid results are hatched and faded."""
    ok = _ok(results)
    x_values, series = axis_groups(ok, axis)
    labels = sorted(series, key=_natural)[:MAX_SERIES]
    metrics = [("output_tokens_per_s", "output tokens/s")]
    if any(r.mean("energy_per_output_token_j") is not None for r in ok):
        metrics.append(("energy_per_output_token_j", "energy per output token (J)"))
    fig, axes = _figure(6.0 * len(metrics), 3.6, ncols=len(metrics))
    width = 0.8 / max(1, len(labels))
    for ax, (metric, name) in zip(axes[0], metrics):
        for i, label in enumerate(labels):
            xs, ys, errors, invalid = [], [], [[], []], []
            for j, x in enumerate(x_values):
                r = series[label].get(x)
                if r is not None and r.mean(metric) is not None:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(r.mean(metric))
                    summary = r.metrics[metric]
                    errors[0].append(summary.mean - summary.ci95_low if summary.ci95_low is not None else 0.0)
                    errors[1].append(summary.ci95_high - summary.mean if summary.ci95_high is not None else 0.0)
                    invalid.append((r.validity or {}).get("verdict") == "invalid")
            bars = ax.bar(xs, ys, width=width, label=label, color=f"C{i % 10}", yerr=errors, capsize=2,
                          error_kw={"elinewidth": 0.8})
            for bar, bad in zip(bars, invalid):  # an invalid result must not look like a valid one
                if bad:
                    bar.set_hatch("xx")
                    bar.set_alpha(0.35)
        ax.set_xticks(range(len(x_values)), [str(x) for x in x_values])
        ax.set_xlabel(axis_title(ok, axis))
        ax.set_ylabel(name)
        values = [r.mean(metric) for s in series.values() for r in s.values() if r.mean(metric)]
        if values and max(values) > 10 * min(values):
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7,
               ncol=1 if max(map(len, names), default=0) > 50 else min(3, len(names)))
    fig.suptitle(f"by {axis_title(ok, axis)}" + (f" (first {MAX_SERIES} series)" if len(series) > MAX_SERIES else ""),
                 fontsize=10)
    return fig


def bars_per_axis(results: list[ExperimentResult]) -> list[tuple[str, str]]:
    """[(axis, png)]: one grouped bar chart per sweep axis."""
    ok = _ok(results)
    return [(axis, _png(axis_figure(ok, axis))) for axis in sweep_axes(ok)]


# --- energy per token against throughput --------------------------------------------------------

def scatter_series(results: list[ExperimentResult]) -> dict[str, list[tuple[float, float, str]]]:
    """backend -> [(output tok/s, J per output token, test id)] of experiments with both numbers."""
    series: dict[str, list[tuple[float, float, str]]] = {}
    for r in results:
        tps, jpt = r.mean("output_tokens_per_s"), r.mean("energy_per_output_token_j")
        if r.status == "ok" and tps is not None and jpt is not None:
            series.setdefault(r.backend, []).append((tps, jpt, r.test_id))
    return series


def energy_unavailable_reason(results: list[ExperimentResult]) -> str:
    reasons = [r.unavailable.get("energy_per_output_token_j") or r.energy.get("reason") for r in results]
    reasons = list(dict.fromkeys(x for x in reasons if x))
    return "; ".join(reasons) if reasons else "not measured"


def _point_label(r: ExperimentResult, keys: list[str]) -> str:
    s = settings(r)
    return ", ".join(f"{_short(k)}={s[k]}" for k in keys if s.get(k) is not None)


def scatter_figure(results: list[ExperimentResult]) -> tuple[Any, str]:
    """(figure, caption). J/token against tok/s, one series per backend, each point labelled with
    its sweep values, the 95% CI of both means as error bars, invalid results crossed out in red (an
    invalid point must not look like a valid one); log axes where a range spans more than 10x.
    Without energy anywhere: throughput per experiment, and the caption says why."""
    series = scatter_series(results)
    ok = _ok(results)
    keys = sweep_axes(ok)
    if series:
        fig, axes = _figure()
        ax = axes[0][0]
        by_id = {r.test_id: r for r in ok}
        for i, (backend, points) in enumerate(sorted(series.items())):
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=7, lw=0.8, alpha=0.85,
                    label=backend, color=f"C{i % 10}")
            for x, y, test_id in points:
                r = by_id[test_id]
                ax.errorbar([x], [y], xerr=_ci_error(r, "output_tokens_per_s"),
                            yerr=_ci_error(r, "energy_per_output_token_j"),
                            fmt="none", ecolor=f"C{i % 10}", elinewidth=0.8, capsize=2, alpha=0.7)
                if _invalid(r):
                    ax.plot([x], [y], marker="x", ms=11, mew=2, color="red", ls="none")
                ax.annotate(_point_label(r, keys) + (" (invalid)" if _invalid(r) else ""), (x, y),
                            textcoords="offset points", xytext=(6, 4), fontsize=7, color=f"C{i % 10}")
        xs = [p[0] for pts in series.values() for p in pts]
        ys = [p[1] for pts in series.values() for p in pts]
        if max(xs) > 10 * min(xs):
            ax.set_xscale("log")
        if max(ys) > 10 * min(ys):
            ax.set_yscale("log")
        ax.set_xlabel("output tokens/s (mean over cycles)")
        ax.set_ylabel("GPU energy per output token (J)")
        ax.legend(title="backend")
        ax.grid(True, which="both", alpha=0.3)
        missing = [r.key for r in ok if r.mean("energy_per_output_token_j") is None]
        caption = "Energy per output token against throughput, one series per backend; lower right is better."
        if missing:
            caption += f" Not shown (no energy): {', '.join(missing)}."
        caption += " Error bars: 95% CI over cycles."
        invalid = [r.key for r in ok if _invalid(r) and r.mean("energy_per_output_token_j") is not None]
        if invalid:
            caption += f" Red crosses mark invalid results (see the validity table): {', '.join(invalid)}."
        return fig, caption
    fig, axes = _figure(7.0, 0.35 * len(ok) + 1.4)
    ax = axes[0][0]
    backends = sorted({r.backend for r in ok})
    for i, r in enumerate(ok):
        bar = ax.barh(i, r.mean("output_tokens_per_s"), color=f"C{backends.index(r.backend) % 10}",
                      xerr=_ci_error(r, "output_tokens_per_s"), capsize=2)[0]
        if _invalid(r):
            bar.set_hatch("xx")
            bar.set_alpha(0.45)
    ax.set_yticks(range(len(ok)), [r.key for r in ok], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("output tokens/s (mean over cycles)")
    caption = f"Throughput only: energy is unavailable in every experiment ({energy_unavailable_reason(ok or results)})."
    return fig, caption


def _invalid(r: ExperimentResult) -> bool:
    return (r.validity or {}).get("verdict") == "invalid"


def _ci_error(r: ExperimentResult, metric: str) -> list[list[float]]:
    """[[below], [above]] the mean for matplotlib's xerr/yerr; zero where there is no CI (one cycle)."""
    summary = r.metrics.get(metric)
    if summary is None or summary.ci95_low is None:
        return [[0.0], [0.0]]
    return [[summary.mean - summary.ci95_low], [summary.ci95_high - summary.mean]]


def scatter_legend_labels(results: list[ExperimentResult]) -> list[str]:
    """The legend labels of the scatter as drawn (empty for the throughput-only chart)."""
    fig, _ = scatter_figure(results)
    legend = fig.axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()] if legend else []
    _plt().close(fig)
    return labels


def energy_vs_throughput(results: list[ExperimentResult]) -> tuple[str, str]:
    """(png, caption) of `scatter_figure`."""
    fig, caption = scatter_figure(results)
    return _png(fig), caption


# --- power timeseries ---------------------------------------------------------------------------

def read_timeseries(path: Path) -> tuple[list[tuple[float, float]], list[tuple[str, float]]]:
    """(t, power summed over GPUs) per sampler tick and (mark, t), from the sampler CSV."""
    by_tick: dict[str, list[float]] = {}
    marks = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("kind") == "mark":
                marks.append((row.get("mark") or "", float(row["t_s"])))
            elif row.get("power_w"):
                tick = row.get("tick") or row["t_s"]
                entry = by_tick.setdefault(tick, [float(row["t_s"]), 0.0])
                entry[1] += float(row["power_w"])
    points = sorted((t, p) for t, p in by_tick.values())
    return points, marks


def downsample(points: list[tuple[float, float]], limit: int = MAX_POWER_POINTS) -> list[tuple[float, float]]:
    """At most about `limit` points: the mean of each bucket (keeps the level, smooths spikes)."""
    if len(points) <= limit:
        return points
    size = -(-len(points) // limit)
    out = []
    for i in range(0, len(points), size):
        chunk = points[i:i + size]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    return out


SPANS = {"idle": "tab:blue", "warmup": "tab:orange", "window": "tab:green", "prefill": "tab:purple"}


def power_figure(path: Path, title: str):
    """Power against time with the idle, warmup, measured-window and prefill spans shaded; None
    when the CSV is missing or holds no power samples."""
    if not path.is_file():
        return None
    points, marks = read_timeseries(path)
    if not points:
        return None
    points = downsample(points)
    fig, axes = _figure(8.0, 2.8)
    ax = axes[0][0]
    ax.plot([p[0] for p in points], [p[1] for p in points], lw=0.8, color="black")
    for name, colour in SPANS.items():
        starts = sorted(t for m, t in marks if m == f"{name}_start")
        ends = sorted(t for m, t in marks if m == f"{name}_end")
        for i, (a, b) in enumerate(zip(starts, ends)):
            ax.axvspan(a, b, color=colour, alpha=0.18, label=name if i == 0 else None)
            if name == "window":
                ax.axvline(a, color=colour, lw=0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("GPU power (W)")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def power_timeseries(path: Path, title: str) -> Optional[str]:
    fig = power_figure(path, title)
    return _png(fig) if fig is not None else None
