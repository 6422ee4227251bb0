import json
import math
import random
from pathlib import Path

import pytest

from llem_bench.config.study import GateSpec, parse_study
from llem_bench.harness.metrics import METRICS
from llem_bench.harness.stats import summarize, t95
from llem_bench.results.compare import (
    DEFAULT_GATED,
    betainc, compare_metric, compare_runs, gates_from, load_side, render_comparison_markdown, student_t_cdf,
    t_two_sided_p,
)
from llem_bench.results.schema import ExperimentResult, MetricSummary
from llem_bench.results.store import RunDir

REPO = Path(__file__).resolve().parents[1]
CPU_REASON = "the experiment runs on the CPU; NVML measures GPU energy only"


def env(torch="2.5.1", gpus=("NVIDIA H100 80GB HBM3",), driver="550.54.15", **packages):
    return {"git_commit": "a" * 40, "git_dirty": False, "git_branch": "main", "cpu": "AMD EPYC",
            "packages": {"torch": torch, "transformers": "4.56.0", **packages},
            "nvml": {"available": True, "driver": driver, "cuda_driver": "12.4",
                     "gpus": [{"name": g, "uuid": f"GPU-{i}"} for i, g in enumerate(gpus)]}}


def make_result(test_id="pytorch-tiny-fp32-batch_size_8-abc123", values=None, *, status="ok", environment=None,
                config=None, unavailable=None, fingerprint="f00d") -> ExperimentResult:
    """A result whose metrics are summaries of the given per-cycle values (None = unavailable)."""
    values = values if values is not None else {"output_tokens_per_s": [1000, 1010, 990, 1005, 995]}
    metrics = {m: (MetricSummary(**summarize(v)) if v is not None else None) for m, v in values.items()}
    return ExperimentResult(
        test_id=test_id, config_hash=test_id.rsplit("-", 1)[-1], study="s", run_id="r", status=status,
        error="boom" if status == "failed" else None, backend="pytorch", model="synthetic:tiny", synthetic=True,
        config=config if config is not None else {"study": "s", "dtype": "float32", "pytorch": {"batch_size": 8}},
        workload={"fingerprint": fingerprint}, metrics=metrics if status == "ok" else {},
        unavailable=unavailable or {}, environment=environment if environment is not None else env(),
        started_at="2026-01-01T00:00:00+00:00")


def scaled(values, factor):
    return [v * factor for v in values]


# --- the t distribution --------------------------------------------------------------------------

@pytest.mark.parametrize("t, df, p", [
    (2.0, 10, 0.0734), (3.0, 5, 0.0300), (12.706, 1, 0.05), (2.228, 10, 0.05), (1.96, 1e6, 0.05),
    (2.042, 30, 0.05), (0.0, 7, 1.0), (-2.0, 10, 0.0734),
])
def test_two_sided_p_values_match_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)


def test_t_quantiles_of_stats_module_give_p_0_05():
    for df in range(1, 31):
        assert t_two_sided_p(t95(df), df) == pytest.approx(0.05, abs=5e-4)


def test_cdf_is_symmetric_and_monotone():
    assert student_t_cdf(0.0, 3) == pytest.approx(0.5)
    assert student_t_cdf(1.5, 4) + student_t_cdf(-1.5, 4) == pytest.approx(1.0)
    assert student_t_cdf(-1, 4) < student_t_cdf(0.5, 4) < student_t_cdf(3, 4)
    assert t_two_sided_p(math.inf, 3) == 0.0


def test_regularized_incomplete_beta_closed_forms():
    for x in (0.1, 0.37, 0.9):
        assert betainc(1, 1, x) == pytest.approx(x)
        assert betainc(3, 1, x) == pytest.approx(x ** 3)
        assert betainc(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5)
    assert betainc(4.5, 4.5, 0.5) == pytest.approx(0.5)
    assert betainc(2, 3, 0) == 0.0 and betainc(2, 3, 1) == 1.0


# --- one metric ----------------------------------------------------------------------------------

def test_welch_statistics_by_hand():
    # equal variances and sizes: se = 1, t = 2, Welch df = 8
    c = compare_metric([1, 2, 3, 4, 5], [3, 4, 5, 6, 7], higher_is_better=True, threshold=0.05)
    assert c.base_mean == 3 and c.cand_mean == 5 and c.delta_pct == pytest.approx(200 / 3)
    assert c.df == pytest.approx(8)
    assert c.p_value == pytest.approx(t_two_sided_p(2.0, 8))
    assert c.ci95 == pytest.approx((2 - 2.306, 2 + 2.306))
    assert c.verdict == "inconclusive"  # p = 0.08


def test_welch_df_with_unequal_variances():
    c = compare_metric([10, 11, 12], [10, 20, 30, 40], higher_is_better=True, threshold=0.05)
    va, vb = 1 / 3, (500 / 3) / 4
    assert c.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3))


def test_clear_changes_in_both_directions():
    base = [1000, 1010, 990, 1005, 995]
    assert compare_metric(base, scaled(base, 0.90), True, 0.05).verdict == "regressed"    # throughput down
    assert compare_metric(base, scaled(base, 1.10), True, 0.05).verdict == "improved"
    assert compare_metric(base, scaled(base, 1.10), False, 0.05).verdict == "regressed"   # energy up
    assert compare_metric(base, scaled(base, 0.90), False, 0.05).verdict == "improved"


def test_one_lucky_cycle_does_not_pass():
    base = [100, 101, 99]
    lucky = compare_metric(base, [100, 99, 140], higher_is_better=True, threshold=0.05)
    assert lucky.delta_pct > 10
    assert lucky.p_value > 0.05 and lucky.verdict == "inconclusive"


def test_one_unlucky_cycle_does_not_fail():
    c = compare_metric([100, 101, 99], [100, 99, 60], higher_is_better=True, threshold=0.05)
    assert c.delta_pct < -10 and c.verdict == "inconclusive"


@pytest.mark.parametrize("n, cv, max_rate", [
    (3, 0.01, 0.0), (5, 0.02, 0.0), (10, 0.02, 0.0), (3, 0.02, 0.005),
    # noise as large as the threshold: only the test's own alpha/2 = 2.5% per side is left
    (3, 0.05, 0.03), (5, 0.05, 0.03),
])
def test_noise_does_not_fail(n, cv, max_rate):
    rng = random.Random(1234)
    trials = 1000
    verdicts = [compare_metric([rng.gauss(100, 100 * cv) for _ in range(n)],
                               [rng.gauss(100, 100 * cv) for _ in range(n)], True, 0.05).verdict
                for _ in range(trials)]
    assert verdicts.count("regressed") <= max_rate * trials
    assert verdicts.count("improved") <= max_rate * trials


def test_a_real_regression_is_caught():
    rng = random.Random(99)
    verdicts = [compare_metric([rng.gauss(100, 2) for _ in range(5)], [rng.gauss(88, 2) for _ in range(5)],
                               True, 0.05).verdict for _ in range(500)]
    assert verdicts.count("regressed") >= 0.9 * len(verdicts) and "improved" not in verdicts


def test_quiet_equal_runs_are_unchanged():
    rng = random.Random(7)
    base = [rng.gauss(100, 1) for _ in range(10)]
    cand = [rng.gauss(100, 1) for _ in range(10)]
    c = compare_metric(base, cand, True, 0.05)
    assert c.verdict == "unchanged" and -5 < c.ci95_pct[0] < c.ci95_pct[1] < 5


def test_significant_but_below_threshold_is_not_a_regression():
    c = compare_metric([1000, 1001, 999, 1000], [990, 991, 989, 990], higher_is_better=True, threshold=0.05)
    assert c.p_value < 1e-4 and c.verdict == "unchanged"


def test_too_few_cycles_are_inconclusive():
    for base, cand in (([100], [50]), ([100, 101], [50]), ([], [1, 2])):
        c = compare_metric(base, cand, higher_is_better=True, threshold=0.05)
        assert c.verdict == "inconclusive" and c.p_value is None and "at least 2 cycles" in c.reason


def test_zero_variance():
    assert compare_metric([400, 400, 400], [400, 400, 400], False, 0.05).verdict == "unchanged"
    same = compare_metric([400, 400, 400], [440, 440, 440], False, 0.05)
    assert same.p_value == 0.0 and same.verdict == "regressed"


# --- gates ---------------------------------------------------------------------------------------

def test_default_gates_cover_the_headline_metrics():
    assert gates_from(None) == {m: 0.05 for m in DEFAULT_GATED}
    assert gates_from({}, default_pct=2) == {m: 0.02 for m in DEFAULT_GATED}
    assert "energy_per_output_token_j" in DEFAULT_GATED and "output_tokens_per_s" in DEFAULT_GATED


def test_gates_from_a_study():
    study, _ = parse_study({"study": "s", "model": "synthetic:tiny", "gates": {
        "energy_per_output_token_j": {"max_increase": "3%"},
        "output_tokens_per_s": {"max_decrease": "10%", "max_increase": "50%"},
        "avg_power_w": {},
    }})
    assert gates_from(study.gates, default_pct=7) == {
        "energy_per_output_token_j": 0.03, "output_tokens_per_s": 0.10, "avg_power_w": 0.07}


def test_gate_in_the_good_direction_is_refused():
    study, _ = parse_study({"study": "s", "model": "synthetic:tiny", "gates": {"output_tokens_per_s": {"max_increase": "5%"}}})
    with pytest.raises(ValueError, match="higher-is-better.*use max_decrease"):
        gates_from(study.gates)


def test_gate_on_unknown_metric_is_refused():
    study, _ = parse_study({"study": "s", "model": "synthetic:tiny", "gates": {"energy_per_token_j": {"max_increase": "5%"}}})
    with pytest.raises(ValueError, match="Did you mean 'energy_per_output_token_j'"):
        gates_from(study.gates)


# --- runs ----------------------------------------------------------------------------------------

BASE = {"output_tokens_per_s": [1000, 1010, 990, 1005, 995], "energy_per_output_token_j": [0.50, 0.51, 0.49, 0.50, 0.50]}


def side(*results):
    return {r.test_id: r for r in results}


def test_regression_of_a_gated_metric_fails():
    base = side(make_result(values=BASE))
    cand = side(make_result(values={**BASE, "energy_per_output_token_j": scaled(BASE["energy_per_output_token_j"], 1.2)}))
    cmp = compare_runs(base, cand)
    assert cmp.failed and cmp.regressions == [("pytorch-tiny-fp32-batch_size_8-abc123", "energy_per_output_token_j")]
    assert cmp.experiments[0].metrics["output_tokens_per_s"].verdict == "unchanged"
    text = render_comparison_markdown(cmp)
    assert text.rstrip().splitlines()[-1] == "GATE: FAIL (1 regression)"
    assert "REGRESSED" in text


def test_regression_of_an_ungated_metric_is_reported_but_passes():
    base = side(make_result(values=BASE))
    cand = side(make_result(values={**BASE, "output_tokens_per_s": scaled(BASE["output_tokens_per_s"], 0.8)}))
    cmp = compare_runs(base, cand, gates_from({"energy_per_output_token_j": {"max_increase": "5%"}}))
    assert cmp.experiments[0].metrics["output_tokens_per_s"].verdict == "regressed"
    assert not cmp.failed
    assert render_comparison_markdown(cmp).rstrip().endswith("GATE: PASS")


def test_identical_runs_pass():
    base = side(make_result(values=BASE))
    cmp = compare_runs(base, side(make_result(values=BASE)))
    assert not cmp.failed and not cmp.warnings
    assert {c.verdict for c in cmp.experiments[0].metrics.values()} == {"unchanged"}


def test_matching_by_test_id_then_config_hash_and_unmatched_lists():
    base = side(make_result("pytorch-tiny-fp32-aaa111", BASE), make_result("pytorch-tiny-fp32-batch_size_8-bbb222", BASE),
                make_result("pytorch-tiny-fp32-ccc333", BASE))
    cand = side(make_result("pytorch-tiny-fp32-aaa111", BASE), make_result("pytorch-tiny-fp32-batch_8-bbb222", BASE),
                make_result("pytorch-tiny-fp32-ddd444", BASE))
    cmp = compare_runs(base, cand)
    assert [(e.test_id, e.base_test_id, e.matched_by) for e in cmp.experiments] == [
        ("pytorch-tiny-fp32-aaa111", "pytorch-tiny-fp32-aaa111", "test_id"),
        ("pytorch-tiny-fp32-batch_8-bbb222", "pytorch-tiny-fp32-batch_size_8-bbb222", "config_hash")]
    assert cmp.only_base == ["pytorch-tiny-fp32-ccc333"] and cmp.only_cand == ["pytorch-tiny-fp32-ddd444"]
    assert any("missing from the candidate: pytorch-tiny-fp32-ccc333" in w for w in cmp.warnings)
    assert any("without a baseline: pytorch-tiny-fp32-ddd444" in w for w in cmp.warnings)
    assert "(baseline pytorch-tiny-fp32-batch_size_8-bbb222)" in render_comparison_markdown(cmp)


def test_environment_mismatches_are_loud():
    base = side(make_result(values=BASE, environment=env()))
    cand = side(make_result(values=BASE, environment=env(torch="2.6.0", gpus=("NVIDIA A100-SXM4-80GB",),
                                                         driver="560.1", vllm="0.10.1")))
    cmp = compare_runs(base, cand)
    joined = "\n".join(cmp.warnings)
    assert "ENVIRONMENT MISMATCH: torch: baseline 2.5.1 vs candidate 2.6.0" in joined
    assert "GPUs: baseline NVIDIA H100 80GB HBM3 vs candidate NVIDIA A100-SXM4-80GB" in joined
    assert "GPU driver: baseline 550.54.15 vs candidate 560.1" in joined
    assert "vllm: baseline none vs candidate 0.10.1" in joined
    text = render_comparison_markdown(cmp)
    assert text.index("ENVIRONMENT MISMATCH") < text.index("| metric |")


def test_environment_warnings_are_not_repeated_per_experiment():
    base = side(*(make_result(f"pytorch-x-{i}", BASE) for i in range(3)))
    cand = side(*(make_result(f"pytorch-x-{i}", BASE, environment=env(torch="2.6.0")) for i in range(3)))
    assert sum("torch" in w for w in compare_runs(base, cand).warnings) == 1


def test_config_and_workload_differences_are_warned():
    base = side(make_result(values=BASE))
    cand = side(make_result(values=BASE, fingerprint="beef",
                            config={"study": "other", "dtype": "float32", "pytorch": {"batch_size": 16}}))
    joined = "\n".join(compare_runs(base, cand).warnings)
    assert "CONFIG DIFFERS" in joined and "pytorch.batch_size: 8 -> 16" in joined and "study" not in joined
    assert "WORKLOAD DIFFERS" in joined


def test_null_metrics_are_skipped_with_a_reason():
    values = {**BASE, "energy_per_output_token_j": None}
    base = side(make_result(values=values, unavailable={"energy_per_output_token_j": CPU_REASON}))
    cand = side(make_result(values=values, unavailable={"energy_per_output_token_j": CPU_REASON}))
    cmp = compare_runs(base, cand)
    exp = cmp.experiments[0]
    assert "energy_per_output_token_j" not in exp.metrics
    assert exp.skipped["energy_per_output_token_j"] == f"null in the baseline: {CPU_REASON}"
    assert exp.skipped["avg_power_w"] == "null in the baseline: not measured"
    assert not cmp.failed and not cmp.warnings
    assert f"not compared: null in the baseline: {CPU_REASON}" in render_comparison_markdown(cmp)


def test_gated_metric_lost_in_the_candidate_is_warned():
    base = side(make_result(values=BASE))
    cand = side(make_result(values={**BASE, "energy_per_output_token_j": None},
                            unavailable={"energy_per_output_token_j": "NVML unavailable"}))
    cmp = compare_runs(base, cand)
    assert cmp.experiments[0].skipped["energy_per_output_token_j"] == "null in the candidate: NVML unavailable"
    assert any("GATED METRIC LOST" in w and "NVML unavailable" in w for w in cmp.warnings)


def test_failed_candidate_fails_the_gate():
    base = side(make_result(values=BASE))
    cmp = compare_runs(base, side(make_result(status="failed")))
    assert cmp.failed and cmp.regressions == [("pytorch-tiny-fp32-batch_size_8-abc123", "status")]
    text = render_comparison_markdown(cmp)
    assert "candidate failed: boom" in text and text.rstrip().endswith("GATE: FAIL (1 regression)")


def test_nothing_matched_is_warned():
    cmp = compare_runs(side(make_result("pytorch-a-111111")), side(make_result("pytorch-b-222222")))
    assert not cmp.experiments and any("NO EXPERIMENTS MATCHED" in w for w in cmp.warnings)


def test_report_layout():
    base = side(make_result(values=BASE))
    cand = side(make_result(values={**BASE, "output_tokens_per_s": [1000, 1000, 1300]}))
    text = render_comparison_markdown(compare_runs(base, cand, gates_from({"output_tokens_per_s": {"max_decrease": "5%"}})))
    lines = text.splitlines()
    assert lines[0].startswith("# Comparison")
    assert "| metric | unit | baseline | candidate | delta % | 95% CI of difference | p | verdict |" in lines
    row = next(line for line in lines if line.startswith("| output_tokens_per_s"))
    assert "(±5%)*" in row and "+10.0%" in row and row.endswith("| inconclusive |")
    assert "inconclusive: the 95% CI reaches past ±5%" in text
    assert lines[-1] == "GATE: PASS"


# --- loading -------------------------------------------------------------------------------------

def test_load_side_from_run_folder_results_folder_and_file(tmp_path):
    run = RunDir(tmp_path / "s" / "r1")
    run.write_result(make_result("pytorch-a-111111"))
    path = run.write_result(make_result("pytorch-b-222222"))
    assert sorted(load_side(run.path)) == ["pytorch-a-111111", "pytorch-b-222222"]
    assert sorted(load_side(run.results_dir)) == ["pytorch-a-111111", "pytorch-b-222222"]
    assert list(load_side(path)) == ["pytorch-b-222222"]


def test_load_side_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_side(tmp_path / "nope")
    (tmp_path / "s" / "r1" / "results").mkdir(parents=True)
    with pytest.raises(ValueError, match="no result files"):
        load_side(tmp_path / "s" / "r1")
    with pytest.raises(ValueError, match="holds runs r1: pass one of them"):
        load_side(tmp_path / "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a run folder \(no results/ inside\)$"):
        load_side(tmp_path / "empty")
    bad = tmp_path / "study.json"
    bad.write_text(json.dumps({"study": "s"}))
    with pytest.raises(ValueError, match="not an ExperimentResult JSON"):
        load_side(bad)
    (tmp_path / "s" / "r1" / "results" / "x-1.json").write_text('{"test_id": "x-')
    with pytest.raises(ValueError, match="(?s)unreadable results.*x-1.json.*rerun"):
        load_side(tmp_path / "s" / "r1")


# --- a real quickstart run, when one is around ---------------------------------------------------

@pytest.fixture
def real_run(quickstart_run):
    return quickstart_run[1]


def test_real_quickstart_run_against_itself(real_run):
    results = load_side(real_run)
    cmp = compare_runs(results, load_side(real_run / "results"))
    assert len(cmp.experiments) == len(results) and not cmp.warnings and not cmp.failed
    for exp in cmp.experiments:
        assert "energy_per_output_token_j" in exp.skipped   # CPU run: no energy
        assert all(c.verdict in ("unchanged", "inconclusive") for c in exp.metrics.values())
    assert render_comparison_markdown(cmp).rstrip().endswith("GATE: PASS")


def test_real_quickstart_run_with_doubled_peak_memory_fails_when_memory_is_gated(real_run):
    base = load_side(real_run)
    cand = {}
    for test_id, r in base.items():
        summary = r.metrics["peak_memory_mb"]
        worse = [v * 2 for v in summary.values]
        cand[test_id] = r.model_copy(update={"metrics": {**r.metrics, "peak_memory_mb": MetricSummary(**summarize(worse))}})
    assert not compare_runs(base, cand).failed  # memory is reported, not gated, by default
    cmp = compare_runs(base, cand, gates_from({"peak_memory_mb": GateSpec(max_increase="10%")}))
    assert cmp.failed
    assert {m for _, m in cmp.regressions} == {"peak_memory_mb"}
