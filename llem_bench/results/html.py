"""report.html and comparison.html: self-contained pages (inline CSS, figures as base64 PNG data
URIs; no JavaScript, nothing fetched)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional

from llem_bench.results import plots
from llem_bench.results.format import fmt
from llem_bench.results.schema import ExperimentResult

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1250px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}
.warn{color:#a60}.good{color:#070}img{max-width:100%;border:1px solid #eee;margin:6px 0}
code{background:#f6f6f6}.caption{font-size:13px;color:#444}li{margin:2px 0}"""

VERDICT_CLASS = {"valid": "good", "warning": "warn", "invalid": "bad", "FAILED": "bad",
                 "improved": "good", "unchanged": "", "inconclusive": "warn", "regressed": "warn",
                 "REGRESSED": "bad", "INCONCLUSIVE": "bad"}


def esc(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    cls = VERDICT_CLASS.get(str(value), "")
    return f"<td class='{cls}'>{esc(value)}</td>" if cls else f"<td>{esc(value)}</td>"


def table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def img(png: str, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{png}">'


def _page(title: str, body: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>" + "".join(body) + "</body></html>\n")


def _environment(env: dict[str, Any]) -> str:
    nvml = env.get("nvml") or {}
    gpus = ", ".join(sorted({g["name"] for g in nvml.get("gpus", [])})) if nvml.get("available") else "none"
    driver = f", driver {nvml.get('driver')}, CUDA {nvml.get('cuda_driver')}" if nvml.get("available") else ""
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
    dirty = " (dirty)" if env.get("git_dirty") else ""
    return (f"<ul><li>commit <code>{esc(env.get('git_commit') or 'unknown')}</code>{dirty}</li>"
            f"<li>host {esc(env.get('host'))}; CPU {esc(env.get('cpu'))}; GPUs {esc(gpus)}{esc(driver)}</li>"
            f"<li>packages: {esc(packages)}</li></ul>")


def render_report_html(summary: dict[str, Any], results: list[ExperimentResult], run_dir: Path,
                       head: list[str], rows: list[list[str]], notes: list[str],
                       tables: Optional[list[tuple[str, list[str], list[list[str]]]]] = None) -> str:
    """The run's page: experiment table, detail tables (latency, prefill/decode, roofline), the
    energy/throughput scatter, bars per sweep axis, power timeseries, then warnings and reasons."""
    title = f"{summary['study']}: run {summary['run_id']}"
    ok = sum(r.status == "ok" for r in results)
    body = [f"<h1>{esc(title)}</h1>", _environment(summary.get("environment") or {}),
            f"<p>{len(results)} experiment(s), {ok} ok. Values are mean ± 95% CI half-width over the measured "
            "cycles; n/a means not measured (the reason is under Notes).</p>",
            "<h2>Experiments</h2>", table(head, rows)]
    for name, tab_head, tab_rows in tables or []:
        body += [f"<h2>{esc(name)}</h2>", table(tab_head, tab_rows)]

    measured = [r for r in results if r.status == "ok"]
    if measured:
        png, caption = plots.energy_vs_throughput(measured)
        body += ["<h2>Energy per output token against throughput</h2>", img(png, caption),
                 f"<p class='caption'>{esc(caption)}</p>"]
        bars = plots.bars_per_axis(measured)
        if bars:
            body.append("<h2>Per sweep axis</h2><p class='caption'>Grouped by the settings that differ between "
                        "the experiments (from what the study wrote); one bar per series.</p>")
            body += [img(png, f"by {plots.axis_title(measured, axis)}") for axis, png in bars]

    from llem_bench.results import serving_plots  # serving scenarios only; nothing for offline runs

    body += serving_plots.section(results, run_dir, img)

    figures, missing = [], []
    for r in results:
        png = plots.power_timeseries(run_dir / r.timeseries, r.key) if r.timeseries else None
        if png:
            figures.append(img(png, f"power of {r.key}"))
        else:
            why = (f"{r.timeseries} not found" if r.timeseries else
                   (r.power.get("reason") or r.energy.get("reason") or "no timeseries recorded"))
            missing.append(f"{r.key}: {why}")
    body.append("<h2>GPU power over time</h2>")
    if figures:
        body.append("<p class='caption'>Power summed over the experiment's GPUs (NVML, downsampled for the "
                    "page). Shaded: resident idle, warmup, each measured window, the prefill window.</p>")
        body += figures
    if missing:
        body.append("<p class='caption'>No power timeseries for:</p><ul>"
                    + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul>")

    if notes:
        body.append("<h2>Notes: failures, warnings, unavailable metrics</h2><ul>")
        body += [f"<li>{esc(n[2:] if n.startswith('- ') else n).replace('**', '')}</li>" for n in notes]
        body.append("</ul>")
    return _page(title, body)


# --- comparison ---------------------------------------------------------------------------------

def _num(value: Optional[float]) -> str:
    return fmt(value)


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _ci(c: Any) -> str:
    if c.ci95 is None or c.ci95_pct is None:
        return "n/a"
    return f"{_num(c.ci95[0])} .. {_num(c.ci95[1])} ({_pct(c.ci95_pct[0])} .. {_pct(c.ci95_pct[1])})"


def render_comparison_html(comparison: Any) -> str:
    """A `compare.Comparison` as a page: warnings, a table per experiment (baseline, candidate, repeats,
    delta, 95% CI of the difference, p, detectable change, verdict), why metrics were not compared,
    why the gate fails, GATE line."""
    from llem_bench.results.compare import COMPARISON_HEAD, EXPLANATION, metric_row

    gate = comparison.gate_line
    cls = "bad" if comparison.failed else "good"
    body = ["<h1>Comparison: baseline vs candidate</h1>", f"<h2 class='{cls}'>{esc(gate)}</h2>"]
    if comparison.loud_warnings:
        body.append("<ul>" + "".join(f"<li class='warn'>WARNING: {esc(w)}</li>" for w in comparison.loud_warnings)
                    + "</ul>")
    if comparison.failures:
        body.append("<ul>" + "".join(f"<li class='bad'>{esc(f)}</li>" for f in comparison.failures) + "</ul>")
    if comparison.only_cand:
        body.append(f"<p class='warn'>Only in the candidate: {esc(', '.join(comparison.only_cand))}</p>")
    gates = ", ".join(f"{m} ±{t * 100:g}%" for m, t in comparison.gates.items())
    body.append(f"<p class='caption'>Gated metrics: {esc(gates)}; on_inconclusive: {esc(comparison.on_inconclusive)}. "
                f"{esc(EXPLANATION)}</p>")
    for exp in comparison.experiments:
        title = exp.test_id if exp.test_id == exp.base_test_id else f"{exp.test_id} (baseline {exp.base_test_id})"
        body.append(f"<h2>{esc(title)}</h2>")
        if exp.failure:
            body.append(f"<p class='bad'>REGRESSION: {esc(exp.failure)}</p>")
        if exp.invalid:
            body.append(f"<p class='bad'>INVALID: {esc(exp.invalid)}</p>")
        rows = [metric_row(metric, c, bool(exp.gated.get(metric))) for metric, c in exp.metrics.items()]
        if rows:
            body.append(table(COMPARISON_HEAD, rows))
        notes = [f"{m}: not compared: {why}" for m, why in exp.skipped.items()]
        notes += [f"{m}: inconclusive: {c.reason}" for m, c in exp.metrics.items() if c.reason]
        if notes:
            body.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    body.append(f"<p class='{cls}'>{esc(gate)}</p>")
    return _page("comparison", body)


def render_error_html(summary: dict[str, Any], head: list[str], rows: list[list[str]], error: BaseException) -> str:
    """The page when the figures could not be drawn: the table, and the error (report.md has the rest)."""
    title = f"{summary['study']}: run {summary['run_id']}"
    return _page(title, [f"<h1>{esc(title)}</h1>", table(head, rows),
                         f"<p class='bad'>The figures could not be drawn: {esc(type(error).__name__)}: {esc(error)}. "
                         "See report.md.</p>"])
