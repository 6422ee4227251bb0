"""What every config field is: type, default, range, meaning, upstream API, effect, and a
non-default value that is valid for the tiny synthetic model (used by the wiring checks)."""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel

from llem_bench.config.backends import (PyTorchConfig, TensorRTConfig, TensorRTCudaGraphs, TensorRTKvCache,
                                       TensorRTScheduler, VLLMCompilation, VLLMConfig)
from llem_bench.config.experiment import DecodingConfig, MeasurementConfig, WarmupConfig, WorkloadConfig

SECTIONS: dict[str, type[BaseModel]] = {
    "pytorch": PyTorchConfig, "vllm": VLLMConfig, "vllm.compilation": VLLMCompilation, "tensorrt": TensorRTConfig,
    "tensorrt.kv_cache_config": TensorRTKvCache, "tensorrt.scheduler_config": TensorRTScheduler,
    "tensorrt.cuda_graph_config": TensorRTCudaGraphs,
    "workload": WorkloadConfig, "decoding": DecodingConfig, "measurement": MeasurementConfig,
    "measurement.warmup": WarmupConfig,
}
BACKEND_SECTIONS = {"pytorch": ["pytorch"], "vllm": ["vllm", "vllm.compilation"],
                    "tensorrt": ["tensorrt", "tensorrt.kv_cache_config", "tensorrt.scheduler_config",
                                 "tensorrt.cuda_graph_config"],
                    "common": ["workload", "decoding", "measurement", "measurement.warmup"]}

# Test values the generic rules cannot know (valid for synthetic:tiny on a CPU).
TEST_VALUES: dict[str, Any] = {
    "pytorch.attn_implementation": "eager", "pytorch.cache_implementation": "static",
    "pytorch.compile_mode": "reduce-overhead", "pytorch.device": "cpu", "pytorch.device_map": "cpu",
    "vllm.block_size": 64, "vllm.kv_cache_dtype": "fp8", "vllm.kv_cache_memory_bytes": 2**28,
    "vllm.gpu_memory_utilization": 0.25, "vllm.max_model_len": 256, "vllm.quantization": "fp8",
    "vllm.load_format": "safetensors", "vllm.tokenizer_mode": "slow", "vllm.attention_backend": "CPU_ATTN",
    "vllm.distributed_executor_backend": "uni", "vllm.revision": "main", "vllm.max_num_batched_tokens": 1024,
    "vllm.speculative_config": {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 2},
    "vllm.compilation.cudagraph_capture_sizes": [1, 2], "vllm.num_gpu_blocks_override": 64,
    "vllm.long_prefill_token_threshold": 64, "vllm.scheduling_policy": "priority",
    # vLLM turns these on by default (None = vLLM's choice): the non-default is False.
    "vllm.enable_chunked_prefill": False, "vllm.enable_prefix_caching": False,
    "pytorch.prompt_lookup_num_tokens": 3, "workload.output_tokens": 8,
    "pytorch.quantization_config": {"quant_method": "quanto", "weights": "int8"},
    "pytorch.max_memory": {"cpu": "8MB"},  # less than the tiny model's ~13 MB: the rest goes to disk
    "pytorch.experts_implementation": "batched_mm", "pytorch.cache_config": {"backend": "quanto", "nbits": 2},
    "pytorch.max_cache_len": 128, "pytorch.prefill_chunk_size": 4,
    "pytorch.compile_config": {"fullgraph": True, "mode": "max-autotune"},
    "pytorch.assistant_model": "synthetic:tiny", "pytorch.num_assistant_tokens": 2,
    "pytorch.assistant_confidence_threshold": 0.0,
}


@dataclass
class FieldInfo:
    section: str
    name: str
    type: str
    default: Any
    constraints: str
    description: str
    upstream: Optional[str]
    effect: Optional[str]
    load: bool
    test_value: Any

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " | ".join(_type_name(a) for a in args)
        return f"{inner} (optional)" if len(args) < len(typing.get_args(annotation)) else inner
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) if a is not typing.Any else "Any" for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(parts)


def _choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _choices(arg)
        if found:
            return found
    return []


def _base_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _base_type(args[0]) if typing.get_origin(annotation) is typing.Union and args else annotation


def test_value(section: str, name: str, field: Any) -> Any:
    """A valid value different from the default."""
    key = f"{section}.{name}"
    if key in TEST_VALUES:
        return TEST_VALUES[key]
    default = field.get_default(call_default_factory=True)
    choices = [c for c in _choices(field.annotation) if c != default]
    if choices:
        return choices[0]
    base = _base_type(field.annotation)
    if base is bool:
        return not default if isinstance(default, bool) else True
    if base is int:
        return (default or 1) + 1
    if base is float:
        lows = [getattr(m, "le", None) for m in field.metadata if getattr(m, "le", None) is not None]
        return round((default or 0.5) * 0.5, 3) if lows else (default or 1.0) + 0.5
    return None  # dicts, strings without a known valid value: no generated check


def fields_of(section: str) -> list[FieldInfo]:
    model = SECTIONS[section]
    out = []
    for name, field in model.model_fields.items():
        if isinstance(_base_type(field.annotation), type) and issubclass(_base_type(field.annotation), BaseModel):
            continue  # nested sections are listed under their own name
        extra = field.json_schema_extra or {}
        default = field.get_default(call_default_factory=True)
        out.append(FieldInfo(section, name, _type_name(field.annotation), default, _constraints(field),
                             field.description or "", extra.get("upstream"), extra.get("effect"),
                             bool(extra.get("load")), test_value(section, name, field)))
    return out


def backend_fields(backend: str) -> list[FieldInfo]:
    if backend not in BACKEND_SECTIONS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKEND_SECTIONS)}")
    return [f for section in BACKEND_SECTIONS[backend] for f in fields_of(section)]


def render_params(backend: str, as_json: bool = False) -> str:
    fields = backend_fields(backend)
    if as_json:
        return json.dumps([asdict(f) for f in fields], indent=2, default=str)
    width = max(len(f.key) for f in fields)
    lines = [f"{'field'.ljust(width)}  type / default / range  ->  upstream"]
    for f in fields:
        rng = f" [{f.constraints}]" if f.constraints else ""
        lines.append(f"{f.key.ljust(width)}  {f.type} = {f.default!r}{rng}  ->  {f.upstream or '-'}")
        lines.append(f"{' ' * width}  {f.description}" + (f" Effect: {f.effect}" if f.effect else ""))
    return "\n".join(lines)
