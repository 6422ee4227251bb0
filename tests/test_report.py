"""report.md / report.html from real runs: the committed H100 vLLM+PyTorch run and a CPU run."""

import shutil
from html.parser import HTMLParser
from pathlib import Path

from llem_bench.results.plots import scatter_series
from llem_bench.results.report import write_reports
from llem_bench.results.store import RunDir

REFERENCE = Path(__file__).resolve().parents[1] / "reports" / "reference" / "h100-vllm-llama-1b"


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_gpu_run_report_has_one_series_per_backend_latency_and_power_plots(tmp_path):
    run = RunDir(shutil.copytree(REFERENCE, tmp_path / "run"))
    write_reports(run)
    results = run.read_results()
    assert set(scatter_series(results)) == {"vllm", "pytorch"}
    assert len(scatter_series(results)["vllm"]) == 4 and len(scatter_series(results)["pytorch"]) == 3
    page = Collect()
    page.feed((run.path / "report.html").read_text())
    text = " ".join(page.text)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.images) >= 1 + 7  # the scatter, and a power timeseries per experiment
    assert all(r.test_id in text for r in results)
    md = (run.path / "report.md").read_text()
    assert "## Streaming latency (ms)" in md and "## Decode memory-bandwidth roofline" in md
    assert "| verdict |" in md


def test_cpu_run_report_plots_throughput_and_says_why(quickstart_run, tmp_path):
    run = RunDir(shutil.copytree(quickstart_run[1], tmp_path / "run"))
    write_reports(run)
    page = (run.path / "report.html").read_text()
    assert "Throughput only: energy is unavailable in every experiment (the experiment runs on the CPU" in page
    assert "Throughput per sweep axis" in page  # batch size and dtype differ between the experiments
