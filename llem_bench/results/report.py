"""study.json and report.md for a run folder, rebuilt from the result files alone (so
`llem-bench report <run-dir>` gives the same report as the pytest session did)."""

from __future__ import annotations

from typing import Optional

from llem_bench.metrics import METRICS
from llem_bench.results.format import fmt, fmt_summary, markdown_table
from llem_bench.results.html import render_error_html, render_report_html
from llem_bench.results.manifest import Manifest
from llem_bench.results.repeats import has_repeats, noise_floor
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir, utc_now, write_json_atomic, write_text_atomic

TABLE_METRICS = ("output_tokens_per_s", "energy_per_output_token_j", "energy_per_request_j", "avg_power_w",
                 "requests_per_s", "wall_time_s", "peak_memory_mb")


def summary_rows(results: list[ExperimentResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.key, "FAILED", *["" for _ in TABLE_METRICS], "invalid"])
            continue
        rows.append([r.key, "ok" if not r.warnings else f"ok ({len(r.warnings)} warning(s))",
                     *[fmt_summary(r, m) for m in TABLE_METRICS], r.validity.get("verdict", "")])
    return rows


def _idle_cell(idle: Optional[dict]) -> str:
    """Idle power with its uncertainty, when it was taken and on which GPUs (results before the counter-based
    idle have only the mean)."""
    idle = idle or {}
    text = fmt(idle.get("mean_power_w"))
    if idle.get("uncertainty_w") is not None:
        text += f" ± {idle['uncertainty_w']:.1f}"
    if idle.get("seconds_after_last_gpu_work") is not None:
        text += f", {idle['seconds_after_last_gpu_work']:.1f} s after work"
    if idle.get("scope"):
        text += f" ({idle['scope']})"
    return text


def header() -> list[str]:
    return ["experiment", "status", *[f"{m} ({METRICS[m].unit})" for m in TABLE_METRICS], "verdict"]


def _int(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ms(dist: dict | None, key: str) -> str:
    return fmt(dist.get(key)) if dist else "n/a"


# The noise-floor table's columns: one metric of each collinear family (tok/s ~ req/s, J/token ~ J/request).
NOISE_METRICS = ("output_tokens_per_s", "energy_per_output_token_j", "energy_per_output_token_net_j", "avg_power_w",
                 "peak_power_w", "wall_time_s")


def _cv(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def noise_floor_tables(results: list[ExperimentResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    """With repeats: the mean over repeats ± 95% CI, and the CV over repeats per metric and experiment
    with the within-run cycle CV beside it (the noise a gate must allow for)."""
    floor = noise_floor(results)
    if not has_repeats(floor):
        return []
    shown = [m for m in NOISE_METRICS if any(m in e["metrics"] for e in floor.values())]
    cv_rows, mean_rows = [], []
    for test_id, entry in floor.items():
        metrics = entry["metrics"]
        n = f"{entry['repeats'] - entry['failed']}" + (f" ({entry['failed']} failed)" if entry["failed"] else "")
        cv_rows.append([test_id, n, *[f"{_cv(metrics[m]['cv'])} (cycles {_cv(metrics[m]['cycle_cv'])})"
                                      if m in metrics else "n/a" for m in shown]])
        mean_rows.append([test_id, n, *[(fmt(metrics[m]["mean"]) + (f" ± {fmt(metrics[m]['ci95_high'] - metrics[m]['mean'])}"
                                                                  if metrics[m]["ci95_high"] is not None else ""))
                                        if m in metrics else "n/a" for m in shown]])
    head = ["experiment", "repeats", *[f"{m} ({METRICS[m].unit})" for m in shown]]
    return [("Run-to-run noise floor: CV over repeats (within-run cycle CV)", head[:2] + shown, cv_rows),
            ("Mean over repeats ± 95% CI (t, n - 1 df, of the per-repeat means)", head, mean_rows)]


def _latency_row(r: ExperimentResult) -> list[str]:
    """n is the number of distinct stamps (independent samples); p90/p99 are n/a when too few stand behind them."""
    ttft = r.latency.get("ttft_ms")
    return [r.key, _ms(ttft, "p50"), _ms(ttft, "p90"), _int(ttft.get("n_independent", ttft.get("n"))),
            _ms(r.latency.get("itl_ms"), "p50"), _ms(r.latency.get("itl_ms"), "p99"),
            _ms(r.latency.get("tpot_ms"), "mean"), _ms(r.latency.get("e2e_latency_ms"), "p50"),
            _int(r.latency.get("passes", 1))]


def detail_tables(results: list[ExperimentResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Noise floor (with repeats), latency, prefill/decode and roofline tables, for the experiments that
    have them."""
    ok = [r for r in results if r.status == "ok"]
    tables = noise_floor_tables(results)
    latency = [_latency_row(r) for r in ok if r.latency.get("ttft_ms")]
    if latency:
        tables.append(("Streaming latency (ms)", ["experiment", "TTFT p50", "TTFT p90", "TTFT n", "ITL p50",
                                                  "ITL p99", "TPOT mean", "e2e p50", "passes"], latency))
    phases = []
    for r in ok:
        prefill, decode = r.phases.get("prefill") or {}, r.phases.get("decode") or {}
        if prefill or decode:
            # the runner writes prefill.energy_per_input_token_j; energy_per_token_j is the older name
            per_prompt_token = prefill.get("energy_per_input_token_j", prefill.get("energy_per_token_j"))
            phases.append([r.key, fmt(prefill.get("time_s")), fmt(prefill.get("energy_j")), fmt(per_prompt_token),
                           fmt(decode.get("time_s")), fmt(decode.get("energy_j")),
                           fmt(decode.get("energy_per_token_j"))])
    if phases:
        tables.append(("Prefill vs decode (per pass)", ["experiment", "prefill s", "prefill J", "prefill J/prompt token",
                                                        "decode s", "decode J", "decode J/token"], phases))
    roofline = [[r.key, fmt(r.roofline.get("bandwidth_gbs")), fmt(r.roofline.get("bound_tokens_per_s")),
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
        fractions = (r.power or {}).get("throttle_fraction") or {}
        throttling = ", ".join(f"{n} {fractions[n]:.0%}" if n in fractions else n
                               for n in r.power.get("throttle_reasons") or []) or "none"
        same_source = "same source" in (check.get("reason") or "")
        power.append([r.key, _idle_cell(idle.get("before_load")), _idle_cell(idle.get("resident")),
                      _int(r.power.get("samples")), _int(r.power.get("max_temperature_c")),
                      "n/a" if r.power.get("gpu_busy_pct") is None else f"{r.power['gpu_busy_pct']:.0f}%", throttling,
                      "n/a (same source)" if same_source else "n/a" if diff is None
                      else f"{diff:+.2%}" + ("" if check.get("agree", True) else " DISAGREE")])
    if power:
        tables.append(("Idle power and power sampling", ["experiment", "idle W (before load)", "idle W (resident)",
                                                         "samples", "max °C", "GPU busy", "throttling (share of samples)",
                                                         "counter vs samples"], power))
    from llem_bench.results.serving_plots import serving_table  # serving scenarios only

    tables += serving_table(results)
    validity = [[r.key, r.validity["verdict"], "; ".join(r.validity.get("reasons") or [])]
                for r in results if r.validity.get("verdict") in ("warning", "invalid")]
    if validity:
        tables.append(("Validity: why not valid", ["experiment", "verdict", "reasons"], validity))
    return tables


def repeats_record(run: RunDir, results: list[ExperimentResult]) -> dict:
    """How the repeats ran: the planned order (manifest.json), the order they ran in, and the runs that
    loaded a model (the others reused the one loaded before them)."""
    manifest = Manifest.read(run.path) or {}
    ran: dict[str, list[str]] = {}
    for r in results:
        ran.setdefault(str(r.repeat or 1), []).append(r.key)
    return {
        "repeats": max((r.repeats for r in results), default=1),
        "plan": manifest.get("plan"),
        "ran": ran,
        "loaded": [r.key for r in results if r.status == "ok" and r.timings.get("model_reused") is False],
    }


def study_summary(run: RunDir, results: list[ExperimentResult], problems: list[str]) -> dict:
    first = results[0] if results else None
    return {
        "study": first.study if first else run.path.parent.name,
        "run_id": first.run_id if first else run.path.name,
        "written_at": utc_now(),
        "environment": first.environment if first else {},
        "experiments": [{
            "test_id": r.test_id, "repeat": r.repeat, "status": r.status, "error": r.error, "backend": r.backend,
            "config_hash": r.config_hash, "result": f"results/{r.key}.json",
            "means": {m: r.mean(m) for m in METRICS}, "warnings": r.warnings,
        } for r in results],
        "repeats": repeats_record(run, results),
        # test_id -> metric -> mean over repeats, between-repeat sd/cv, n, CI, within-run cycle CV
        "noise_floor": noise_floor(results),
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
        "Values are mean ± 95% CI half-width over the measured cycles of one run (cycles share one process "
        "and model load: the CI leaves out run-to-run noise; see the noise-floor table where the study has "
        "repeats); n/a means not measured (see below).",
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
            notes.append(f"- **{r.key}** failed: {r.error}")
            continue
        by_reason: dict[str, list[str]] = {}
        for metric, reason in r.unavailable.items():
            by_reason.setdefault(reason, []).append(f"`{metric}`")
        for reason, metrics in by_reason.items():
            notes.append(f"- {r.key}: {', '.join(metrics)} unavailable: {reason}")
        notes.extend(f"- {r.key}: warning: {w}" for w in r.warnings)
        if r.synthetic:
            notes.append(f"- {r.key}: synthetic model (random weights of a real shape): {r.model}")
        if r.validity.get("verdict") == "invalid":
            notes.append(f"- **{r.key}** is invalid: {'; '.join(r.validity.get('reasons', []))}")
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
