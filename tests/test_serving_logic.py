"""Pure logic of the serving scenario: study grammar, arrivals, lengths, the steady-state window,
SSE token counting and Prometheus parsing. The engine itself is exercised by the CI serving tier."""

import json
import math
import random
import statistics

import pytest

from llem_bench.config import ConfigError
from llem_bench.config.serving import LengthSpec, ServingConfig
from llem_bench.config.study import parse_study
from llem_bench.scenarios.serving import cache_hits
from llem_bench.serving.arrivals import arrival_offsets
from llem_bench.serving.client import RequestRecord, _count, parse_prometheus
from llem_bench.serving.window import (mean_level, stationarity, steady_window, step_series, tokens_between,
                                       window_warnings)
from llem_bench.workload.lengths import plan_requests, sample_lengths

SERVING = {"study": "s", "model": "synthetic:tiny", "backend": "vllm", "scenario": "serving"}


def error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    return str(info.value)


# --- grammar ---------------------------------------------------------------------------------------

def test_rate_sweep_gives_stable_selectable_ids():
    _, experiments = parse_study({**SERVING, "sweep": {"serving.rate": [2, "inf", ".inf"][:2]}})
    ids = [e.test_id for e in experiments]
    assert ids[0].startswith("vllm-tiny-auto-serving-rate_2-") and ids[1].startswith("vllm-tiny-auto-serving-rate_inf-")
    assert ids == [e.test_id for e in parse_study({**SERVING, "sweep": {"serving.rate": [2, "inf"]}})[1]]
    assert experiments[1].config.serving.rate_per_s == math.inf


def test_offline_ids_do_not_change():
    plain = parse_study({"study": "s", "model": "synthetic:tiny", "backend": "vllm"})[1][0].test_id
    assert "serving" not in plain and "offline" not in plain


def test_scenario_sweep_drops_the_serving_section_for_offline_points():
    _, experiments = parse_study({"study": "s", "model": "synthetic:tiny", "backend": "vllm", "serving": {"concurrency": 4},
                                  "sweep": {"scenario": ["offline", "concurrency"]}})
    assert [e.config.serving is None for e in experiments] == [True, False]
    assert experiments[1].config.serving.concurrency == 4


@pytest.mark.parametrize("raw, fragment", [
    ({"study": "s", "model": "synthetic:tiny", "scenario": "serving"}, "needs backend: vllm"),
    ({**SERVING, "scenario": "concurrency"}, "needs serving.concurrency"),
    ({**SERVING, "scenario": "concurrency", "serving": {"concurrency": 2, "rate": 4}}, "serving.rate applies to"),
    ({"study": "s", "model": "synthetic:tiny", "backend": "vllm", "serving": {"rate": 2}}, "scenario is 'offline'"),
    ({**SERVING, "serving": {"rate": 0}}, "rate must be > 0"),
    ({**SERVING, "serving": {"engine": "inprocess", "server": {"health": "/h"}}}, "serving.server applies to"),
    ({**SERVING, "serving": {"output_tokens": {"dist": "lognormal", "mean": 100}}}, "needs std, max"),
    ({**SERVING, "sweep": {"serving.rat": [1]}}, "Did you mean 'rate'"),
    ({**SERVING, "serving": {"server": {"url": "http://example.com:8000"}}}, "only localhost"),
    ({**SERVING, "measurement": {"sampler_interval_s": 0}}, "measurement.sampler_interval_s must be > 0"),
    ({**SERVING, "serving": {"engine": "inprocess", "client_processes": 2}}, "client_processes > 1 needs engine: server"),
    ({**SERVING, "scenario": "concurrency", "serving": {"concurrency": 2, "client_processes": 3}}, "exceeds serving.concurrency"),
])
def test_impossible_combinations_name_the_field(raw, fragment):
    assert fragment in error(raw)


# --- arrivals --------------------------------------------------------------------------------------

def test_arrivals_poisson_mean_rate_and_seeded():
    offsets = arrival_offsets(4000, 8.0, "poisson", seed=3)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / 8, rel=0.06)
    assert statistics.stdev(gaps) == pytest.approx(1 / 8, rel=0.08)  # exponential: std = mean
    assert offsets == arrival_offsets(4000, 8.0, "poisson", seed=3)
    assert offsets != arrival_offsets(4000, 8.0, "poisson", seed=4)


def test_arrivals_gamma_burstier_constant_exact_inf_at_once():
    bursty = arrival_offsets(4000, 8.0, "gamma", burstiness=0.25, seed=1)
    gaps = [b - a for a, b in zip(bursty, bursty[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / 8, rel=0.1)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(2.0, rel=0.15)  # cv = 1/sqrt(shape)
    assert arrival_offsets(4, 2.0, "constant") == [0.0, 0.5, 1.0, 1.5]
    assert arrival_offsets(5, math.inf) == [0.0] * 5


# --- lengths ---------------------------------------------------------------------------------------

def test_length_distributions_respect_bounds_and_moments():
    rng = random.Random(0)
    assert sample_lengths(LengthSpec(dist="fixed", value=7), 3, rng, "x") == [7, 7, 7]
    uniform = sample_lengths(LengthSpec(dist="uniform", min=5, max=9), 2000, rng, "x")
    assert min(uniform) == 5 and max(uniform) == 9
    normal = sample_lengths(LengthSpec(dist="normal", mean=100, std=30, min=80, max=120), 2000, rng, "x")
    assert min(normal) == 80 and max(normal) == 120  # clipped, and the clip is hit
    lognormal = sample_lengths(LengthSpec(dist="lognormal", mean=200, std=100, max=100000), 20000, rng, "x")
    assert statistics.mean(lognormal) == pytest.approx(200, rel=0.05)
    assert statistics.stdev(lognormal) == pytest.approx(100, rel=0.1)


def test_dataset_lengths_in_file_order_and_bad_lines(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"output_tokens": n}) for n in (3, 5, 8)))
    spec = LengthSpec(dist="dataset", path=str(data), field="output_tokens")
    assert sample_lengths(spec, 5, random.Random(0), "x") == [3, 5, 8, 3, 5]
    data.write_text('{"output_tokens": 0}\n')
    with pytest.raises(ConfigError, match="line 1"):
        sample_lengths(spec, 1, random.Random(0), "serving.output_tokens")


def test_plan_is_reproducible_and_exact():
    class Workload:
        input_tokens, max_input_tokens, output_tokens = 16, 64, 4

    serving = ServingConfig(num_requests=10, seed=2, output_tokens={"dist": "uniform", "min": 2, "max": 30})
    plan = plan_requests(serving, Workload, vocab_size=50, avoid_ids={0, 1, 2}, offsets=[0.0] * 10)
    assert plan == plan_requests(serving, Workload, 50, {0, 1, 2}, [0.0] * 10)
    assert all(len(r.prompt_token_ids) == 16 for r in plan)
    assert all(2 <= r.output_tokens <= 30 for r in plan) and len({r.output_tokens for r in plan}) > 1
    assert not {0, 1, 2} & {t for r in plan for t in r.prompt_token_ids}


# --- window ----------------------------------------------------------------------------------------

def closed_loop(n=40, c=4, service=1.0, ttft=0.1):
    """A closed loop at concurrency c: slot k serves requests back to back."""
    first, finish = [], []
    for i in range(n):
        slot, round_ = i % c, i // c
        start = round_ * service + slot * 0.01
        first.append(start + ttft)
        finish.append(start + service)
    return first, finish


def test_window_closed_loop_uses_the_concurrency_plateau():
    first, finish = closed_loop()
    window = steady_window(first, finish, 0.0, max(finish))
    assert window["b"] == 4
    assert window["start"] == sorted(first)[3]  # the 4th first token: the batch is full
    assert window["end"] == sorted(finish)[40 - 4 - 2]  # the (N-B-1)-th completion
    assert window["coverage"] > 0.8
    assert window["mean_decoding"] == pytest.approx(4 * 0.9, rel=0.05)  # decoding = after the first token


def test_window_b_is_capped_and_too_few_requests_have_none():
    first = [0.1 * i for i in range(8)]
    finish = [10.0 + 0.1 * i for i in range(8)]  # all decoding at once: plateau 8, capped to N/4
    assert steady_window(first, finish, 0.0, 11.0)["b"] == 2
    assert steady_window([0.1, 0.2], [1.0, 2.0], 0, 2)["start"] is None


def test_stationarity_flags_a_ramp_and_passes_a_plateau():
    first, finish = closed_loop()
    series = step_series(list(zip(first, finish)))
    times = [[f + 0.05 * k for k in range(18)] for f in first]
    counts = [[1] * 18 for _ in first]
    window = steady_window(first, finish, 0.0, max(finish))
    flat = stationarity(series, times, counts, window["start"], window["end"])
    assert flat["stationary"], flat
    ramp = [(0.0, 1), (2.0, 2), (4.0, 4), (6.0, 8), (8.0, 0)]
    ramp_times = [[0.5 * k for k in range(16)]]
    assert stationarity(ramp, ramp_times, [[1] * 16], 0.0, 8.0)["stationary"] is False


def test_window_warnings_short_and_low_coverage():
    warns = window_warnings({"start": 0.0, "end": 5.0, "duration_s": 5.0, "coverage": 0.3,
                             "stationarity": {"stationary": True}})
    assert any("under 20 s" in w for w in warns) and any("30% of the run" in w for w in warns)
    assert window_warnings({"start": 0.0, "end": 30.0, "duration_s": 30.0, "coverage": 0.9}) == []


def test_step_series_and_tokens_half_open():
    series = step_series([(0, 2), (1, 3)])
    assert series == [(0, 1), (1, 2), (2, 1), (3, 0)]
    assert mean_level(series, 0, 3) == pytest.approx(4 / 3)
    times, counts = [[0.0, 1.0, 2.0]], [[1, 2, 3]]
    assert tokens_between(times, counts, 0.0, 1.0) + tokens_between(times, counts, 1.0, 2.0, closed=True) == 6


# --- client parsing --------------------------------------------------------------------------------

def test_usage_counts_tokens_per_event_including_multi_token_chunks():
    record = RequestRecord(0, 4, 5, 0.0)
    counted = 0
    for t, total in ((1.0, 1), (1.1, 3), (1.2, 5)):
        counted = _count({"choices": [{"text": "x"}], "usage": {"completion_tokens": total}}, counted, record, t)
    counted = _count({"choices": [], "usage": {"completion_tokens": 5}}, counted, record, 1.3)  # usage-only tail
    assert counted == 5 and record.first_token == 1.0
    assert record.chunk_times == [1.0, 1.1, 1.2] and record.chunk_tokens == [1, 2, 2]
    assert record.counted_by == "usage"


def test_a_count_without_usage_says_it_counted_events():
    record = RequestRecord(0, 4, 2, 0.0)
    counted = 0
    for t in (1.0, 1.1):
        counted = _count({"choices": [{"text": "x"}]}, counted, record, t)
    assert counted == 2 and record.counted_by is None  # the stream's end sets "events" (no usage seen)


def test_usage_only_in_the_last_event_as_llama_cpp_streams_it():
    # llama-server: one text event per token without usage, then a final event with usage (and the
    # prompt tokens it served from its cache); the usage total stays the count
    record = RequestRecord(0, 4, 3, 0.0)
    counted = 0
    for t in (1.0, 1.1, 1.2):
        counted = _count({"choices": [{"text": "x", "finish_reason": None}]}, counted, record, t)
    usage = {"completion_tokens": 3, "prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 0}}
    counted = _count({"choices": [{"text": "", "finish_reason": "length"}], "usage": usage}, counted, record, 1.3)
    assert counted == 3 and record.chunk_tokens == [1, 1, 1] and record.cached_prompt_tokens == 0
    assert record.counted_by == "usage"


def test_cache_hits_are_summed_only_when_every_request_reports_them():
    records = [RequestRecord(i, 4, 3, 0.0) for i in range(3)]
    assert cache_hits(records) == {}  # vLLM without --enable-prompt-tokens-details: unknown, not zero
    for record, cached in zip(records, (0, 3, 2)):
        record.cached_prompt_tokens = cached
    assert cache_hits(records) == {"cached_prompt_tokens": 5, "requests_with_hits": 2,
                                   "checked_by": "usage.prompt_tokens_details.cached_tokens of every request"}
    records[0].cached_prompt_tokens = None
    assert cache_hits(records) == {}

def test_prometheus_gauges_summed_over_labels():
    text = ('# HELP x\nvllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            'vllm:num_requests_running{engine="1",model_name="m"} 2.0\nvllm:other 9\n'
            'vllm:request_queue_time_seconds_sum{model_name="m"} 0.5\n')
    assert parse_prometheus(text) == {"vllm:num_requests_running": 5.0, "vllm:request_queue_time_seconds_sum": 0.5}


def test_pareto_front_keeps_only_undominated_points():
    from llem_bench.results.serving_plots import pareto_front

    points = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0)]
    assert pareto_front(points) == [(1.0, 5.0), (2.0, 2.0), (4.0, 1.0)]


def test_step_budget_read_from_a_vllm_server_log():
    from llem_bench.serving.server import logged_scheduler

    log = "INFO 12-03 15:51:31 [scheduler.py:252] Chunked prefill is enabled with max_num_batched_tokens=16384.\n"
    assert logged_scheduler(log) == {"max_num_batched_tokens": 16384}
    assert logged_scheduler("llama.cpp: server is listening\n") == {}
