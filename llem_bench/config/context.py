"""Does a request fit? The model's context length read from its config (never its weights), and the
check that prompt + output tokens fit it and vLLM's max_model_len, before any model loads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from llem_bench.config.errors import ConfigError
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.workload.synthetic import SHAPES, is_synthetic, shape_name

# The config keys vLLM reads for the context length (vllm.config: _get_and_verify_max_len); the smallest wins.
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
               "max_sequence_length", "max_seq_length", "seq_len")
# RoPE scalings that vLLM does not multiply into the context length (their factor is already inside).
UNSCALED_ROPE = ("su", "longrope", "llama3", "mrope", "default")


@dataclass(frozen=True)
class ModelContext:
    """The model's context length (None: not known here) and where it was read, or why not."""

    tokens: Optional[int]
    source: str


def model_context(model: str) -> ModelContext:
    """Context length from the synthetic shape, a local config.json, or the Hugging Face cache; no network."""
    if is_synthetic(model):
        return ModelContext(SHAPES[shape_name(model)]["max_position_embeddings"],
                            f"max_position_embeddings of the synthetic shape {model}")
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            return ModelContext(None, f"{model} has no config.json")
        return _from_config(config, f"{config}")
    if model.startswith((".", "/", "~")):
        return ModelContext(None, f"{model} is not a folder")
    cached = _hf_cached_config(model)
    if cached is None:
        return ModelContext(None, f"the config.json of the Hugging Face model {model!r} is not in the local "
                                  "Hugging Face cache (nothing is downloaded before the run)")
    return _from_config(Path(cached), f"config.json of {model} in the Hugging Face cache")


def _hf_cached_config(repo_id: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id huggingface_hub rejects (the backend says why when it loads)
        return None
    return found if isinstance(found, str) else None


def _from_config(path: Path, where: str) -> ModelContext:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return ModelContext(None, f"{where} is not readable JSON ({exc})")
    config = config.get("text_config") or config  # multimodal checkpoints keep the language model's inside
    found = {key: config[key] for key in LENGTH_KEYS if isinstance(config.get(key), int) and config[key] > 0}
    if not found:
        return ModelContext(None, f"{where} names no context length ({', '.join(LENGTH_KEYS[:3])}, ...)")
    key = min(found, key=found.get)
    tokens, text = found[key], f"{key} in {where}"
    rope = config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    factor = rope.get("factor") if isinstance(rope, dict) else None
    if isinstance(factor, (int, float)) and factor > 1 and kind not in UNSCALED_ROPE:
        tokens, text = int(tokens * factor), f"{text} x rope_scaling factor {factor}"
    return ModelContext(tokens, text)


def request_tokens(config: ExperimentConfig) -> tuple[int, int, str]:
    """(input, output, how they were counted) of the longest request this experiment sends."""
    workload = config.workload
    if workload.prompts == "synthetic":
        inputs, said = workload.input_tokens or 0, f"workload.input_tokens ({workload.input_tokens})"
    else:
        inputs = workload.max_input_tokens
        said = (f"workload.max_input_tokens ({inputs}; an upper bound: the {workload.prompts} prompts are truncated "
                "to it, and their real lengths are known only once the tokenizer loads)")
    outputs, out_said = workload.output_tokens, f"workload.output_tokens ({workload.output_tokens})"
    warmup = config.measurement.warmup.output_tokens
    if warmup is not None and warmup > outputs:
        outputs, out_said = warmup, f"measurement.warmup.output_tokens ({warmup})"
    return inputs, outputs, f"{said} + {out_said} = {inputs + outputs} tokens"


def check_fits(config: ExperimentConfig, context: ModelContext) -> Optional[str]:
    """Raise ConfigError when a request cannot fit; return a note when the model's context is unknown here."""
    inputs, outputs, said = request_tokens(config)
    total = inputs + outputs
    input_field = "workload.input_tokens" if config.workload.prompts == "synthetic" else "workload.max_input_tokens"
    max_model_len = config.vllm.max_model_len if config.backend == "vllm" and config.vllm else None
    if max_model_len is not None and context.tokens is not None and max_model_len > context.tokens:
        raise ConfigError(f"vllm.max_model_len ({max_model_len}) is beyond the model's context ({context.tokens}: "
                          f"{context.source}); vLLM refuses to start. Lower vllm.max_model_len to at most "
                          f"{context.tokens} or remove it")
    if max_model_len is not None and total > max_model_len:
        raise ConfigError(f"{said} do not fit vllm.max_model_len ({max_model_len}); vLLM would reject every "
                          f"request, after a full engine start. Lower {input_field} or workload.output_tokens, or "
                          f"raise vllm.max_model_len to at least {total}")
    if context.tokens is not None and total > context.tokens:
        raise ConfigError(f"{said} are beyond the model's context ({context.tokens}: {context.source}). Lower "
                          f"{input_field} or workload.output_tokens so they add up to at most {context.tokens}")
    if context.tokens is None:
        return f"could not check that {said} fit {config.model}'s context: {context.source}"
    return None
