"""study.json and report.md for a run folder, rebuilt from the result files alone (so
`llem-bench report <run-dir>` gives the same report as the pytest session did)."""

from __future__ import annotations

from typing import Optional

from llem_bench.metrics import METRICS
from llem_bench.results.format import fmt, fmt_summary, markdown_table
from llem_bench.results.html import render_error_html, render_report_html
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir, utc_now, write_json_atomic, write_text_atomic

TABLE_METRICS = ("output_tokens_per_s", "energy_per_output_token_j", "energy_per_request_j", "avg_power_w",
                 "requests_per_s", "wall_time_s", "peak_memory_mb")


def summary_rows(results: list[ExperimentResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.test_id, "FAILED", *["" for _ in TABLE_METRICS], "invalid"])
            continue
        rows.append([r.test_id, "ok" if not r.warnings else f"ok ({len(r.warnings)} warning(s))",
                     *[fmt_summary(r, m) for m in TABLE_METRICS], r.validity.get("verdict", "")])
    return rows


def header() -> list[str]:
    return ["experiment", "status", *[f"{m} ({METRICS[m].unit})" for m in TABLE_METRICS], "verdict"]


def _int(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ms(dist: dict | None, key: str) -> str:
    return fmt(dist.get(key)) if dist else "n/a"


def detail_tables(results: list[ExperimentResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Latency, prefill/decode and roofline tables, for the experiments that have them."""
    ok = [r for r in results if r.status == "ok"]
    tables = []
    latency = [[r.test_id, _ms(r.latency.get("ttft_ms"), "p50"), _ms(r.latency.get("ttft_ms"), "p99"),
                _ms(r.latency.get("itl_ms"), "p50"), _ms(r.latency.get("itl_ms"), "p99"),
                _ms(r.latency.get("e2e_latency_ms"), "p50")] for r in ok if r.latency.get("ttft_ms")]
    if latency:
        tables.append(("Streaming latency (ms)", ["experiment", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99",
                                                  "e2e p50"], latency))
    phases = []
    for r in ok:
        prefill, decode = r.phases.get("prefill") or {}, r.phases.get("decode") or {}
        if prefill or decode:
            # the runner writes prefill.energy_per_input_token_j; energy_per_token_j is the older name
            per_prompt_token = prefill.get("energy_per_input_token_j", prefill.get("energy_per_token_j"))
            phases.append([r.test_id, fmt(prefill.get("time_s")), fmt(prefill.get("energy_j")), fmt(per_prompt_token),
                           fmt(decode.get("time_s")), fmt(decode.get("energy_j")),
                           fmt(decode.get("energy_per_token_j"))])
    if phases:
        tables.append(("Prefill vs decode (per pass)", ["experiment", "prefill s", "prefill J", "prefill J/prompt token",
                                                        "decode s", "decode J", "decode J/token"], phases))
    roofline = [[r.test_id, fmt(r.roofline.get("bandwidth_gbs")), fmt(r.roofline.get("bound_tokens_per_s")),
                 fmt(r.roofline.get("measured_decode_tokens_per_s")), f"{r.roofline['fraction']:.1%}"]
                for r in ok if r.roofline.get("fraction") is not None]
    if roofline:
        tables.append(("Decode memory-bandwidth roofline", ["experiment", "GB/s", "bound tok/s", "decode tok/s",
                                                            "fraction"], roofline))
    power = []
    for r in ok:
        idle = r.idle or {}
        check = (r.power or {}).get("cross_check") or {}
        if not (r.power.get("samples") or (idle.get("resident") or {}).get("mean_power_w") is not None):
            continue
        diff = check.get("relative_difference")
        power.append([r.test_id, fmt((idle.get("before_load") or {}).get("mean_power_w")),
                      fmt((idle.get("resident") or {}).get("mean_power_w")), _int(r.power.get("samples")),
                      _int(r.power.get("max_temperature_c")), ", ".join(r.power.get("throttle_reasons") or []) or "none",
                      "n/a" if diff is None else f"{diff:+.2%}" + ("" if check.get("agree", True) else " DISAGREE")])
    if power:
        tables.append(("Idle power and power sampling", ["experiment", "idle W (before load)", "idle W (resident)",
                                                         "samples", "max °C", "throttling",
                                                         "counter vs samples"], power))
    from llem_bench.results.serving_plots import serving_table  # serving scenarios only

    tables += serving_table(results)
    validity = [[r.test_id, r.validity["verdict"], "; ".join(r.validity.get("reasons") or [])]
                for r in results if r.validity.get("verdict") in ("warning", "invalid")]
    if validity:
        tables.append(("Validity: why not valid", ["experiment", "verdict", "reasons"], validity))
    return tables


def study_summary(run: RunDir, results: list[ExperimentResult], problems: list[str]) -> dict:
    first = results[0] if results else None
    return {
        "study": first.study if first else run.path.parent.name,
        "run_id": first.run_id if first else run.path.name,
        "written_at": utc_now(),
        "environment": first.environment if first else {},
        "experiments": [{
            "test_id": r.test_id, "status": r.status, "error": r.error, "backend": r.backend,
            "config_hash": r.config_hash, "result": f"results/{r.test_id}.json",
            "means": {m: r.mean(m) for m in METRICS}, "warnings": r.warnings,
        } for r in results],
        "unreadable_results": problems,
    }


def render_markdown(summary: dict, results: list[ExperimentResult]) -> str:
    env = summary["environment"]
    nvml = env.get("nvml", {})
    gpus = ", ".join(sorted({g["name"] for g in nvml.get("gpus", [])})) if nvml.get("available") else "none"
    lines = [
        f"# {summary['study']}: run {summary['run_id']}",
        "",
        f"- commit: `{env.get('git_commit') or 'unknown'}`{' (dirty)' if env.get('git_dirty') else ''}",
        f"- host: {env.get('host')} — CPU: {env.get('cpu')} — GPUs: {gpus}"
        + (f" — driver {nvml.get('driver')}, CUDA {nvml.get('cuda_driver')}" if nvml.get("available") else ""),
        f"- packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        f"- experiments: {len(results)} ({sum(r.status == 'ok' for r in results)} ok)",
        "",
        "Values are mean ± 95% CI half-width over the measured cycles; n/a means not measured (see below).",
        "",
        markdown_table(header(), summary_rows(results)),
        "",
    ]
    for title, head, rows in detail_tables(results):
        lines += [f"## {title}", "", markdown_table(head, rows), ""]
    notes = report_notes(summary, results)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def report_notes(summary: dict, results: list[ExperimentResult]) -> list[str]:
    notes = []
    for r in results:
        if r.status != "ok":
            notes.append(f"- **{r.test_id}** failed: {r.error}")
            continue
        by_reason: dict[str, list[str]] = {}
        for metric, reason in r.unavailable.items():
            by_reason.setdefault(reason, []).append(f"`{metric}`")
        for reason, metrics in by_reason.items():
            notes.append(f"- {r.test_id}: {', '.join(metrics)} unavailable: {reason}")
        notes.extend(f"- {r.test_id}: warning: {w}" for w in r.warnings)
        if r.synthetic:
            notes.append(f"- {r.test_id}: synthetic model (random weights of a real shape): {r.model}")
        if r.validity.get("verdict") == "invalid":
            notes.append(f"- **{r.test_id}** is invalid: {'; '.join(r.validity.get('reasons', []))}")
    notes.extend(f"- {p}" for p in summary["unreadable_results"])
    return list(dict.fromkeys(notes))


def write_reports(run: RunDir) -> Optional[dict]:
    """Write study.json, report.md and report.html (self-contained) from the results on disk; None if
    there are none."""
    results, problems = run.read_results_with_problems()
    if not results and not problems:
        return None
    summary = study_summary(run, results, problems)
    write_json_atomic(run.path / "study.json", summary)
    write_text_atomic(run.path / "report.md", render_markdown(summary, results))
    try:
        page = render_report_html(summary, results, run.path, header(), summary_rows(results),
                                  report_notes(summary, results), detail_tables(results))
    except Exception as exc:  # a plotting problem must not cost the run its report.md and study.json
        page = render_error_html(summary, header(), summary_rows(results), exc)
    write_text_atomic(run.path / "report.html", page)
    return summary
