import subprocess
import sys

from llem_bench.cli import main

REPO_STUDY = "studies/quickstart.yaml"


def test_validate_prints_experiments_and_test_ids(capsys):
    from pathlib import Path

    study = Path(__file__).resolve().parents[1] / REPO_STUDY
    assert main(["validate", str(study)]) == 0
    out = capsys.readouterr().out
    assert "study 'quickstart': 4 experiment(s)" in out
    assert "pytorch-tiny-fp32-batch_size_8-" in out and "pytest benchmarks --study" in out


def test_validate_bad_study_exits_2_with_the_yaml_path(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nmodel: synthetic:tiny\nworkload: {output_tokens: 0}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "workload.output_tokens: Input should be greater than or equal to 1 (got 0)" in err


def test_report_on_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results/ folder" in capsys.readouterr().err


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "llem_bench.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "validate" in out.stdout and "report" in out.stdout


def test_doctor_says_what_cannot_be_measured_here(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "GPU energy" in out and "transformers" in out


def test_export_writes_every_format(quickstart_run, tmp_path, capsys):
    import json

    run = str(quickstart_run[1])
    assert main(["export", run, "--format", "csv", "--out", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().count("\n") == 5  # header + 4 experiments
    assert main(["export", run, "--format", "pytest-benchmark", "--out", str(tmp_path / "pb.json")]) == 0
    assert len(json.loads((tmp_path / "pb.json").read_text())["benchmarks"]) == 4
    assert main(["export", run, "--format", "github-action-benchmark", "--out", str(tmp_path / "gh")]) == 0
    bigger = json.loads((tmp_path / "gh" / "bigger_is_better.json").read_text())
    assert any(e["name"].endswith("output_tokens_per_s") or "output_tokens_per_s" in e["name"] for e in bigger)


def test_compare_with_a_bad_path_exits_2(capsys, tmp_path):
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# The committed H200 serving run: in-process and server mode at 32 req/s, one run each.
CONSISTENCY = "reports/reference/h200-serving/runs/h200-serving-consistency"
INPROCESS = "vllm-llama-1b-bf16-serving-rate_32-engine_inprocess-8cbb8a"
SERVER = "vllm-llama-1b-bf16-serving-rate_32-engine_server-0b1f84"


def test_compare_pair_sets_two_experiments_of_one_run_side_by_side(capsys):
    from pathlib import Path

    run = str(Path(__file__).resolve().parents[1] / CONSISTENCY)
    assert main(["compare", run, run, "--pair", f"{INPROCESS}={SERVER}"]) == 1  # one run per side: undecided
    captured = capsys.readouterr()
    assert f"## {SERVER}" in captured.out and "-1.1%" in captured.out  # tok/s, as the README says
    assert "serving.engine: 'inprocess' -> 'server'" in captured.err and "GATE: FAIL (2 inconclusive)" in captured.err


def test_compare_pair_names_the_experiments_a_side_has(capsys):
    from pathlib import Path

    run = str(Path(__file__).resolve().parents[1] / CONSISTENCY)
    assert main(["compare", run, run, "--pair", f"{INPROCESS}=nope"]) == 2
    assert "no experiment 'nope' in the candidate; it has: " in capsys.readouterr().err
    assert main(["compare", run, run, "--pair", INPROCESS]) == 2
    assert "expected BASELINE_ID=CANDIDATE_ID" in capsys.readouterr().err


# The committed H200 run of offline against serving at rate inf, 3 repeats each.
OFFLINE_VS_INF = "reports/reference/h200-serving/runs/h200-serving-offline-vs-inf"
OFFLINE = "vllm-llama-1b-bf16-7c44dc"
RATE_INF = "vllm-llama-1b-bf16-serving-rate_inf-engine_inprocess-7ffc2c"


def test_compare_pair_over_repeats_gives_the_readme_figures(capsys):
    from pathlib import Path

    run = str(Path(__file__).resolve().parents[1] / OFFLINE_VS_INF)
    assert main(["compare", run, run, "--pair", f"{OFFLINE}={RATE_INF}"]) == 1
    out = capsys.readouterr().out
    assert "3 / 3" in out and "-5.0%" in out and "+8.2%" in out  # tok/s and J/token, as the README says


def test_compare_pair_names_engine_settings_the_engines_resolved_differently(tmp_path, capsys):
    """That run's offline LLM resolved max_num_batched_tokens 16384 and its AsyncLLM 2048 (its log says so;
    the result of that commit did not record it): compare must say so, since the study set neither."""
    import json
    import shutil
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[1] / OFFLINE_VS_INF, run)
    for path in (run / "results").glob(f"{RATE_INF}-r*.json"):
        result = json.loads(path.read_text())
        result["effective"]["scheduler"] = {"max_num_batched_tokens": 2048, "max_num_seqs": 256}
        path.write_text(json.dumps(result))
    main(["compare", str(run), str(run), "--pair", f"{OFFLINE}={RATE_INF}"])
    err = capsys.readouterr().err
    assert "ENGINE SETTINGS DIFFER" in err and "scheduler.max_num_batched_tokens: 16384 -> 2048" in err
    assert "scheduler.max_num_seqs" not in err  # equal on both sides: not named
