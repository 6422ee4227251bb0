"""Synthetic checkpoints: random-init models of real architectures and sizes, built offline.

Speed and energy depend on shapes, not on what the weights learned, so a randomly initialised
Llama-3.2-1B shape costs what the real one costs per token (outputs are gibberish, which is why
output length is forced). The checkpoint is saved as a normal Hugging Face folder (safetensors,
config, tokenizer) and loaded through the normal `from_pretrained` path by every backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SYNTHETIC_VERSION = 1
PREFIX = "synthetic:"

# Architecture and size of the real models; vocab sizes match so the LM head costs the same.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        arch="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=4096, max_position_embeddings=4096,
        tie_word_embeddings=True, rope_theta=10000.0, dtype="float32",
        about="~3M parameters, Llama architecture, for CPU runs and tests",
    ),
    "llama-1b": dict(
        arch="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=500000.0, dtype="bfloat16",
        about="Llama-3.2-1B shape (1.24B parameters)",
    ),
    "qwen-0.5b": dict(
        arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
        max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=1000000.0, dtype="bfloat16",
        about="Qwen2.5-0.5B shape (0.49B parameters)",
    ),
    "llama-8b": dict(
        arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        max_position_embeddings=8192, tie_word_embeddings=False, rope_theta=500000.0, dtype="bfloat16",
        about="Llama-3.1-8B shape (8.03B parameters)",
    ),
}

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
TRAINED_VOCAB = 2048  # real BPE merges learnt on the built-in prompts; the rest of the vocab is filler


def is_synthetic(model: str) -> bool:
    return model.startswith(PREFIX)


def shape_name(model: str) -> str:
    name = model[len(PREFIX):]
    if name not in SHAPES:
        from llem_bench.config.errors import ConfigError, did_you_mean

        raise ConfigError(f"model: unknown synthetic shape '{name}'.{did_you_mean(name, list(SHAPES))} "
                          f"Shapes: {', '.join(SHAPES)}.")
    return name


def cache_root() -> Path:
    root = os.environ.get("LLEM_CACHE_DIR") or Path.home() / ".cache" / "llem-bench"
    return Path(root) / "synthetic"


def checkpoint_dir(model: str) -> Path:
    return cache_root() / f"{shape_name(model)}-v{SYNTHETIC_VERSION}"


def ensure_checkpoint(model: str, device: str | None = None) -> Path:
    """Path of the synthetic checkpoint, building it once (under a lock, atomically) if needed."""
    target = checkpoint_dir(model)
    if (target / "llem_synthetic.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if (target / "llem_synthetic.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build_checkpoint(shape_name(model), tmp, device=device)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_checkpoint(shape: str, out: Path, device: str | None = None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    spec = dict(SHAPES[shape])
    arch, dtype_name, about = spec.pop("arch"), spec.pop("dtype"), spec.pop("about")
    print(f"llem-bench: building synthetic checkpoint '{shape}' ({about}) in {out} ...", file=sys.stderr, flush=True)
    tokenizer = build_tokenizer(spec["vocab_size"])
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(
        **spec, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        initializer_range=0.02, rms_norm_eps=1e-5, use_cache=True,
    )
    dtype = getattr(torch, dtype_name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(1234)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _check_not_degenerate(model)
    model.generation_config.update(do_sample=False, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "llem_synthetic.json").write_text(json.dumps({
        "shape": shape, "version": SYNTHETIC_VERSION, "parameters": n_params, "about": about,
        "dtype": dtype_name, "init": "transformers default init (normal, std=initializer_range=0.02), seed 1234",
    }, indent=2))
    print(f"llem-bench: synthetic '{shape}' ready: {n_params / 1e6:.1f}M parameters", file=sys.stderr, flush=True)


def _check_not_degenerate(model: Any) -> None:
    # GPU power depends on the data: an all-zero matrix would draw less than real weights.
    for name, param in model.named_parameters():
        if param.ndim >= 2 and float(param.detach().float().std()) < 1e-4:
            raise RuntimeError(f"synthetic init left {name} (near) constant; refusing to save it")


def build_tokenizer(vocab_size: int):
    """A byte-level BPE learnt on the built-in prompts, padded with filler tokens to the model's
    vocab size so every id the random model can emit decodes (vLLM detokenises outputs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from llem_bench.workload.prompts import builtin_texts

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(TRAINED_VOCAB, vocab_size), special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(builtin_texts(), trainer)
    data = json.loads(bpe.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    while next_id < vocab_size:
        vocab[f"<fill{next_id}>"] = next_id
        next_id += 1
    full = Tokenizer.from_str(json.dumps(data))
    full.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS[BOS_ID]} $A", special_tokens=[(SPECIAL_TOKENS[BOS_ID], BOS_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=full, bos_token=SPECIAL_TOKENS[BOS_ID], eos_token=SPECIAL_TOKENS[EOS_ID],
        pad_token=SPECIAL_TOKENS[PAD_ID], padding_side="left", model_max_length=8192,
    )
