"""history_key and collect_history over the committed runs (reports/reference, reports/examples)."""

import json
import shutil
from pathlib import Path

import pytest

from llem_bench.harness.metrics import METRICS
from llem_bench.results.history import collect_history, history_key
from llem_bench.results.store import RunDir

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reports" / "reference"

pytest.importorskip("pandas")


def test_history_key_names_commit_gpus_driver_and_the_backend_stack():
    results = {r.backend: r for r in RunDir(REFERENCE / "h100-vllm-llama-1b").read_results()}
    vllm = history_key(results["vllm"])
    assert vllm == {
        "git_commit": "d0dce95314c50ddccbf524ab39be04d5f6ebc076", "git_dirty": False,
        "gpus": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda_driver": "13.0", "backend": "vllm",
        "packages": {"vllm": "0.26.0", "torch": "2.11.0", "transformers": "5.17.0", "tokenizers": "0.23.2",
                     "nvidia-ml-py": "13.610.43", "zeus": "0.16.0"},
    }
    pytorch = history_key(results["pytorch"])
    assert "vllm" not in pytorch["packages"] and pytorch["packages"]["accelerate"] == "1.15.0"


def test_history_key_of_a_cpu_run_has_no_gpu_and_no_driver():
    base = REPO / "reports" / "examples" / "gate-demo" / "gate-demo" / "baseline"
    key = history_key(RunDir(base).read_results()[0])
    assert key["gpus"] == "none" and key["driver"] is None and key["git_commit"]


def test_collect_history_has_one_row_per_experiment_of_every_run(tmp_path):
    root = tmp_path / "reports"
    for name in ("h100-vllm-llama-1b", "h100-pytorch-llama-1b"):
        shutil.copytree(REFERENCE / name / "results", root / "study" / name / "results")
    (root / "study" / "broken" / "results").mkdir(parents=True)
    (root / "study" / "broken" / "results" / "x.json").write_text('{"truncated": ')

    df = collect_history(root)
    expected = {p.stem for p in root.glob("study/h100-*/results/*.json")}
    assert len(df) == len(expected) == 13 and set(df["test_id"]) == expected
    assert set(METRICS) <= set(df.columns)
    assert {"git_commit", "git_dirty", "gpus", "driver", "backend", "pkg:torch", "pkg:vllm"} <= set(df.columns)
    assert list(df["started_at"]) == sorted(df["started_at"])
    assert df.attrs["problems"] and "x.json" in df.attrs["problems"][0]

    row = df[df["test_id"] == "vllm-llama-1b-bf16-num_prompts_256-673ef8"].iloc[0]
    data = json.loads((root / "study" / "h100-vllm-llama-1b" / "results" / f"{row['test_id']}.json").read_text())
    assert row["output_tokens_per_s"] == pytest.approx(data["metrics"]["output_tokens_per_s"]["mean"])
    assert row["run_id"] == "h100-vllm" and row["pkg:vllm"] == "0.26.0" and row["verdict"] == "warning"
    # a metric nobody measured stays missing, never 0
    assert df[df["backend"] == "vllm"]["peak_memory_mb"].isna().all()


def test_collect_history_of_an_empty_root_is_an_empty_frame(tmp_path):
    df = collect_history(tmp_path)
    assert df.empty and "output_tokens_per_s" in df.columns and df.attrs["problems"] == []
