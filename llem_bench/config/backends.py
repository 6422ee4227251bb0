"""Per-backend configuration sections. Each has a `passthrough` for kwargs we do not model yet."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from llem_bench.config.base import StrictModel, knob

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
    passthrough: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kwargs not modelled yet: keys 'from_pretrained' and 'generate', each a dict.",
    )


class VLLMConfig(StrictModel):
    """vLLM `LLM(...)` engine arguments (the full surface lands with the vLLM backend)."""

    max_num_seqs: Optional[int] = knob(None, "Max sequences per scheduler step; None = vLLM's default.", ge=1,
                                       upstream="EngineArgs.max_num_seqs", load=True)
    gpu_memory_utilization: float = knob(0.9, "Fraction of device memory for weights + KV cache.", gt=0, le=1,
                                         upstream="EngineArgs.gpu_memory_utilization", load=True)
    enforce_eager: bool = knob(False, "Disable CUDA graphs.", upstream="EngineArgs.enforce_eager", load=True)
    passthrough: dict[str, Any] = Field(default_factory=dict, description="Extra EngineArgs kwargs.")


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
