"""report.html and comparison.html: self-contained pages (inline CSS, figures as data URIs)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from llem_bench.results import plots
from llem_bench.results.schema import ExperimentResult

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.bad{color:#b00}.warn{color:#a60}
img{max-width:100%;border:1px solid #eee;margin:6px 0}code{background:#f6f6f6}"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _img(png: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def render_report_html(summary: dict[str, Any], results: list[ExperimentResult], run_dir: Path,
                       head: list[str], rows: list[list[str]], notes: list[str]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary['study'])}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(summary['study'])}: run {html.escape(summary['run_id'])}</h1>",
             f"<p>commit <code>{html.escape(str(summary['environment'].get('git_commit')))}</code>, "
             f"{len(results)} experiment(s). Values are mean ± 95% CI half-width over the cycles.</p>",
             _table(head, rows)]
    png, caption = plots.energy_vs_throughput(results)
    parts += ["<h2>Energy per token against throughput</h2>", _img(png, caption), f"<p>{html.escape(caption)}</p>"]
    bars = plots.bars_per_axis(results)
    if bars:
        parts.append("<h2>Throughput per sweep axis</h2>")
        parts += [f"<h3>{html.escape(key)}</h3>" + _img(png, key) for key, png in bars]
    series = [(r, plots.power_timeseries(run_dir / r.timeseries, r.test_id)) for r in results if r.timeseries]
    if any(png for _, png in series):
        parts.append("<h2>GPU power over time</h2><p>Shaded: idle, warmup, measured windows, prefill window.</p>")
        parts += [_img(png, r.test_id) for r, png in series if png]
    if notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n.lstrip('- '))}</li>" for n in notes] + ["</ul>"]
    return "".join(parts) + "</body></html>"


def render_comparison_html(comparison: Any) -> str:
    from llem_bench.results.compare import render_comparison_markdown

    # The markdown is the reference rendering; the page shows it with tables turned into HTML.
    lines = render_comparison_markdown(comparison).splitlines()
    out, table = [f"<!doctype html><html><head><meta charset='utf-8'><title>comparison</title><style>{STYLE}</style>"
                  "</head><body>"], []

    def flush() -> None:
        if table:
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in table if not set(line) <= set("|-: ")]
            out.append(_table(rows[0], rows[1:]))
            table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("GATE:"):
            cls = "bad" if "FAIL" in line else ""
            out.append(f"<h2 class='{cls}'>{html.escape(line)}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.lstrip('- '))}</p>")
    flush()
    return "".join(out) + "</body></html>"
