"""Figures of the serving scenarios for report.html: the Pareto view across a rate or concurrency
sweep, and per experiment a timeline of running requests and power with the steady window shaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llem_bench.results.plots import _figure, _png, read_timeseries
from llem_bench.results.schema import ExperimentResult


def serving_results(results: list[ExperimentResult]) -> list[ExperimentResult]:
    return [r for r in results if r.status == "ok" and r.serving and r.mean("output_tokens_per_s") is not None]


def load_label(r: ExperimentResult) -> str:
    serving = r.config.get("serving") or {}
    if r.config.get("scenario") == "concurrency":
        return f"c={serving.get('concurrency')}"
    return f"rate={serving.get('rate')}"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower x and lower y are better)."""
    return sorted(p for p in points if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in points))


def pareto_figure(results: list[ExperimentResult]):
    """J/output token against p99 ITL and against throughput; without energy (a CPU run) p99 ITL
    against throughput, and the caption says why."""
    served = serving_results(results)
    if not served:
        return None, ""
    energy = all(r.mean("energy_per_output_token_j") is not None for r in served)
    fig, axes = _figure(10.0, 4.0, ncols=2)
    y_name, y_label = ("energy_per_output_token_j", "J / output token (steady window)") if energy else \
        ("itl_ms_p99", "p99 ITL (ms)")
    panels = [("itl_ms_p99", "p99 ITL (ms)"), ("output_tokens_per_s", "output tok/s (steady window)")]
    if not energy:
        panels = [("output_tokens_per_s", "output tok/s (steady window)"), ("ttft_ms_p99", "p99 TTFT (ms)")]
    groups: dict[str, list[ExperimentResult]] = {}
    for r in served:
        key = f"{r.backend} {r.config.get('scenario')} {r.effective.get('engine', '')}".strip()
        groups.setdefault(key, []).append(r)
    for ax, (x_name, x_label) in zip(axes[0], panels):
        for key, members in groups.items():
            points = [(r.mean(x_name), r.mean(y_name), load_label(r)) for r in members
                      if r.mean(x_name) is not None and r.mean(y_name) is not None]
            if not points:
                continue
            line = ax.scatter([p[0] for p in points], [p[1] for p in points], label=key, s=22)
            for x, y, label in points:
                ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            # For throughput, higher is better: flip it for the frontier.
            flip = -1 if x_name == "output_tokens_per_s" else 1
            front = pareto_front([(flip * x, y) for x, y, _ in points])
            ax.plot([flip * x for x, _ in front], [y for _, y in front], lw=0.8, color=line.get_facecolor()[0])
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    reason = next((r.unavailable.get("energy_per_output_token_j") for r in served
                   if r.unavailable.get("energy_per_output_token_j")), "")
    caption = ("Each point is one experiment of the sweep (label: its load); the line joins the Pareto-optimal ones. "
               + ("" if energy else f"Energy is unavailable ({reason}), so latency stands in for J/token."))
    return fig, caption


def read_requests(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def timeline_figure(run_dir: Path, r: ExperimentResult):
    """Requests in flight and being decoded (client timestamps), the engine's running count
    (/metrics), and GPU power when sampled, against time from the run start; the window shaded."""
    doc = read_requests(run_dir / r.serving["requests_file"]) if r.serving.get("requests_file") else None
    if doc is None:
        return None
    fig, axes = _figure(8.0, 2.8)
    ax = axes[0][0]
    for key, colour in (("in_flight", "tab:blue"), ("decoding", "tab:green")):
        series = doc[key]
        if series:
            ax.step([t for t, _ in series], [n for _, n in series], where="post", lw=0.8, color=colour,
                    label=key.replace("_", " "))
    running = [(s["t"], s["vllm:num_requests_running"]) for s in doc["scrapes"] if "vllm:num_requests_running" in s]
    if running:
        ax.plot([t for t, _ in running], [n for _, n in running], "o", ms=3, color="tab:red", label="engine running")
    start, end = doc["window"]
    if start is not None:
        ax.axvspan(start, end, color="tab:green", alpha=0.15, label="steady window")
    ax.set_xlabel("time from run start (s)")
    ax.set_ylabel("requests")
    if r.timeseries and (run_dir / r.timeseries).is_file():
        points, marks = read_timeseries(run_dir / r.timeseries)
        origin = next((t for m, t in marks if m == "run_start"), None)
        if points and origin is not None:
            twin = ax.twinx()
            twin.plot([t - origin for t, _ in points], [p for _, p in points], lw=0.7, color="black", label="GPU power")
            twin.set_ylabel("GPU power (W)")
    ax.set_title(r.test_id, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def section(results: list[ExperimentResult], run_dir: Path, img) -> list[str]:
    """HTML pieces for report.html: empty when the run has no serving experiments."""
    served = serving_results(results)
    if not served:
        return []
    from html import escape

    body = ["<h2>Serving: Pareto view across the sweep</h2>"]
    fig, caption = pareto_figure(served)
    if fig is not None:
        body += [img(_png(fig), "serving Pareto"), f"<p class='caption'>{escape(caption)}</p>"]
    body.append("<h2>Serving: requests and power over time</h2><p class='caption'>In flight = sent, not finished; "
                "decoding = first token seen, not finished; shaded = the steady-state window of the metrics.</p>")
    for r in served:
        fig = timeline_figure(run_dir, r)
        if fig is not None:
            body.append(img(_png(fig), f"timeline of {r.test_id}"))
    return body


def serving_table(results: list[ExperimentResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The steady-window figures of each serving experiment, for report.md and report.html."""
    from llem_bench.results.format import fmt

    rows = []
    for r in serving_results(results):
        window = r.serving.get("window") or {}
        coverage = window.get("coverage")
        stationary = (window.get("stationarity") or {}).get("stationary")
        rows.append([r.test_id, load_label(r), fmt(window.get("duration_s")),
                     "n/a" if coverage is None else f"{coverage:.0%}",
                     {True: "yes", False: "no"}.get(stationary, "n/a"),
                     fmt(r.mean("requests_per_s")), fmt(r.mean("output_tokens_per_s")),
                     fmt(r.mean("ttft_ms_p50")), fmt(r.mean("ttft_ms_p99")), fmt(r.mean("itl_ms_p50")),
                     fmt(r.mean("itl_ms_p99")), fmt(r.mean("tpot_ms_p50")), fmt(r.mean("e2e_latency_ms_p99")),
                     fmt(r.mean("goodput_requests_per_s")), fmt(r.mean("energy_per_output_token_j")),
                     fmt(r.mean("client_cpu_fraction")), fmt(r.mean("server_cpu_fraction"))])
    if not rows:
        return []
    return [("Serving: steady-state window", ["experiment", "load", "window s", "of run", "stationary", "req/s",
                                               "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                                               "TPOT p50 ms", "e2e p99 ms", "goodput req/s", "J/out tok",
                                               "client CPU", "server CPU"], rows)]
