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
    assert len(page.images) == 1 + 2  # throughput bars, and batch_size and num_prompts axes
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
    assert comparison.failed and "GATE: FAIL (2 regressions)" in text  # 1 thread: tok/s and req/s regress
    assert "REGRESSED" in text

    same = compare_runs(load_side(GATE_DEMO / "baseline"), load_side(GATE_DEMO / "baseline"))
    assert "GATE: PASS" in render_comparison_html(same)
