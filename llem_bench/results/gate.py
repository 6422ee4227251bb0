"""The session's regression gate: compare this run with a baseline and write comparison.md."""

from __future__ import annotations

from pathlib import Path

from llem_bench.results.compare import (Comparison, compare_runs, gates_from, load_side, policy_from,
                                        render_comparison_markdown)
from llem_bench.results.store import RunDir, write_text_atomic


def gate_against_baseline(baseline: str, run: RunDir, study_gates: dict, allow_invalid: bool = False) -> Comparison:
    comparison = compare_runs(load_side(Path(baseline)), load_side(run.path), gates_from(study_gates or None),
                              on_inconclusive=policy_from(study_gates), allow_invalid=allow_invalid)
    write_text_atomic(run.path / "comparison.md", render_comparison_markdown(comparison))
    from llem_bench.results.html import render_comparison_html

    write_text_atomic(run.path / "comparison.html", render_comparison_html(comparison))
    return comparison
