"""Coverage audit: which upstream parameters our schema models, and which energy-relevant ones it
does not (passthrough does not count: a passed-through kwarg is neither validated nor documented)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from llem_bench.config.introspect import backend_fields

# Upstream names that change energy or throughput, with why; the denominator of coverage.
ENERGY_RELEVANT = {
    "vllm": {
        "dtype": "weight/activation precision", "quantization": "weight bytes per step",
        "kv_cache_dtype": "KV bytes per step", "block_size": "KV allocation granularity",
        "gpu_memory_utilization": "KV capacity, so batch size", "kv_cache_memory_bytes": "KV capacity",
        "cpu_offload_gb": "PCIe traffic per step", "max_num_seqs": "decode batch",
        "max_num_batched_tokens": "step token budget", "enable_chunked_prefill": "prefill scheduling",
        "enable_prefix_caching": "skipped prefill work", "enforce_eager": "CUDA graphs",
        "compilation_config": "kernel fusion and graphs", "tensor_parallel_size": "GPUs per replica",
        "pipeline_parallel_size": "pipeline stages", "data_parallel_size": "replicas",
        "distributed_executor_backend": "worker start-up", "speculative_config": "decode steps saved",
        "max_model_len": "KV reservation", "seed": "sampling reproducibility", "load_format": "load path",
        "num_gpu_blocks_override": "KV capacity", "long_prefill_token_threshold": "prefill scheduling",
        "scheduling_policy": "request order", "async_scheduling": "GPU idle between steps",
        "attention_backend": "attention kernel", "kv_offloading_size": "KV traffic to host",
        "disable_custom_all_reduce": "all-reduce kernel", "enable_expert_parallel": "MoE placement",
        "enable_lora": "LoRA kernels", "max_loras": "LoRA batch", "max_lora_rank": "LoRA compute",
        "max_num_partial_prefills": "concurrent prefills", "cudagraph_capture_sizes": "graph coverage",
        "enable_sleep_mode": "idle memory release", "performance_mode": "scheduler tuning preset",
        "optimization_level": "compilation preset",
        # sampling
        "max_tokens": "output length", "min_tokens": "output length", "ignore_eos": "output length",
        "temperature": "sampling work", "top_p": "sampling work", "top_k": "sampling work", "min_p": "sampling work",
        "repetition_penalty": "sampling work", "presence_penalty": "sampling work",
        "frequency_penalty": "sampling work", "n": "sequences per request",
    },
    "pytorch": {
        "dtype": "precision", "attn_implementation": "attention kernel", "device_map": "placement",
        "quantization_config": "weight bytes", "max_new_tokens": "output length", "min_new_tokens": "output length",
        "do_sample": "sampling", "num_beams": "beams multiply decode work", "temperature": "sampling work",
        "top_p": "sampling work", "top_k": "sampling work", "repetition_penalty": "sampling work",
        "use_cache": "KV reuse", "cache_implementation": "KV cache kind, enables compile",
        "compile_config": "compiled decode", "prompt_lookup_num_tokens": "assisted decoding",
        "num_return_sequences": "sequences per request", "min_p": "sampling work",
    },
}
# Our field -> the upstream name it covers, where they differ.
ALIASES = {"compilation": "compilation_config", "workload.output_tokens": ["max_tokens", "min_tokens", "max_new_tokens",
           "min_new_tokens"], "workload.ignore_eos": "ignore_eos", "decoding.preset": "do_sample",
           "pytorch.torch_compile": "compile_config", "decoding.temperature": "temperature", "decoding.top_p": "top_p",
           "decoding.top_k": "top_k", "decoding.repetition_penalty": "repetition_penalty", "workload.seed": "seed"}
# Always set by the harness (so modelled, though not a field): one sequence per request.
HARNESS_SET = {"vllm": {"n"}, "pytorch": {"num_return_sequences"}}


def modelled(backend: str) -> set[str]:
    names: set[str] = {"dtype"} | HARNESS_SET.get(backend, set())
    for f in backend_fields(backend) + backend_fields("common"):
        alias = ALIASES.get(f.key) or ALIASES.get(f.name)
        names.update(alias if isinstance(alias, list) else [alias or f.name])
    if backend == "vllm":  # the nested compilation section is compilation_config upstream
        names.update(["compilation_config"] + [f.name for f in backend_fields("vllm") if f.section == "vllm.compilation"])
    return names


def upstream_names(backend: str) -> tuple[set[str], str]:
    """The installed library's parameter names, and where they came from."""
    if backend == "pytorch":
        from transformers import GenerationConfig

        names = set(GenerationConfig().to_dict()) | {"dtype", "attn_implementation", "device_map",
                                                     "quantization_config", "revision", "trust_remote_code"}
        import transformers

        return names, f"transformers {transformers.__version__} GenerationConfig + from_pretrained kwargs"
    try:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import EngineArgs
        import vllm

        sampling = set(getattr(SamplingParams, "__struct_fields__", ()))
        return {f.name for f in dataclasses.fields(EngineArgs)} | sampling, f"installed vLLM {vllm.__version__}"
    except ImportError:
        here = Path(__file__).resolve().parents[2] / "docs" / "parameters" / "vllm-0.32-fields.txt"
        return set(here.read_text().split()), f"{here.name} (vLLM not installed here)"


def coverage(backend: str) -> dict:
    ours = modelled(backend)
    upstream, source = upstream_names(backend)
    relevant = {n for n in ENERGY_RELEVANT.get(backend, {}) if n in upstream or n in ours}
    missing = sorted(relevant - ours)
    return {"backend": backend, "source": source, "energy_relevant": len(relevant),
            "modelled": len(relevant) - len(missing), "missing_energy_relevant": missing,
            "coverage": (len(relevant) - len(missing)) / len(relevant) if relevant else None,
            "unmodelled_other": sorted(upstream - ours - relevant)}


def render_coverage(backend: str) -> str:
    c = coverage(backend)
    lines = [f"{backend}: {c['modelled']}/{c['energy_relevant']} energy-relevant parameters modelled "
             f"({c['coverage']:.0%}), from {c['source']}"]
    reasons = ENERGY_RELEVANT.get(backend, {})
    lines += [f"  missing: {n} ({reasons[n]})" for n in c["missing_energy_relevant"]]
    lines.append(f"  not modelled, not energy-relevant: {len(c['unmodelled_other'])} "
                 f"(e.g. {', '.join(c['unmodelled_other'][:8])})")
    return "\n".join(lines)
