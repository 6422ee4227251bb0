"""report.md / report.html from real runs: the committed H100 vLLM+PyTorch run, and CPU-like
results (no energy anywhere) derived from it; comparison.html from the committed gate demo."""

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

from llem_bench.results import plots
from llem_bench.results.compare import compare_runs, load_side
from llem_bench.results.html import render_comparison_html
from llem_bench.results.report import write_reports
from llem_bench.results.store import RunDir

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reports" / "reference" / "h100-vllm-llama-1b"
GATE_DEMO = REPO / "reports" / "examples" / "gate-demo" / "gate-demo"
CPU_REASON = "the experiment runs on the CPU; NVML measures GPU energy only"


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.text, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def page_alts(path: Path) -> list[str]:
    """The alt text of every image on the page."""
    alts = []

    class Alts(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                alts.append(dict(attrs).get("alt"))

    Alts().feed(path.read_text())
    return alts


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    page.close()
    return page


def test_gpu_run_report_html_has_scatter_per_backend_bars_and_power_plots(tmp_path):
    run = RunDir(shutil.copytree(REFERENCE, tmp_path / "run"))
    write_reports(run)
    results = run.read_results()
    assert len(results) == 7

    # the scatter: one series per backend, as drawn
    assert plots.scatter_legend_labels(results) == ["pytorch", "vllm"]
    series = plots.scatter_series(results)
    assert {b: len(p) for b, p in series.items()} == {"pytorch": 3, "vllm": 4}
    # sweep axes come from what the study wrote; batch_size (pytorch only) is tied to num_prompts
    assert set(plots.sweep_axes(results)) == {"workload.num_prompts", "batch_size"}
    x_values, by_series = plots.axis_groups(results, "workload.num_prompts")
    assert x_values == [1, 8, 64, 256] and set(by_series) == {"pytorch", "vllm"}

    html_path = run.path / "report.html"
    page = parse(html_path)
    text = " ".join(page.text)
    assert "script" not in page.tags and "http://" not in html_path.read_text().replace("http://www.w3", "")
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert base64.b64decode(page.images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(page.images) == 1 + 2 + 7  # scatter, 2 sweep axes, a power timeseries per experiment
    assert all(r.test_id in text for r in results)
    assert "Streaming latency (ms)" in text and "Decode memory-bandwidth roofline" in text
    assert "warmup did not stabilise" in text  # warnings reach the page
    assert html_path.stat().st_size < 3_000_000

    md = (run.path / "report.md").read_text()
    assert "## Streaming latency (ms)" in md and "## Decode memory-bandwidth roofline" in md
    assert "## Prefill vs decode (per pass)" in md and "| verdict |" in md
    assert all(f"| {r.validity['verdict']} |" in md for r in results)


def _cpu_like(src: Path, dst: Path) -> RunDir:
    """The reference run's pytorch results as a CPU run would write them: no energy, no sampler."""
    (dst / "results").mkdir(parents=True)
    for path in sorted((src / "results").glob("pytorch-*.json")):
        data = json.loads(path.read_text())
        for metric in ("energy_per_output_token_j", "energy_per_output_token_net_j", "energy_per_request_j",
                       "avg_power_w", "peak_power_w"):
            data["metrics"][metric] = None
            data["unavailable"][metric] = CPU_REASON
        data["energy"] = {"source": "none", "available": False, "reason": CPU_REASON, "gpus": []}
        data["power"] = {"reason": "no power sampler: the experiment runs on the CPU"}
        data["timeseries"] = None
        data["environment"]["nvml"] = {"available": False}
        (dst / "results" / path.name).write_text(json.dumps(data))
    return RunDir(dst)


def test_cpu_run_report_plots_throughput_only_and_says_why(tmp_path):
    run = _cpu_like(REFERENCE, tmp_path / "cpu")
    write_reports(run)
    results = run.read_results()
    assert plots.scatter_series(results) == {} and plots.scatter_legend_labels(results) == []
    _, caption = plots.energy_vs_throughput(results)
    assert caption == f"Throughput only: energy is unavailable in every experiment ({CPU_REASON})."
    page = parse(run.path / "report.html")
    text = " ".join(page.text)
    assert caption in text
    assert "no power sampler: the experiment runs on the CPU" in text  # why there is no timeseries
    assert len(page.images) == 1 + 1  # throughput bars, and batch_size (= num_prompts: they move together)
    assert "by batch_size (= num_prompts)" in page_alts(run.path / "report.html")
    assert "n/a" in (run.path / "report.md").read_text()


def test_report_html_survives_a_plotting_error(tmp_path, monkeypatch):
    run = RunDir(shutil.copytree(REFERENCE, tmp_path / "run"))

    def broken(*args, **kwargs):
        raise RuntimeError("no backend")

    monkeypatch.setattr(plots, "energy_vs_throughput", broken)
    assert write_reports(run) is not None
    page = (run.path / "report.html").read_text()
    assert "The figures could not be drawn: RuntimeError: no backend" in page
    assert (run.path / "report.md").is_file()


def test_comparison_html_shows_deltas_verdicts_and_the_gate():
    comparison = compare_runs(load_side(GATE_DEMO / "baseline"), load_side(GATE_DEMO / "candidate-1-thread"))
    page = render_comparison_html(comparison)
    parser = Page()
    parser.feed(page)
    text = " ".join(parser.text)
    assert "script" not in parser.tags
    assert "95% CI of difference" in text and "delta %" in text
    for exp in comparison.experiments:
        assert exp.test_id in text
        for c in exp.metrics.values():
            assert c.verdict in text or c.verdict.upper() in text
    # one run per side (the example predates repeats): cycles alone never decide, even for 1 thread
    assert comparison.failed and "GATE: FAIL (1 inconclusive)" in text and "REGRESSED" not in text
    assert "no run-level variance: run with measurement.repeats >= 2" in text and "detectable change" in text

    same = compare_runs(load_side(GATE_DEMO / "baseline"), load_side(GATE_DEMO / "baseline"), on_inconclusive="warn")
    page = render_comparison_html(same)
    assert "GATE: PASS with 1 inconclusive" in page and "WARNING: INCONCLUSIVE (on_inconclusive: warn)" in page


# --- the committed PyTorch run: GPU energy, no sampler data, no latency/phases/roofline ----------

PYTORCH_REFERENCE = REPO / "reports" / "reference" / "h100-pytorch-llama-1b"


def test_gpu_run_without_sampler_data_gets_scatter_and_bars_and_says_why_no_timeseries(tmp_path):
    run = RunDir(shutil.copytree(PYTORCH_REFERENCE, tmp_path / "run"))
    (run.path / "report.html").unlink()
    summary = write_reports(run)
    results = run.read_results()
    assert len(results) == 6 and len(summary["experiments"]) == 6

    html_path = run.path / "report.html"
    page = parse(html_path)
    text = " ".join(page.text)
    assert "script" not in page.tags and "link" not in page.tags
    assert all(r.test_id in text for r in results)
    # the scatter comes first, as an inline PNG, with one series (pytorch)
    assert page.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(page.images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.scatter_legend_labels(results) == ["pytorch"]
    assert "Energy per output token against throughput" in text
    # batch_size and num_prompts move together, as do prompts and input_tokens: one chart each
    assert plots.tied_axes(results) == {"batch_size": ["workload.num_prompts"],
                                        "workload.prompts": ["workload.input_tokens"]}
    assert len(page.images) == 1 + 2  # no timeseries in these results
    assert "No power timeseries for:" in text
    # the old results carry none of the new slots: no empty sections, no crash
    assert "Streaming latency (ms)" not in text and "Decode memory-bandwidth roofline" not in text
    md = (run.path / "report.md").read_text()
    assert "## Streaming latency" not in md and "## Prefill vs decode" not in md and "## Validity" not in md
    assert "| verdict |" in md and all(f"| {r.test_id} | ok" in md for r in results)


# --- synthetic results with every new slot filled ----------------------------------------------

def _summary(values):
    from llem_bench.stats import summarize
    from llem_bench.results.schema import MetricSummary

    return MetricSummary(**summarize(values))


def _result(test_id, backend, batch, *, verdict="valid", reasons=(), timeseries=None, energy=True, ttft=None,
            setting="batch_size"):
    from llem_bench.results.schema import ExperimentResult

    tps = [100.0 * batch, 101.0 * batch, 99.0 * batch]
    metrics = {"output_tokens_per_s": _summary(tps), "wall_time_s": _summary([6.0, 6.1, 5.9]),
               "requests_per_s": _summary([v / 64 for v in tps])}
    metrics["energy_per_output_token_j"] = _summary([2.0 / batch, 2.1 / batch, 1.9 / batch]) if energy else None
    return ExperimentResult(
        test_id=test_id, config_hash=test_id[-6:], study="synth", run_id="r1", status="ok", backend=backend,
        model="synthetic:tiny", synthetic=True, config={"dtype": "bfloat16", backend: {setting: batch}},
        explicit={"dtype": "bfloat16", backend: {setting: batch}},
        energy={"source": "nvml_counter", "available": True, "gpus": [{"name": "NVIDIA H100 80GB HBM3"}]},
        metrics=metrics,
        unavailable={} if energy else {"energy_per_output_token_j": "the GPU has no energy counter"},
        latency={"ttft_ms": {"mean": ttft, "p50": ttft, "p90": ttft * 1.5, "p99": ttft * 2, "n": 8},
                 "itl_ms": {"mean": 5.0, "p50": 4.5, "p90": 7.0, "p99": 12.5, "n": 255},
                 "e2e_latency_ms": {"mean": 1300.0, "p50": 1290.0, "p90": 1400.0, "p99": 1500.0, "n": 8}}
        if ttft else {},
        phases={"prefill": {"time_s": 0.02, "energy_j": 3.0, "energy_per_token_j": 0.0468},
                "decode": {"time_s": 4.0, "energy_j": 600.0, "energy_per_token_j": 2.345}},
        roofline={"bound_tokens_per_s": 1000.0 * batch, "fraction": 0.125, "bandwidth_gbs": 3350.0,
                  "bytes_per_step": 2.5e9, "gpu": "NVIDIA H100 80GB HBM3"},
        validity={"verdict": verdict, "reasons": list(reasons)},
        power={"samples": 120, "max_temperature_c": 51, "gpu_busy_pct": 27.4, "throttle_reasons": ["sw_power_cap"],
               "cross_check": {"relative_difference": 0.0123, "agree": True, "threshold": 0.03}},
        idle={"before_load": {"mean_power_w": 70.0}, "resident": {"mean_power_w": 120.0}},
        timeseries=timeseries, started_at=f"2026-01-01T00:00:0{batch % 10}+00:00")


MARKS = [(0.0, "idle_start"), (1.0, "idle_end"), (1.2, "warmup_start"), (2.0, "warmup_end"),
         (2.1, "window_start"), (3.0, "window_end"), (3.1, "window_start"), (4.0, "window_end")]


def _write_timeseries(path: Path) -> None:
    """Two GPUs sampled every 50 ms (idle at 60 W each, 300 W each in the windows) plus marks."""
    cols = ("t_s,kind,tick,gpu,power_w,power_instant_w,sm_clock_mhz,mem_clock_mhz,temperature_c,gpu_util_pct,"
            "mem_util_pct,throttle_mask,energy_mj,throttle_reasons,mark")
    lines = [cols]
    for tick in range(90):
        t = tick * 0.05
        watts = 300.0 if 2.1 <= t <= 4.0 else 60.0
        for gpu in ("gpu-a", "gpu-b"):
            lines.append(f"{t:.3f},sample,{tick},{gpu},{watts},{watts},1980,2619,45,90,40,0,{int(t * 1e6)},,")
    lines += [f"{t:.3f},mark,,,,,,,,,,,,,{label}" for t, label in MARKS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _synthetic_run(root: Path) -> tuple[RunDir, list]:
    run = RunDir(root / "synth" / "r1")
    _write_timeseries(run.path / "timeseries" / "pytorch-b1.csv")
    results = [
        _result("pytorch-tiny-bf16-batch_size_1-aaaaaa", "pytorch", 1, timeseries="timeseries/pytorch-b1.csv",
                ttft=21.5),
        _result("pytorch-tiny-bf16-batch_size_8-bbbbbb", "pytorch", 8, verdict="warning",
                reasons=["GPU throttled in the measured windows: sw_power_cap"], timeseries="timeseries/missing.csv",
                ttft=33.25),
        _result("vllm-tiny-bf16-max_num_seqs_8-cccccc", "vllm", 8, verdict="invalid",
                reasons=["token counts do not match the plan"], setting="max_num_seqs"),
        _result("vllm-tiny-bf16-max_num_seqs_64-dddddd", "vllm", 64, setting="max_num_seqs"),
    ]
    for r in results:
        run.write_result(r)
    return run, results


def test_report_md_has_verdict_latency_phases_roofline_power_and_validity(tmp_path):
    run, results = _synthetic_run(tmp_path)
    write_reports(run)
    md = (run.path / "report.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in md.split("\n## ")[0].splitlines() if line.startswith("| ")}
    assert rows["pytorch-tiny-bf16-batch_size_1-aaaaaa"].endswith("| valid |")
    assert rows["pytorch-tiny-bf16-batch_size_8-bbbbbb"].endswith("| warning |")
    assert rows["vllm-tiny-bf16-max_num_seqs_8-cccccc"].endswith("| invalid |")

    latency = md.split("## Streaming latency (ms)")[1].split("##")[0]
    assert "| pytorch-tiny-bf16-batch_size_1-aaaaaa | 21.50 | 32.25 | 8 | 4.50 | 12.50 | n/a | 1,290 | 1 |" in latency
    assert "vllm-tiny" not in latency  # no latency recorded: no row

    phases = md.split("## Prefill vs decode (per pass)")[1].split("##")[0]
    assert "| prefill J/prompt token |" in phases and "| decode J/token |" in phases
    assert "| pytorch-tiny-bf16-batch_size_1-aaaaaa | 0.02 | 3.00 | 0.0468 | 4.00 | 600 | 2.35 |" in phases

    roofline = md.split("## Decode memory-bandwidth roofline")[1].split("##")[0]
    assert "| 12.5% |" in roofline and "3,350" in roofline

    power = md.split("## Idle power and power sampling")[1].split("##")[0]
    assert "| 70.00 | 120 | 120 | 51 | 27% | sw_power_cap | +1.23% |" in power

    validity = md.split("## Validity: why not valid")[1].split("##")[0]
    assert "pytorch-tiny-bf16-batch_size_1-aaaaaa" not in validity
    assert "| pytorch-tiny-bf16-batch_size_8-bbbbbb | warning | GPU throttled" in validity
    assert "**vllm-tiny-bf16-max_num_seqs_8-cccccc** is invalid: token counts do not match the plan" in md


def test_report_html_has_the_new_sections_and_the_power_timeseries(tmp_path):
    run, results = _synthetic_run(tmp_path)
    write_reports(run)
    page = parse(run.path / "report.html")
    text = " ".join(page.text)
    assert "script" not in page.tags and page.tags.count("html") == 1
    for title in ("Experiments", "Streaming latency (ms)", "Prefill vs decode (per pass)",
                  "Decode memory-bandwidth roofline", "Idle power and power sampling", "Validity: why not valid",
                  "Energy per output token against throughput", "GPU power over time"):
        assert title in text, title
    assert all(r.test_id in text for r in results)
    # scatter, a bar chart per sweep axis (pytorch's batch_size, vllm's max_num_seqs), one power timeseries
    # (the second CSV is missing, the vllm experiments have none)
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page_alts(run.path / "report.html")[1:3] == ["by batch_size", "by max_num_seqs"]
    assert "timeseries/missing.csv not found" in text
    assert plots.scatter_legend_labels(results) == ["pytorch", "vllm"]
    assert plots.sweep_axes(results) == ["batch_size", "max_num_seqs"]
    x_values, series = plots.axis_groups(results, "max_num_seqs")
    assert x_values == [8, 64] and set(series) == {"vllm"}


def test_power_figure_sums_gpus_per_tick_and_shades_the_marked_spans(tmp_path):
    path = tmp_path / "ts.csv"
    _write_timeseries(path)
    points, marks = plots.read_timeseries(path)
    assert len(points) == 90 and points[0] == (0.0, 120.0) and max(p for _, p in points) == 600.0
    assert marks == [(label, t) for t, label in MARKS]

    fig = plots.power_figure(path, "x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["idle", "warmup", "window"]
    spans = [p for p in ax.patches]
    assert len(spans) == 1 + 1 + 2  # idle, warmup, two measured windows
    plots._plt().close(fig)
    assert plots.power_figure(tmp_path / "absent.csv", "x") is None


def test_throughput_only_chart_when_no_experiment_has_energy(tmp_path):
    results = [_result(f"pytorch-tiny-bf16-batch_size_{b}-00000{b}", "pytorch", b, energy=False) for b in (1, 8)]
    assert plots.scatter_series(results) == {}
    _, caption = plots.energy_vs_throughput(results)
    assert caption == "Throughput only: energy is unavailable in every experiment (the GPU has no energy counter)."


def test_bars_carry_the_ci_and_hatch_invalid_results(tmp_path):
    _, results = _synthetic_run(tmp_path)
    fig = plots.axis_figure(results, "max_num_seqs")
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1  # vllm max_num_seqs 8 is invalid; the valid bar beside it is plain
    assert any(len(c.get_segments()) for c in ax.collections)  # error bars (CI) are drawn
    plots._plt().close(fig)


def test_scatter_carries_the_ci_and_crosses_out_invalid_results():
    """Audit 7.2: an invalid point must not look like a valid one; the CI is drawn on both axes."""
    results = [_result("pytorch-tiny-bf16-batch_size_1-aaaaaa", "pytorch", 1),
               _result("pytorch-tiny-bf16-batch_size_8-bbbbbb", "pytorch", 8, verdict="invalid",
                       reasons=["output_tokens_per_s CV 30.0% across cycles (> 25%)"])]
    fig, caption = plots.scatter_figure(results)
    ax = fig.axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x" and line.get_color() == "red"]
    assert len(crosses) == 1 and tuple(crosses[0].get_xdata()) == (results[1].mean("output_tokens_per_s"),)
    assert any(len(c.get_segments()) for c in ax.collections)  # error bars (CI)
    assert "(invalid)" in " ".join(t.get_text() for t in ax.texts)
    assert "Red crosses mark invalid results" in caption and "batch_size_8" in caption
    assert "Error bars: 95% CI" in caption
    plots._plt().close(fig)


def test_throughput_only_chart_hatches_invalid_results():
    results = [_result("vllm-tiny-bf16-max_num_seqs_8-cccccc", "vllm", 8, verdict="invalid", energy=False),
               _result("vllm-tiny-bf16-max_num_seqs_64-dddddd", "vllm", 64, energy=False)]
    fig, caption = plots.scatter_figure(results)
    assert caption.startswith("Throughput only")
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1
    plots._plt().close(fig)
