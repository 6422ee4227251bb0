"""Prefix-cache hits inside a pass (audit 2.4): the duplicate-prompt warning and the per-request
num_cached_tokens check. The same check runs against real vLLM in benchmarks/vllm/test_vllm_wiring.py."""

from llem_bench.harness.prefix_cache import check_prefix_cache, duplicate_prompts_warning
from llem_bench.harness.validity import verdict
from llem_bench.workload.prompts import Workload


def test_repeated_prompts_warn_with_the_field_and_the_fix():
    workload = Workload(prompt_token_ids=[[1, 2], [1, 3], [1, 2], [1, 3], [1, 2]], output_tokens=4,
                        source="builtin:default")
    message = duplicate_prompts_warning(workload)
    assert "3 of 5 prompts repeat" in message and "2 distinct" in message
    assert "workload.num_prompts <= 2" in message and "vllm.enable_prefix_caching: false" in message


def test_distinct_prompts_do_not_warn():
    assert duplicate_prompts_warning(Workload([[1, 2], [1, 3]], 4, "builtin:default")) is None


def test_vllm_cache_hits_with_reuse_off_are_flagged_with_cause_and_fix():
    check = check_prefix_cache(False, [0, 128, 0, 256])
    assert check["checked"] and check["requests_with_hits"] == 2 and check["cached_prompt_tokens"] == 384
    assert "2 of 4 requests" in check["flag"] and "vllm.reuse_prefix_cache is false" in check["flag"]
    assert "vllm.enable_prefix_caching: false" in check["flag"]


def test_vllm_no_hits_or_reuse_on_is_not_flagged():
    assert "flag" not in check_prefix_cache(False, [0, 0, 0])
    reused = check_prefix_cache(True, [0, 128])
    assert not reused["checked"] and "flag" not in reused and "reuse_prefix_cache: true" in reused["reason"]


def test_prefix_cache_check_is_skipped_without_a_setting_or_a_report():
    assert check_prefix_cache(None, [0])["checked"] is False  # PyTorch: no prefix cache setting
    assert "did not report" in check_prefix_cache(False, None)["reason"]


def test_prefix_cache_flag_makes_the_verdict_a_warning():
    ok = dict(energy_available=True, energy_reason=None, token_ok=True, cvs={}, window_s=10, throttle_fraction={},
              cross_check=None, other_processes=[], warmup={"stable": True}, cycles=3)
    assert verdict(**ok)["verdict"] == "valid"
    flagged = verdict(**ok, prefix_cache="prefix cache: 1 of 2 requests ...")
    assert flagged["verdict"] == "warning" and flagged["reasons"] == ["prefix cache: 1 of 2 requests ..."]
