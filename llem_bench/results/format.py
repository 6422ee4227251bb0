"""Number and table formatting shared by report.md, report.html and comparison.md."""

from __future__ import annotations

from typing import Optional

from llem_bench.results.schema import ExperimentResult


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def fmt_summary(result: ExperimentResult, metric: str) -> str:
    summary = result.metrics.get(metric)
    if summary is None:
        return "n/a"
    if summary.ci95_high is None:
        return fmt(summary.mean)
    return f"{fmt(summary.mean)} ± {fmt(summary.ci95_high - summary.mean)}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
