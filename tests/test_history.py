"""history_key and collect_history over the committed runs (reports/reference, reports/examples)."""

import json
import shutil
from pathlib import Path

import pytest

from llem_bench.metrics import METRICS
from llem_bench.results.compare import compare_runs, load_side
from llem_bench.results.history import KEY_COLUMNS, collect_history, comparable, environment_facts, history_key
from llem_bench.results.store import RunDir

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reports" / "reference"

pytest.importorskip("pandas")


def test_history_key_names_commit_gpus_driver_and_the_backend_stack():
    results = {r.backend: r for r in RunDir(REFERENCE / "h100-vllm-llama-1b").read_results()}
    vllm = history_key(results["vllm"])
    assert vllm == {
        "git_commit": "d0dce95314c50ddccbf524ab39be04d5f6ebc076", "git_dirty": False,
        "gpus": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda_driver": "13.0",
        "cpu": "Intel(R) Xeon(R) Processor", "backend": "vllm",
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
    assert {*KEY_COLUMNS, "pkg:torch", "pkg:vllm"} <= set(df.columns)
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


def _with_env(result, **changes):
    """A copy of result whose environment has `changes` applied (nvml.<key> and packages.<name> dotted)."""
    data = result.model_dump(mode="json")
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = data["environment"]
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return type(result).model_validate(data)


def test_comparable_ignores_the_commit_but_names_every_hardware_and_stack_difference():
    base = RunDir(REFERENCE / "h100-vllm-llama-1b").read_results()[0]
    same = _with_env(base, git_commit="f" * 40, git_dirty=True)
    assert comparable(base, same) == (True, [])

    other = _with_env(base, **{"nvml.driver": "590.1", "packages.torch": "2.12.0", "cpu": "AMD EPYC 9654"})
    other.energy["gpus"] = [{"name": "NVIDIA H200"}]
    ok, reasons = comparable(base, other)
    assert not ok
    assert reasons == ["GPUs: baseline NVIDIA H100 80GB HBM3 vs candidate NVIDIA H200",
                       "GPU driver: baseline 580.159.04 vs candidate 590.1",
                       "CPU: baseline Intel(R) Xeon(R) Processor vs candidate AMD EPYC 9654",
                       "torch: baseline 2.11.0 vs candidate 2.12.0"]


def test_comparable_of_a_cpu_run_and_a_gpu_run_says_so():
    gpu = RunDir(REFERENCE / "h100-vllm-llama-1b").read_results()[0]
    cpu = _with_env(gpu, nvml={"available": False})
    cpu.energy["gpus"] = []
    ok, reasons = comparable(gpu, cpu)
    assert not ok and "GPUs: baseline NVIDIA H100 80GB HBM3 vs candidate none" in reasons
    assert "GPU driver: baseline 580.159.04 vs candidate none" in reasons
    assert environment_facts(cpu)["GPUs"] == "none"


def test_compare_runs_takes_its_environment_warnings_from_comparable():
    """compare.py does not keep its own list of facts: its warnings are comparable's reasons."""
    base = load_side(REFERENCE / "h100-vllm-llama-1b")
    cand = {t: [_with_env(r, **{"nvml.driver": "590.1"}) for r in runs] for t, runs in base.items()}
    warnings = compare_runs(base, cand).warnings
    _, reasons = comparable(next(iter(base.values()))[0], next(iter(cand.values()))[0])
    assert [w for w in warnings if w.startswith("ENVIRONMENT MISMATCH")] == [f"ENVIRONMENT MISMATCH: {r}"
                                                                             for r in reasons]
    assert not [w for w in compare_runs(base, base).warnings if "ENVIRONMENT" in w]


def test_a_shipped_tree_is_told_its_commit_even_with_a_stale_git(monkeypatch):
    """The GPU box's copy of the tree may carry an old .git; the commit given to it wins."""
    from llem_bench.results.environment import git_info

    monkeypatch.setenv("LLEM_GIT_COMMIT", "a" * 40)
    monkeypatch.setenv("LLEM_GIT_DIRTY", "0")
    assert git_info() == {"git_commit": "a" * 40, "git_branch": None, "git_dirty": False}
    monkeypatch.delenv("LLEM_GIT_COMMIT")
    assert git_info()["git_commit"] != "a" * 40
