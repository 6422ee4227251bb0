"""The backend protocol: load once, run whole workload passes, say what was really applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from llem_bench.config.base import is_load_field
from llem_bench.config.experiment import ExperimentConfig, stable_json
from llem_bench.workload.prompts import Workload


@dataclass
class PassOutput:
    """What one pass over the workload produced: generated tokens per request (never padded widths)."""

    output_tokens: list[int]
    # Prompt tokens per request served from a prefix cache (vLLM's num_cached_tokens); None when the
    # backend does not report it. Checked against vllm.reuse_prefix_cache (harness/prefix_cache.py).
    cached_prompt_tokens: Optional[list[int]] = None


class Backend(Protocol):
    name: str
    tokenizer: Any

    def load(self, config: ExperimentConfig) -> None: ...

    def configure(self, config: ExperimentConfig) -> None:
        """Apply the run-time (non-load) settings of an experiment to the loaded model."""

    def run_pass(self, workload: Workload) -> PassOutput: ...

    def synchronize(self) -> None: ...

    def cuda_ordinals(self) -> list[int]: ...

    def reset_peak_memory(self) -> None: ...

    def peak_memory_mb(self) -> tuple[Optional[float], str]: ...

    def effective_config(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def load_key(config: ExperimentConfig) -> str:
    """Experiments with equal keys can share one loaded model (e.g. a batch-size sweep)."""
    section = config.backend_config
    key = {
        "model": config.model, "backend": config.backend, "dtype": config.dtype,
        "section": {n: getattr(section, n) for n in type(section).model_fields
                    if n != "passthrough" and is_load_field(type(section), n)},
        "passthrough": section.passthrough,
    }
    return stable_json(key)
