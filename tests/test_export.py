import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llem_bench.metrics import METRICS
from llem_bench.results.export import (
    benchmark_stats, load_results, to_csv, to_github_action_benchmark, to_pytest_benchmark_json,
)
from llem_bench.results.store import RunDir
from test_compare import env, make_result

PYTEST_BENCHMARK = Path(sys.executable).parent / "pytest-benchmark"

WALL = [2.0, 2.2, 1.9, 2.1]
VALUES = {"output_tokens_per_s": [512.0, 480.0, 530.0, 500.0], "energy_per_output_token_j": [0.31, 0.33, 0.30, 0.32],
          "wall_time_s": WALL, "avg_power_w": None}


def with_cycles(result, walls, passes):
    cycles = [{"wall_time_s": w, "passes": p, "output_tokens": 8 * 16 * p} for w, p in zip(walls, passes)]
    return result.model_copy(update={"cycles": cycles})


def results():
    # 2 passes per window: a round (one pass) is half the window
    return [with_cycles(make_result("pytorch-tiny-fp32-batch_size_8-abc123", VALUES,
                                    unavailable={"avg_power_w": "energy counter wrapped"}), WALL, [2, 2, 2, 2]),
            with_cycles(make_result("pytorch-tiny-bf16-batch_size_8-def456", {**VALUES, "wall_time_s": [1.0, 1.1, 0.9]}),
                        [1.0, 1.1, 0.9], [1, 1, 1]),
            make_result("pytorch-tiny-bf16-batch_size_1-0a0b0c", status="failed")]


# --- pytest-benchmark ----------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 10))
def test_stats_match_pytest_benchmark(n):
    stats_mod = pytest.importorskip("pytest_benchmark.stats")
    data = [random.Random(n).uniform(1, 2) for _ in range(n)]
    ref = stats_mod.Stats()
    for v in data:
        ref.update(v)
    ours = benchmark_stats(data)
    for name in stats_mod.Stats.fields:
        assert ours[name] == pytest.approx(getattr(ref, name)), name
    assert ours["data"] == data and ours["iterations"] == 1


def test_pytest_benchmark_document():
    doc = to_pytest_benchmark_json(results())
    assert set(doc) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["commit_info"]["id"] == "a" * 40 and doc["commit_info"]["dirty"] is False
    assert doc["commit_info"]["branch"] == "main"
    assert doc["machine_info"]["gpus"] == ["NVIDIA H100 80GB HBM3"]
    assert [b["name"] for b in doc["benchmarks"]] == ["test_pytorch[pytorch-tiny-fp32-batch_size_8-abc123]",
                                                      "test_pytorch[pytorch-tiny-bf16-batch_size_8-def456]"]
    bench = doc["benchmarks"][0]
    assert bench["group"] == "s" and bench["param"] == "pytorch-tiny-fp32-batch_size_8-abc123"
    assert bench["fullname"].endswith("::test_pytorch[pytorch-tiny-fp32-batch_size_8-abc123]")
    assert bench["extra_info"]["energy_per_output_token_j"] == pytest.approx(0.315)
    assert bench["extra_info"]["avg_power_w"] is None
    assert set(METRICS) <= set(bench["extra_info"])
    assert bench["stats"]["data"] == [w / 2 for w in WALL] and bench["stats"]["rounds"] == 4
    assert bench["stats"]["mean"] == pytest.approx(1.025) and bench["stats"]["ops"] == pytest.approx(4 / 4.1)
    assert bench["extra_info"]["passes"] == [2, 2, 2, 2] and "per workload pass" in bench["extra_info"]["round"]
    json.dumps(doc)


def test_pytest_benchmark_round_is_the_time_of_one_pass_not_the_window():
    """The audit's H100 windows: 4 passes in 12.73 s, 3 in 14.10 s, 2 in 10.78 s. The shortest window is the
    slowest cycle; per-pass times rank them right."""
    r = with_cycles(make_result(values={"wall_time_s": [12.73, 14.10, 10.78]}), [12.73, 14.10, 10.78], [4, 3, 2])
    data = to_pytest_benchmark_json([r])["benchmarks"][0]["stats"]["data"]
    assert data == pytest.approx([12.73 / 4, 14.10 / 3, 10.78 / 2])
    assert data.index(max(data)) == 2   # the 2-pass window was the slow one


def test_pytest_benchmark_repeats_are_separate_benchmarks():
    runs = [with_cycles(make_result(values=VALUES, repeat=k, repeats=2), WALL, [2, 2, 2, 2]) for k in (1, 2)]
    names = [b["name"] for b in to_pytest_benchmark_json(runs)["benchmarks"]]
    assert names == ["test_pytorch[pytorch-tiny-fp32-batch_size_8-abc123-r1]",
                     "test_pytorch[pytorch-tiny-fp32-batch_size_8-abc123-r2]"]


def test_pytest_benchmark_document_of_nothing():
    doc = to_pytest_benchmark_json([make_result(status="failed")])
    assert doc["benchmarks"] == [] and doc["commit_info"]["id"] == "unknown"


def _pytest_benchmark_compare(tmp_path, *files):
    if not PYTEST_BENCHMARK.exists():
        pytest.skip("pytest-benchmark CLI not installed")
    out = tmp_path / "table"
    proc = subprocess.run([str(PYTEST_BENCHMARK), "compare", *map(str, files), "--columns=min,max,mean,median,rounds",
                           f"--csv={out}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stderr, proc.stderr
    with open(f"{out}.csv") as handle:
        return proc.stdout, list(csv.DictReader(handle))


def test_pytest_benchmark_cli_loads_the_file(tmp_path):
    a, b = tmp_path / "0001_base.json", tmp_path / "0002_cand.json"
    a.write_text(json.dumps(to_pytest_benchmark_json(results())))
    cand = [r.model_copy(update={"environment": env(torch="2.6.0")}) for r in results()]
    b.write_text(json.dumps(to_pytest_benchmark_json(cand)))
    stdout, rows = _pytest_benchmark_compare(tmp_path, a, b)
    assert "test_pytorch[pytorch-tiny-fp32-batch_size_8-abc123]" in stdout
    assert len(rows) == 4
    row = next(r for r in rows if "abc123" in r["name"])
    assert float(row["mean"]) == pytest.approx(1.025) and float(row["min"]) == pytest.approx(0.95)
    assert float(row["median"]) == pytest.approx(1.025) and int(row["rounds"]) == 4


def test_pytest_benchmark_cli_loads_a_real_run(tmp_path, quickstart_run):
    real = RunDir(quickstart_run[1]).read_results()
    path = tmp_path / "0001_quickstart.json"
    path.write_text(json.dumps(to_pytest_benchmark_json(real)))
    _, rows = _pytest_benchmark_compare(tmp_path, path)
    by_id = {r.test_id: r for r in real}
    assert len(rows) == len(real)
    for row in rows:
        test_id = row["name"].split("[", 1)[1].rstrip("]")
        per_pass = [c["wall_time_s"] / c["passes"] for c in by_id[test_id].cycles]
        assert float(row["mean"]) == pytest.approx(sum(per_pass) / len(per_pass))


# --- github-action-benchmark ---------------------------------------------------------------------

def test_github_action_benchmark_entries():
    bigger, smaller = to_github_action_benchmark(results())
    names = {e["name"] for e in bigger}
    assert "pytorch-tiny-fp32-batch_size_8-abc123 - output_tokens_per_s" in names
    assert all(METRICS[e["name"].split(" - ")[1]].higher_is_better for e in bigger)
    assert not any(METRICS[e["name"].split(" - ")[1]].higher_is_better for e in smaller)
    energy = next(e for e in smaller if e["name"] == "pytorch-tiny-fp32-batch_size_8-abc123 - energy_per_output_token_j")
    assert set(energy) == {"name", "unit", "value", "range", "extra"}
    assert energy["unit"] == "J" and energy["value"] == pytest.approx(0.315) and energy["range"].startswith("± ")
    assert not any("avg_power_w" in e["name"] for e in smaller)    # null: left out, not zero
    assert not any("0a0b0c" in e["name"] for e in bigger + smaller)  # failed experiment
    json.dumps([bigger, smaller])


def test_github_action_benchmark_single_cycle_has_no_range():
    bigger, _ = to_github_action_benchmark([make_result(values={"output_tokens_per_s": [100.0]})])
    assert bigger[0]["range"] == "n/a"


# --- CSV and pandas ------------------------------------------------------------------------------

def test_csv_one_row_per_experiment(tmp_path):
    path = to_csv(results(), tmp_path / "out" / "results.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["test_id"] for r in rows] == [r.test_id for r in results()]
    first = rows[0]
    assert first["config.pytorch.batch_size"] == "8" and first["config.dtype"] == "float32"
    assert float(first["output_tokens_per_s_mean"]) == pytest.approx(505.5)
    assert float(first["output_tokens_per_s_ci95_low"]) < 505.5 < float(first["output_tokens_per_s_ci95_high"])
    assert first["avg_power_w_mean"] == ""
    assert rows[2]["status"] == "failed" and rows[2]["wall_time_s_mean"] == ""
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def _write_runs(root: Path) -> list[RunDir]:
    runs = [RunDir.create(root, "s", "run1"), RunDir.create(root, "s", "run2")]
    for run in runs:
        for r in results():
            run.write_result(r.model_copy(update={"run_id": run.path.name}))
    return runs


def test_load_results_dataframe(tmp_path):
    pytest.importorskip("pandas")
    runs = _write_runs(tmp_path / "reports")
    df = load_results(runs[0].path)
    assert len(df) == 3 and set(df["run_id"]) == {"run1"}
    assert df.loc[df.test_id.str.endswith("abc123"), "output_tokens_per_s_mean"].item() == pytest.approx(505.5)
    csv_path = to_csv(RunDir(runs[0].path).read_results(), tmp_path / "r.csv")
    assert list(df.columns) == csv_path.read_text().splitlines()[0].split(",")

    everything = load_results(tmp_path / "reports")
    assert len(everything) == 6 and set(everything["run_id"]) == {"run1", "run2"}
    mixed = load_results([runs[0].results_dir, runs[1].result_path("pytorch-tiny-fp32-batch_size_8-abc123")])
    assert len(mixed) == 4
    assert everything.groupby("run_id")["wall_time_s_mean"].count().to_dict() == {"run1": 2, "run2": 2}


def test_load_results_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_results(tmp_path / "nope")
    with pytest.raises(ValueError, match="no result files"):
        load_results(tmp_path)
