"""Prefill/decode split guards (audit 6.1): decode = full pass - prefill pass must never give a
negative or zero-token decode; each such case gets a reason."""

from llem_bench.scenarios.offline import split_phases
from llem_bench.workload.prompts import Workload

WORKLOAD = Workload([[1] * 100] * 4, output_tokens=16, source="test")


def cycles(wall_s, energy_j, output_tokens=64, requests=4):
    return [{"passes": 1, "wall_time_s": wall_s, "energy_j": energy_j, "output_tokens": output_tokens,
             "requests": requests}] * 2


def test_phases_split_normal_case():
    out = split_phases({"passes": 2, "wall_time_s": 0.4, "energy_j": 40.0}, cycles(1.0, 100.0), WORKLOAD, None)
    decode = out["decode"]
    assert decode["time_s"] == 0.8 and decode["tokens"] == 60 and decode["tokens_per_s"] == 75
    assert decode["energy_j"] == 80.0 and decode["energy_per_token_j"] == 80.0 / 60


def test_phases_prefill_as_long_as_the_full_pass_gives_a_reason_and_no_negative_energy():
    out = split_phases({"passes": 1, "wall_time_s": 1.2, "energy_j": 120.0}, cycles(1.0, 100.0), WORKLOAD, None)
    decode = out["decode"]
    assert decode["tokens_per_s"] is None and "took as long as the full pass" in decode["reason"]
    assert decode["energy_j"] is None and decode["energy_per_token_j"] is None


def test_phases_prefill_energy_above_the_full_pass_gives_an_energy_reason():
    out = split_phases({"passes": 1, "wall_time_s": 0.5, "energy_j": 110.0}, cycles(1.0, 100.0), WORKLOAD, None)
    decode = out["decode"]
    assert decode["tokens_per_s"] == 120 and decode["energy_j"] is None and "prefill-only pass energy" in decode["energy_reason"]


def test_phases_one_output_token_has_no_decode_and_says_so():
    out = split_phases({"passes": 1, "wall_time_s": 0.5, "energy_j": 50.0}, cycles(1.0, 100.0, output_tokens=4),
                       WORKLOAD, None)
    decode = out["decode"]
    assert decode["tokens"] == 0 and decode["tokens_per_s"] is None and "single token" in decode["reason"]
    assert decode["energy_per_token_j"] is None


def test_phases_vllm_method_states_the_overlap_caveat():
    out = split_phases({"passes": 1, "wall_time_s": 0.5, "energy_j": None}, cycles(1.0, None), WORKLOAD,
                       "CPU run", backend_name="vllm")
    assert "approximate for vLLM" in out["method"] and out["energy_reason"] == "CPU run"
