import json
import math
import random
from pathlib import Path

import pytest

from llem_bench.config.study import parse_study
from llem_bench.stats import minimum_detectable, repeats_needed, summarize, t95, welch
from llem_bench.results.compare import (
    CROSS_MACHINE_FLOOR_CV, DEFAULT_GATED, NO_VARIANCE, compare_metric, compare_runs, gates_from, load_side,
    policy_from, render_comparison_markdown,
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
                config=None, unavailable=None, fingerprint="f00d", repeat=None, repeats=1, validity=None,
                peak_memory_method=None) -> ExperimentResult:
    """A result whose metrics are summaries of the given per-cycle values (None = unavailable)."""
    values = values if values is not None else {"output_tokens_per_s": [1000, 1010, 990, 1005, 995]}
    metrics = {m: (MetricSummary(**summarize(v)) if v is not None else None) for m, v in values.items()}
    return ExperimentResult(
        test_id=test_id, config_hash=test_id.rsplit("-", 1)[-1], study="s", run_id="r", status=status,
        error="boom" if status == "failed" else None, backend="pytorch", model="synthetic:tiny", synthetic=True,
        config=config if config is not None else {"study": "s", "dtype": "float32", "pytorch": {"batch_size": 8}},
        workload={"fingerprint": fingerprint}, metrics=metrics if status == "ok" else {},
        unavailable=unavailable or {}, environment=environment if environment is not None else env(),
        repeat=repeat, repeats=repeats, validity=validity or {"verdict": "valid", "reasons": []},
        peak_memory_method=peak_memory_method, started_at=f"2026-01-01T00:00:{repeat or 0:02d}+00:00")


def scaled(values, factor):
    return [v * factor for v in values]


def repeated(test_id="pytorch-tiny-fp32-batch_size_8-abc123", means=None, **kw):
    """One result per repeat; `means` maps metric -> per-repeat means (None = unavailable). Each repeat's
    cycles sit tightly (±0.1%) around its mean, as cycles of one run do."""
    means = means if means is not None else {"output_tokens_per_s": [1000, 1010, 990]}
    n = len(next(v for v in means.values() if v is not None))
    return [make_result(test_id, {m: (None if v is None else [v[k] * 0.999, v[k], v[k] * 1.001])
                                  for m, v in means.items()},
                        repeat=k + 1 if n > 1 else None, repeats=n, **kw) for k in range(n)]


def side(*groups):
    """test_id -> runs, from lists of results (repeated) or single results."""
    out = {}
    for g in groups:
        for r in (g if isinstance(g, list) else [g]):
            out.setdefault(r.test_id, []).append(r)
    return out


# --- statistics on scipy -------------------------------------------------------------------------

def test_t_quantiles_are_scipy_values():
    assert t95(1) == pytest.approx(12.706, abs=1e-3) and t95(30) == pytest.approx(2.042, abs=1e-3)
    # no jump to 1.96 after df 30 (the old table's 4% too narrow CI)
    assert t95(31) == pytest.approx(2.040, abs=1e-3) and t95(60) == pytest.approx(2.000, abs=1e-3)
    assert t95(2.5) < t95(2) and t95(1e6) == pytest.approx(1.960, abs=1e-3)


def test_welch_matches_scipy_and_hand_numbers():
    # equal variances and sizes: se = 1, t = 2, Welch df = 8
    d = welch([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])
    assert d.diff == 2 and d.se == pytest.approx(1) and d.df == pytest.approx(8)
    assert d.p_value == pytest.approx(0.0805, abs=1e-4)
    assert d.ci95 == pytest.approx((2 - 2.306, 2 + 2.306), abs=1e-3)
    va, vb = 1 / 3, (500 / 3) / 4
    assert welch([10, 11, 12], [10, 20, 30, 40]).df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3))


def test_std_is_none_for_one_value():
    one = summarize([5.0])
    assert one["std"] is None and one["cv"] is None and one["ci95_low"] is None
    assert MetricSummary(**one).std is None


def test_minimum_detectable_change_and_repeats_needed():
    # two-sample, n per side, SD 1: MDC = (t_.975 + t_.8)(df = 2n-2) * sqrt(2/n)
    assert minimum_detectable(1.0, 1e6) == pytest.approx(1.960 + 0.8416, abs=1e-3)
    n = repeats_needed(1.0, 1.0)   # textbook: about 17 per side for d = 1 with the t correction
    assert n == 17
    assert repeats_needed(1.0, 0.0) is None and repeats_needed(0.0, 1.0) == 2
    assert repeats_needed(1.0, 0.01) is None  # more than 1000


# --- one metric: per-repeat means ------------------------------------------------------------------

def test_one_run_per_side_is_never_decided():
    for base, cand in (([100], [50]), ([100], [100]), ([100], [200])):
        c = compare_metric(base, cand, higher_is_better=True, threshold=0.05)
        assert c.verdict == "inconclusive" and c.reason == NO_VARIANCE and c.p_value is None


def test_clear_changes_in_both_directions():
    base = [1000, 1010, 990, 1005, 995]
    assert compare_metric(base, scaled(base, 0.90), True, 0.05).verdict == "regressed"    # throughput down
    assert compare_metric(base, scaled(base, 1.10), True, 0.05).verdict == "improved"
    assert compare_metric(base, scaled(base, 1.10), False, 0.05).verdict == "regressed"   # energy up
    assert compare_metric(base, scaled(base, 0.90), False, 0.05).verdict == "improved"


def test_beyond_threshold_but_not_significant_is_inconclusive():
    # the audit's case: -8% with 3 values per side, p = 0.053, used to PASS
    c = compare_metric([100, 101, 99], [95, 88, 93], True, 0.05)
    assert c.delta_pct == pytest.approx(-8) and c.p_value == pytest.approx(0.0527, abs=1e-3)
    assert c.verdict == "inconclusive" and "not significant" in c.reason and "repeats per side" in c.reason


def test_within_threshold_but_wide_ci_is_inconclusive():
    c = compare_metric([100, 110, 90], [99, 109, 89], True, 0.05)
    assert abs(c.delta_pct) < 5 and c.verdict == "inconclusive" and "95% CI allows" in c.reason
    assert c.mdc_pct > 20 and c.repeats_for_threshold > 3


def test_significant_but_below_threshold_is_unchanged():
    c = compare_metric([1000, 1001, 999, 1000], [990, 991, 989, 990], higher_is_better=True, threshold=0.05)
    assert c.p_value < 1e-4 and c.verdict == "unchanged"


def test_one_candidate_run_against_the_baseline_noise_floor():
    base = [1000, 1010, 990, 1005, 995]   # SD 7.9
    c = compare_metric(base, [900], True, 0.05)
    assert c.verdict == "regressed" and "prediction interval" in c.method and c.df == 4
    sd = summarize(base)["std"]
    assert c.ci95[1] - c.ci95[0] == pytest.approx(2 * t95(4) * sd * math.sqrt(1 + 1 / 5))
    assert compare_metric(base, [1003], True, 0.05).verdict == "unchanged"
    # a run with repeats against a single baseline run: the candidate's SD is the floor
    assert "candidate's between-repeat SD" in compare_metric([1000], base, True, 0.05).method


def test_cross_machine_floor_widens_the_test():
    base, cand = [1000, 1001, 999], [950, 951, 949]   # -5.0% with tiny noise: regressed on one machine...
    assert compare_metric(base, cand, True, 0.03).verdict == "regressed"
    floored = compare_metric(base, cand, True, 0.03, floor_cv=CROSS_MACHINE_FLOOR_CV)
    assert floored.verdict == "inconclusive" and "floored at 5%" in floored.method   # ...not across machines
    assert compare_metric(base, scaled(cand, 0.8), True, 0.03, floor_cv=0.05).verdict == "regressed"


def test_zero_variance():
    assert compare_metric([400, 400, 400], [400, 400, 400], False, 0.05).verdict == "unchanged"
    same = compare_metric([400, 400, 400], [440, 440, 440], False, 0.05)
    assert same.p_value == 0.0 and same.verdict == "regressed"


@pytest.mark.parametrize("n, cv", [(2, 0.02), (3, 0.02), (3, 0.05), (5, 0.05)])
def test_run_level_noise_does_not_regress(n, cv):
    """A/A on synthetic runs whose per-repeat means scatter with run-to-run CV `cv`: a false REGRESSED
    needs |change| > 5% AND p < 0.05, so it is rarer than alpha / 2."""
    rng = random.Random(1234)
    verdicts = [compare_metric([rng.gauss(100, 100 * cv) for _ in range(n)],
                               [rng.gauss(100, 100 * cv) for _ in range(n)], True, 0.05).verdict for _ in range(1000)]
    assert verdicts.count("regressed") <= 25


def test_a_real_regression_is_caught_with_enough_repeats():
    rng = random.Random(99)
    verdicts = [compare_metric([rng.gauss(100, 2) for _ in range(5)], [rng.gauss(88, 2) for _ in range(5)],
                               True, 0.05).verdict for _ in range(500)]
    assert verdicts.count("regressed") >= 0.9 * len(verdicts) and "improved" not in verdicts


# --- gates ---------------------------------------------------------------------------------------

def test_default_gates_count_each_change_once():
    assert gates_from(None) == {m: 0.05 for m in DEFAULT_GATED}
    assert gates_from({}, default_pct=2) == {m: 0.02 for m in DEFAULT_GATED}
    assert set(DEFAULT_GATED) == {"energy_per_output_token_j", "output_tokens_per_s"}  # not req/s, not J/request


def test_gates_from_a_study():
    study, _ = parse_study({"study": "s", "model": "synthetic:tiny", "gates": {
        "on_inconclusive": "warn",
        "energy_per_output_token_j": {"max_increase": "3%"},
        "output_tokens_per_s": {"max_decrease": "10%", "max_increase": "50%"},
        "avg_power_w": {},
    }})
    assert gates_from(study.gates, default_pct=7) == {
        "energy_per_output_token_j": 0.03, "output_tokens_per_s": 0.10, "avg_power_w": 0.07}
    assert policy_from(study.gates) == "warn" and policy_from({}) == "fail"


def test_bad_gates_are_refused_when_the_study_loads():
    from llem_bench.config.errors import ConfigError

    with pytest.raises(ConfigError, match="on_inconclusive: expected fail or warn"):
        parse_study({"study": "s", "model": "synthetic:tiny", "gates": {"on_inconclusive": "maybe"}})
    with pytest.raises(ConfigError, match="Did you mean 'energy_per_output_token_j'"):
        parse_study({"study": "s", "model": "synthetic:tiny", "gates": {"energy_per_token_j": {"max_increase": "5%"}}})


def test_gate_in_the_good_direction_is_refused():
    study, _ = parse_study({"study": "s", "model": "synthetic:tiny", "gates": {"output_tokens_per_s": {"max_increase": "5%"}}})
    with pytest.raises(ValueError, match="higher-is-better.*use max_decrease"):
        gates_from(study.gates)


# --- runs ----------------------------------------------------------------------------------------

BASE = {"output_tokens_per_s": [1000, 1010, 990], "energy_per_output_token_j": [0.50, 0.505, 0.495]}
TID = "pytorch-tiny-fp32-batch_size_8-abc123"


def test_regression_of_a_gated_metric_fails():
    cand = {**BASE, "energy_per_output_token_j": scaled(BASE["energy_per_output_token_j"], 1.2)}
    cmp = compare_runs(side(repeated(means=BASE)), side(repeated(means=cand)))
    assert cmp.failed and cmp.regressions == [(TID, "energy_per_output_token_j")]
    assert cmp.experiments[0].metrics["output_tokens_per_s"].verdict == "unchanged"
    text = render_comparison_markdown(cmp)
    assert text.rstrip().splitlines()[-1] == "GATE: FAIL (1 regressed)"
    assert "REGRESSED" in text and "Welch over per-repeat means (3 vs 3 repeats)" in text


def test_regression_of_an_ungated_metric_is_reported_but_passes():
    cand = {**BASE, "output_tokens_per_s": scaled(BASE["output_tokens_per_s"], 0.8)}
    cmp = compare_runs(side(repeated(means=BASE)), side(repeated(means=cand)),
                       gates_from({"energy_per_output_token_j": {"max_increase": "5%"}}))
    assert cmp.experiments[0].metrics["output_tokens_per_s"].verdict == "regressed"
    assert not cmp.failed and render_comparison_markdown(cmp).rstrip().endswith("GATE: PASS")


def test_identical_runs_with_repeats_pass():
    cmp = compare_runs(side(repeated(means=BASE)), side(repeated(means=BASE)))
    assert not cmp.failed and not cmp.warnings
    assert {c.verdict for c in cmp.experiments[0].metrics.values()} == {"unchanged"}


def test_single_runs_are_inconclusive_and_fail_unless_warn():
    """Cycles alone never decide: identical single runs (tight cycles) cannot pass or regress."""
    base, cand = side(make_result(values=BASE)), side(make_result(values=scaled_all(BASE, 0.7)))
    cmp = compare_runs(base, cand)
    assert not cmp.regressions and cmp.failed
    assert all(NO_VARIANCE in f for f in cmp.failures) and len(cmp.failures) == 2
    assert cmp.gate_line == "GATE: FAIL (2 inconclusive)"
    warn = compare_runs(base, cand, on_inconclusive="warn")
    assert not warn.failed and "inconclusive" in warn.gate_line
    assert any(w.startswith("INCONCLUSIVE (on_inconclusive: warn)") for w in warn.loud_warnings)
    assert "> **WARNING** INCONCLUSIVE (on_inconclusive: warn)" in render_comparison_markdown(warn)


def scaled_all(values, factor):
    return {m: scaled(v, factor) for m, v in values.items()}


def test_one_candidate_run_uses_the_baseline_noise_floor():
    base = side(repeated(means={"output_tokens_per_s": [1000, 1010, 990, 1005, 995]}))
    slow = compare_runs(base, side(make_result(values={"output_tokens_per_s": [800, 801, 799]})))
    assert slow.regressions == [(TID, "output_tokens_per_s")]
    c = slow.experiments[0].metrics["output_tokens_per_s"]
    assert c.n_base == 5 and c.n_cand == 1 and "prediction interval" in c.method


def test_missing_experiment_and_lost_gated_metric_fail():
    base = side(repeated(means=BASE), repeated("pytorch-tiny-fp32-other-fff999", means=BASE))
    cand_means = {**BASE, "energy_per_output_token_j": None}
    cmp = compare_runs(base, side(repeated(means=cand_means, unavailable={"energy_per_output_token_j": "NVML gone"})))
    assert cmp.failed
    assert "MISSING: pytorch-tiny-fp32-other-fff999: in the baseline, not in the candidate" in cmp.failures
    assert f"GATED METRIC LOST: {TID}: energy_per_output_token_j" in cmp.failures
    assert any("GATED METRIC LOST" in w and "NVML gone" in w for w in cmp.warnings)


def test_invalid_results_are_not_compared_unless_allowed():
    bad = {"verdict": "invalid", "reasons": ["output_tokens_per_s CV 30% > 25%"]}
    cand = repeated(means=BASE)
    cand[1] = cand[1].model_copy(update={"validity": bad})
    cmp = compare_runs(side(repeated(means=BASE)), side(cand))
    assert cmp.failed and not cmp.experiments[0].metrics
    assert any(f.startswith(f"INVALID: {TID}: candidate {TID}-r2 is invalid (output_tokens_per_s CV") for f in cmp.failures)
    allowed = compare_runs(side(repeated(means=BASE)), side(cand), allow_invalid=True)
    assert not allowed.failed and allowed.experiments[0].metrics["output_tokens_per_s"].verdict == "unchanged"
    assert any("INVALID RESULTS COMPARED" in w for w in allowed.warnings)


def test_failed_candidate_repeat_fails_the_gate():
    cand = repeated(means=BASE)
    cand[2] = make_result(status="failed", repeat=3, repeats=3)
    cmp = compare_runs(side(repeated(means=BASE)), side(cand))
    assert cmp.failed and (TID, "status") in cmp.regressions
    assert cmp.experiments[0].n_cand == 2   # the two runs that worked are still compared
    assert "candidate failed: " + f"{TID}-r3: boom" in render_comparison_markdown(cmp)


def test_cpu_process_peak_memory_is_not_compared():
    means = {**BASE, "peak_memory_mb": [500, 501, 499]}
    method = "process peak RSS since start (CPU run)"
    cmp = compare_runs(side(repeated(means=means, peak_memory_method=method)),
                       side(repeated(means={**means, "peak_memory_mb": [900, 901, 899]}, peak_memory_method=method)),
                       gates_from({"peak_memory_mb": {"max_increase": "10%"}}))
    exp = cmp.experiments[0]
    assert "peak_memory_mb" not in exp.metrics and "not a window measurement" in exp.skipped["peak_memory_mb"]
    gpu = "torch.cuda.max_memory_allocated over the window, summed over the GPUs in use"
    cmp = compare_runs(side(repeated(means=means, peak_memory_method=gpu)),
                       side(repeated(means={**means, "peak_memory_mb": [900, 901, 899]}, peak_memory_method=gpu)),
                       gates_from({"peak_memory_mb": {"max_increase": "10%"}}))
    assert cmp.regressions == [(TID, "peak_memory_mb")]


def test_another_gpu_or_host_is_a_loud_warning_and_widens_the_floor():
    other = env()
    other["nvml"] = {**other["nvml"], "gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-other"}]}
    other["host"] = "node-7"
    cand = repeated(means=scaled_all(BASE, 1.0), environment=other)
    cmp = compare_runs(side(repeated(means=BASE)), side(cand))
    warning = next(w for w in cmp.warnings if w.startswith("OTHER MACHINE"))
    assert "GPU-0 vs GPU-other" in warning and "node-7" in warning and "floored at 5%" in warning
    assert all(c.floor_cv == 0.05 for c in cmp.experiments[0].metrics.values())


def test_repeats_setting_is_not_a_config_difference():
    b = repeated(means=BASE, config={"study": "s", "measurement": {"repeats": 3}})
    c = [make_result(values=BASE, config={"study": "s", "measurement": {"repeats": 1}})]
    assert not any("CONFIG DIFFERS" in w for w in compare_runs(side(b), side(c)).warnings)


def test_matching_by_test_id_then_config_hash_and_unmatched_lists():
    base = side(repeated("pytorch-tiny-fp32-aaa111", BASE), repeated("pytorch-tiny-fp32-batch_size_8-bbb222", BASE),
                repeated("pytorch-tiny-fp32-ccc333", BASE))
    cand = side(repeated("pytorch-tiny-fp32-aaa111", BASE), repeated("pytorch-tiny-fp32-batch_8-bbb222", BASE),
                repeated("pytorch-tiny-fp32-ddd444", BASE))
    cmp = compare_runs(base, cand)
    assert [(e.test_id, e.base_test_id, e.matched_by) for e in cmp.experiments] == [
        ("pytorch-tiny-fp32-aaa111", "pytorch-tiny-fp32-aaa111", "test_id"),
        ("pytorch-tiny-fp32-batch_8-bbb222", "pytorch-tiny-fp32-batch_size_8-bbb222", "config_hash")]
    assert cmp.only_base == ["pytorch-tiny-fp32-ccc333"] and cmp.only_cand == ["pytorch-tiny-fp32-ddd444"]
    assert any("without a baseline: pytorch-tiny-fp32-ddd444" in w for w in cmp.warnings)
    assert "(baseline pytorch-tiny-fp32-batch_size_8-bbb222)" in render_comparison_markdown(cmp)


def test_environment_mismatches_are_loud():
    base = side(repeated(means=BASE, environment=env()))
    cand = side(repeated(means=BASE, environment=env(torch="2.6.0", gpus=("NVIDIA A100-SXM4-80GB",),
                                                      driver="560.1", vllm="0.10.1")))
    cmp = compare_runs(base, cand)
    joined = "\n".join(cmp.warnings)
    assert "ENVIRONMENT MISMATCH: torch: baseline 2.5.1 vs candidate 2.6.0" in joined
    assert "GPUs: baseline NVIDIA H100 80GB HBM3 vs candidate NVIDIA A100-SXM4-80GB" in joined
    assert "vllm: baseline none vs candidate 0.10.1" in joined
    text = render_comparison_markdown(cmp)
    assert text.index("ENVIRONMENT MISMATCH") < text.index("| metric |")


def test_config_and_workload_differences_are_warned():
    base = side(repeated(means=BASE))
    cand = side(repeated(means=BASE, fingerprint="beef",
                         config={"study": "other", "dtype": "float32", "pytorch": {"batch_size": 16}}))
    joined = "\n".join(compare_runs(base, cand).warnings)
    assert "CONFIG DIFFERS" in joined and "pytorch.batch_size: 8 -> 16" in joined and "study" not in joined
    assert "WORKLOAD DIFFERS" in joined


def test_null_metrics_are_skipped_with_a_reason():
    means = {**BASE, "energy_per_output_token_j": None}
    unavailable = {"energy_per_output_token_j": CPU_REASON}
    cmp = compare_runs(side(repeated(means=means, unavailable=unavailable)),
                       side(repeated(means=means, unavailable=unavailable)))
    exp = cmp.experiments[0]
    assert exp.skipped["energy_per_output_token_j"] == f"null in the baseline: {CPU_REASON}"
    assert not cmp.failed and not cmp.warnings


def test_report_layout_prints_detectable_change_and_repeats_needed():
    cand = {**BASE, "output_tokens_per_s": [1000, 1000, 1300]}
    cmp = compare_runs(side(repeated(means=BASE)), side(repeated(means=cand)),
                       gates_from({"output_tokens_per_s": {"max_decrease": "5%"}}))
    lines = render_comparison_markdown(cmp).splitlines()
    assert "| metric | unit | baseline | candidate | repeats (base / cand) | delta % | 95% CI of difference | p | " \
           "detectable change | repeats for threshold | verdict |" in lines
    row = next(line for line in lines if line.startswith("| output_tokens_per_s"))
    assert "(±5%)*" in row and "| 3 / 3 |" in row and "+10.0%" in row and row.endswith("| INCONCLUSIVE |")
    assert lines[-1] == "GATE: FAIL (1 inconclusive)"


# --- loading -------------------------------------------------------------------------------------

def test_load_side_from_run_folder_results_folder_and_file(tmp_path):
    run = RunDir(tmp_path / "s" / "r1")
    run.write_result(make_result("pytorch-a-111111"))
    path = run.write_result(make_result("pytorch-b-222222"))
    run.write_result(make_result("pytorch-c-333333", repeat=1, repeats=2))
    run.write_result(make_result("pytorch-c-333333", repeat=2, repeats=2))
    ids = ["pytorch-a-111111", "pytorch-b-222222", "pytorch-c-333333"]
    assert sorted(load_side(run.path)) == ids and sorted(load_side(run.results_dir)) == ids
    assert [r.repeat for r in load_side(run.path)["pytorch-c-333333"]] == [1, 2]
    assert sorted(p.name for p in run.results_dir.glob("pytorch-c*")) == ["pytorch-c-333333-r1.json",
                                                                           "pytorch-c-333333-r2.json"]
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
    """One run per side: nothing can be decided from cycles, so every gated metric is inconclusive."""
    results = load_side(real_run)
    cmp = compare_runs(results, load_side(real_run / "results"), allow_invalid=True)  # a busy CPU may be invalid
    assert len(cmp.experiments) == len(results)
    assert not [w for w in cmp.warnings if not w.startswith("INVALID RESULTS COMPARED")]
    for exp in cmp.experiments:
        assert "energy_per_output_token_j" in exp.skipped   # CPU run: no energy
        assert "peak_memory_mb" in exp.skipped              # CPU run: process peak RSS, not a window
        assert {c.verdict for c in exp.metrics.values()} == {"inconclusive"}
    assert not cmp.regressions and cmp.failed and "inconclusive" in cmp.gate_line


# --- host-bound pairs ----------------------------------------------------------------------------

def _with_busy(runs, busy, scenario="offline"):
    for r, b in zip(runs, busy):
        r.power = {"gpu_busy_pct": b}
        r.config = {**r.config, "scenario": scenario}
    return runs


def test_host_bound_offline_pair_says_why_tok_s_is_undecided():
    """The pinned H200 run's shape: raw tok/s moves with the GPU-busy share, tok/s per busy percent does not."""
    base = _with_busy(repeated(means={"output_tokens_per_s": [12094, 12368, 17975]}), [25.7, 26.6, 37.9])
    cand = _with_busy(repeated(means={"output_tokens_per_s": [11554, 13901, 13890]}), [23.7, 29.0, 29.7])
    comparison = compare_runs(side(base), side(cand))
    assert comparison.experiments[0].metrics["output_tokens_per_s"].verdict == "inconclusive"
    note = next(w for w in comparison.warnings if w.startswith("HOST-BOUND"))
    assert "busy 24-38%" in note and "baseline 1.0% against 23.5% raw" in note and "net J/token" in note


def test_no_host_bound_note_for_a_busy_gpu_a_decided_pair_or_a_light_serving_rate():
    busy_gpu = compare_runs(side(_with_busy(repeated(means={"output_tokens_per_s": [1000, 1300, 900]}), [90, 95, 85])),
                            side(_with_busy(repeated(means={"output_tokens_per_s": [1100, 800, 1200]}), [90, 92, 88])))
    decided = compare_runs(side(_with_busy(repeated(), [20, 21, 22])), side(_with_busy(repeated(), [20, 21, 22])))
    serving = compare_runs(side(_with_busy(repeated(means={"output_tokens_per_s": [1000, 1300, 900]}), [5, 6, 5],
                                           scenario="serving")),
                           side(_with_busy(repeated(means={"output_tokens_per_s": [1100, 800, 1200]}), [5, 6, 5],
                                           scenario="serving")))
    assert busy_gpu.experiments[0].metrics["output_tokens_per_s"].verdict == "inconclusive"
    assert decided.experiments[0].metrics["output_tokens_per_s"].verdict == "unchanged"
    assert serving.experiments[0].metrics["output_tokens_per_s"].verdict == "inconclusive"
    for comparison in (busy_gpu, decided, serving):
        assert not [w for w in comparison.warnings if w.startswith("HOST-BOUND")]
