"""Pure logic of the measurement method: latency statistics, roofline, validity, config tiers."""

import pytest

from llem_bench.config import ConfigError
from llem_bench.config.study import parse_study
from llem_bench.harness.latency import RequestTiming, compare_throughput, percentile, summarize_passes
from llem_bench.metrics import cycle_metrics
from llem_bench.harness.roofline import bandwidth_gbs, decode_roofline
from llem_bench.harness.validity import verdict


def test_percentiles_interpolate_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5 and percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 90) == pytest.approx(3.7)


def test_latency_from_real_timestamps():
    r = RequestTiming(pass_start=0.0, submitted=1.0, deliveries=[(1.1, 1), (1.15, 1), (1.25, 1)], end=1.3)
    s = summarize_passes([[r]])
    assert s["ttft_ms"]["mean"] == pytest.approx(100.0)
    assert s["itl_ms"]["p50"] == pytest.approx(75.0)  # gaps 50 and 100 ms
    assert s["itl_ms"]["n"] == 2 and s["e2e_latency_ms"]["mean"] == pytest.approx(300.0)
    assert s["tpot_ms"]["mean"] == pytest.approx(200.0 / 2)  # (e2e - TTFT) / (tokens - 1)
    assert s["queue_ms"]["mean"] == pytest.approx(1000.0)
    assert s["itl_basis"].startswith("per token: every delivery carried one token")


def test_a_batch_sharing_its_stamps_is_one_sample_and_small_samples_get_no_tail_percentiles():
    """PyTorch: the 8 requests of a static batch share every stamp: one TTFT, not eight."""
    batch = RequestTiming(pass_start=0.0, submitted=0.0, deliveries=[(0.02, 1), (0.03, 1)], end=0.03, requests=8)
    s = summarize_passes([[batch]])
    assert (s["ttft_ms"]["n"], s["ttft_ms"]["n_independent"], s["requests"], s["stamps_shared_by"]) == (1, 1, 8, 8)
    assert s["ttft_ms"]["p90"] is None and s["ttft_ms"]["p99"] is None
    assert s["ttft_ms"]["omitted"]["p99"] == "needs >= 100 independent samples, have 1"
    assert s["ttft_ms"]["ci95_low"] is None  # one pass: no CI
    assert s["streaming_output_tokens_per_s"]["mean"] == pytest.approx(8 * 2 / 0.03)


def test_requests_stamped_by_one_engine_step_count_as_one_independent_sample():
    """vLLM: requests submitted one after another get their first token from the same step."""
    reqs = [RequestTiming(pass_start=0.0, submitted=0.001 * i, deliveries=[(0.05, 1), (0.06, 1)], end=0.06)
            for i in range(4)]
    ttft = summarize_passes([reqs])["ttft_ms"]
    assert (ttft["n"], ttft["n_independent"]) == (4, 1)
    assert ttft["p50"] == pytest.approx(48.5)


def test_itl_is_per_token_when_a_delivery_carries_several_tokens():
    """stream_interval 4 (or speculative decoding): no made-up zero gaps."""
    r = RequestTiming(pass_start=0.0, submitted=0.0, deliveries=[(0.1, 1), (0.18, 4), (0.26, 4)], end=0.26)
    s = summarize_passes([[r]])
    assert s["itl_ms"]["n"] == 2 and s["itl_ms"]["p50"] == pytest.approx(20.0) and s["itl_ms"]["mean"] > 0
    assert s["tpot_ms"]["mean"] == pytest.approx(160.0 / 8)
    assert "2 of 3 deliveries carried several tokens" in s["itl_basis"]


def test_repeated_passes_give_a_ci_over_the_pass_means():
    passes = [[RequestTiming(pass_start=0.0, submitted=0.0, deliveries=[(t, 1), (t + 0.01, 1)], end=t + 0.01)]
              for t in (0.020, 0.022, 0.021)]
    ttft = summarize_passes(passes)["ttft_ms"]
    assert ttft["passes"] == 3 and ttft["n_independent"] == 3
    assert ttft["pass_means"] == pytest.approx([20.0, 22.0, 21.0])
    assert ttft["ci95_low"] < 21.0 < ttft["ci95_high"]


def test_streaming_throughput_far_from_the_windows_is_a_warning():
    windows = [100.0, 101.0, 99.0]
    close, warning = compare_throughput({"mean": 100.5}, windows)
    assert warning is None and close["relative_difference"] == pytest.approx(0.005)
    far, warning = compare_throughput({"mean": 113.0}, windows)
    assert far["limit_basis"] == "window 95% CI half-width" and "+13.0%" in warning
    _, warning = compare_throughput({"mean": 105.0}, [100.0])  # one cycle: no CI, a 10% limit
    assert warning is None


def test_net_energy_subtracts_resident_idle_power():
    m = cycle_metrics(wall_time_s=10.0, input_tokens=0, output_tokens=1000, requests=10, energy_j=2000.0,
                      peak_memory_mb=None, idle_power_w=70.0, peak_power_w=300.0)
    assert m["energy_per_output_token_j"] == 2.0
    assert m["energy_per_output_token_net_j"] == pytest.approx((2000 - 700) / 1000)
    assert m["peak_power_w"] == 300.0


def test_roofline_of_llama_1b_on_an_h100():
    shape = {"weight_bytes": 1_235_814_400 * 2, "kv_bytes_per_element": 2, "layers": 16, "kv_heads": 8, "head_dim": 64}
    r = decode_roofline(shape, ["NVIDIA H100 80GB HBM3"], batch=1, avg_context=200, measured_decode_tokens_per_s=100)
    assert bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350
    # 2.47 GB of weights + 6.6 MB of KV per step -> ~1350 tok/s at batch 1
    assert 1300 < r["bound_tokens_per_s"] < 1400 and r["fraction"] == pytest.approx(100 / r["bound_tokens_per_s"])
    unknown = decode_roofline(shape, ["Mystery GPU"], 1, 10, 5)
    assert unknown["fraction"] is None and "not in the table" in unknown["reason"]


def test_validity_verdicts():
    ok = dict(energy_available=True, energy_reason=None, token_ok=True, cvs={"x": 0.01}, window_s=10,
              throttle_fraction={}, cross_check={"agree": True}, other_processes=[], warmup={"stable": True},
              cycles=3)
    assert verdict(**ok) == {"verdict": "valid", "reasons": []}
    assert verdict(**{**ok, "window_s": 1})["verdict"] == "warning"
    assert verdict(**{**ok, "cvs": {"x": 0.5}})["verdict"] == "invalid"
    assert verdict(**{**ok, "token_ok": False})["verdict"] == "invalid"
    off = verdict(**{**ok, "cross_check": {"agree": False, "relative_difference": 0.05, "threshold": 0.03}})
    assert "disagree by +5.0%" in off["reasons"][0]
    cpu = verdict(**{**ok, "energy_available": False, "energy_reason": "CPU run"})
    assert cpu == {"verdict": "warning", "reasons": ["energy unavailable: CPU run"]}


def test_reference_tier_requires_long_windows():
    with pytest.raises(ConfigError, match="tier: reference needs min_window_s >= 30 and cycles >= 5"):
        parse_study({"study": "s", "model": "synthetic:tiny", "measurement": {"tier": "reference"}})
    parse_study({"study": "s", "model": "synthetic:tiny", "measurement": {"tier": "reference", "min_window_s": 30, "cycles": 5}})


def test_validity_needs_a_stable_warmup_two_cycles_and_a_meaningful_net():
    ok = dict(energy_available=True, energy_reason=None, token_ok=True, cvs={"x": 0.01}, window_s=10,
              throttle_fraction={}, cross_check={"agree": True}, other_processes=[], warmup={"stable": True},
              cycles=3)
    assert verdict(**{**ok, "cycles": 1})["verdict"] == "invalid"
    assert verdict(**{**ok, "cycles": 2})["verdict"] == "warning"
    unstable = verdict(**{**ok, "warmup": {"stable": False, "cv_last3": 0.477}})
    assert unstable["verdict"] == "warning" and "47.7%" in unstable["reasons"][0]
    unchecked = verdict(**{**ok, "warmup": {"stable": None, "note": "stability not checked: max_runs 2 < 4"}})
    assert unchecked["verdict"] == "warning" and "max_runs 2" in unchecked["reasons"][0]
    assert verdict(**{**ok, "net_flag": "net energy is 3.0% of gross"})["verdict"] == "warning"
    noisy_net = verdict(**{**ok, "cvs": {"x": 0.01, "energy_per_output_token_net_j": 0.347}})
    assert noisy_net["verdict"] == "warning" and "34.7%" in noisy_net["reasons"][0]
    # One throttled 100 ms sample in a window is not a throttled window; 10% of the samples is.
    assert verdict(**{**ok, "throttle_fraction": {"sw_power_cap": 0.01}})["verdict"] == "valid"
    capped = verdict(**{**ok, "throttle_fraction": {"sw_power_cap": 0.10}})
    assert capped["verdict"] == "warning" and "sw_power_cap 10% of samples" in capped["reasons"][0]


def test_gh200_is_not_read_as_h200_and_device_map_counts_one_gpu():
    assert bandwidth_gbs("NVIDIA GH200 480GB") == 4000 and bandwidth_gbs("NVIDIA H200") == 4800
    assert bandwidth_gbs("NVIDIA H100 NVL") == 3900
    shape = {"weight_bytes": 2_000_000_000, "kv_bytes_per_element": 2, "layers": 16, "kv_heads": 8, "head_dim": 64}
    gpus = ["NVIDIA H100 80GB HBM3"] * 2
    tp = decode_roofline(shape, gpus, 1, 10, 100)
    layers = decode_roofline(shape, gpus, 1, 10, 100, layer_sequential=True)
    assert tp["bandwidth_gbs"] == 6700 and layers["bandwidth_gbs"] == 3350
    assert layers["bound_tokens_per_s"] == pytest.approx(tp["bound_tokens_per_s"] / 2)


def test_warmup_config_that_can_never_reach_stability_is_an_error_naming_the_field():
    with pytest.raises(ConfigError, match="max_runs"):
        parse_study({"study": "s", "model": "synthetic:tiny", "measurement": {"warmup": {"min_runs": 1, "max_runs": 3}}})
    parse_study({"study": "s", "model": "synthetic:tiny", "measurement": {"warmup": {"min_runs": 2, "max_runs": 2}}})  # fixed: allowed


def _summary(mean, half):
    from llem_bench.results.schema import MetricSummary

    return MetricSummary(mean=mean, std=half, n=3, cv=None, ci95_low=mean - half, ci95_high=mean + half,
                         values=[mean] * 3)


def test_net_ci_adds_the_idle_uncertainty_and_a_meaningless_net_is_flagged():
    from llem_bench.harness.runner import _net_energy

    cycles = [{"wall_time_s": 5.0, "output_tokens": 1000}] * 3
    warnings = []
    metrics = {"energy_per_output_token_net_j": _summary(0.05, 0.002), "energy_per_output_token_j": _summary(0.2, 0.004)}
    out = _net_energy(metrics, cycles, {"uncertainty_w": 2.0}, warnings)
    # idle term: 2 W x 5 s / 1000 tokens = 0.01 J/token; half-width = sqrt(0.002^2 + 0.01^2)
    assert out["net_idle_term_j"] == pytest.approx(0.01)
    net = metrics["energy_per_output_token_net_j"]
    assert (net.ci95_high - net.ci95_low) / 2 == pytest.approx((0.002 ** 2 + 0.01 ** 2) ** 0.5)
    assert out["net_share_of_gross"] == pytest.approx(0.25) and "net_flag" not in out and warnings == []
    # 600 J in 5 s with 125 W idle over 1000 tokens: net -0.025 J/token (review 1.1)
    negative = {"energy_per_output_token_net_j": _summary(-0.025, 0.001), "energy_per_output_token_j": _summary(0.6, 0.01)}
    assert "not positive" in _net_energy(negative, cycles, {"uncertainty_w": 2.0}, warnings)["net_flag"]
    tiny = {"energy_per_output_token_net_j": _summary(0.02, 0.001), "energy_per_output_token_j": _summary(0.6, 0.01)}
    assert "3.3% of gross" in _net_energy(tiny, cycles, {"uncertainty_w": 2.0}, warnings)["net_flag"]
    assert len(warnings) == 2
