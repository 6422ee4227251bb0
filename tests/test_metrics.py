import math

import pytest

from llem_bench.metrics import METRICS, cycle_metrics
from llem_bench.stats import cv, summarize, t95


def test_cycle_metrics_formulas():
    m = cycle_metrics(wall_time_s=2.0, input_tokens=300, output_tokens=500, requests=10, energy_j=50.0,
                      peak_memory_mb=123.0)
    assert m["output_tokens_per_s"] == 250.0
    assert m["total_tokens_per_s"] == 400.0
    assert m["requests_per_s"] == 5.0
    assert m["energy_per_output_token_j"] == 0.1
    assert m["energy_per_request_j"] == 5.0
    assert m["avg_power_w"] == 25.0
    assert m["wall_time_s"] == 2.0
    assert m["peak_memory_mb"] == 123.0
    assert set(m) == set(METRICS)


def test_unmeasured_energy_stays_null_never_zero():
    m = cycle_metrics(wall_time_s=1.0, input_tokens=1, output_tokens=1, requests=1, energy_j=None,
                      peak_memory_mb=None)
    assert m["energy_per_output_token_j"] is None and m["avg_power_w"] is None and m["energy_per_request_j"] is None


@pytest.mark.parametrize("kwargs", [dict(wall_time_s=0.0, output_tokens=1, requests=1),
                                    dict(wall_time_s=1.0, output_tokens=0, requests=1)])
def test_degenerate_windows_are_rejected(kwargs):
    with pytest.raises(ValueError):
        cycle_metrics(input_tokens=1, energy_j=None, peak_memory_mb=None, **kwargs)


def test_summary_statistics_match_hand_computation():
    s = summarize([10.0, 12.0, 14.0])
    assert s["mean"] == 12.0
    assert s["std"] == pytest.approx(2.0)
    half = 4.303 * 2.0 / math.sqrt(3)
    assert s["ci95_low"] == pytest.approx(12.0 - half, abs=1e-3) and s["ci95_high"] == pytest.approx(12.0 + half, abs=1e-3)
    assert s["cv"] == pytest.approx(2.0 / 12.0)
    assert s["n"] == 3 and s["values"] == [10.0, 12.0, 14.0]


def test_summary_of_one_cycle_has_no_interval_and_missing_values_give_none():
    assert summarize([5.0])["ci95_low"] is None and summarize([5.0])["std"] is None
    assert summarize([1.0, None]) is None
    assert summarize([]) is None


def test_t_quantiles():
    assert t95(1) == pytest.approx(12.706, abs=1e-3) and t95(2) == pytest.approx(4.303, abs=1e-3)
    assert t95(1000) == pytest.approx(1.962, abs=1e-3)
    assert cv([1.0]) is None
