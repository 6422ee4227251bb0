"""The synthetic checkpoint is a real Hugging Face checkpoint: built offline, loaded by from_pretrained."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from llem_bench.config import ConfigError
from llem_bench.workload.synthetic import SHAPES, build_tokenizer, checkpoint_dir, shape_name


def test_tiny_checkpoint_is_a_normal_hf_folder(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "llem_synthetic.json"} <= names
    meta = json.loads((tiny_checkpoint / "llem_synthetic.json").read_text())
    assert meta["shape"] == "tiny" and 1e6 < meta["parameters"] < 1e7


def test_tiny_loads_through_from_pretrained_with_non_degenerate_weights(tiny_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    matrices = [p for p in model.parameters() if p.ndim == 2]
    assert matrices and all(0.01 < float(p.std()) < 0.05 for p in matrices)  # init scale 0.02, never zeros
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert len(tokenizer) == model.config.vocab_size
    ids = tokenizer("Measure the energy of every token.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) > 3
    # every id the model can emit decodes (vLLM detokenises outputs)
    assert isinstance(tokenizer.decode(list(range(model.config.vocab_size - 5, model.config.vocab_size))), str)


def test_checkpoint_folder_is_keyed_by_shape_and_version(monkeypatch, tmp_path):
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path))
    assert checkpoint_dir("synthetic:llama-1b") == tmp_path / "synthetic" / "llama-1b-v1"


@pytest.mark.parametrize("shape, params, hidden, layers, vocab", [
    ("llama-1b", 1.236e9, 2048, 16, 128256),
    ("qwen-0.5b", 0.494e9, 896, 24, 151936),
    ("llama-8b", 8.03e9, 4096, 32, 128256),
])
def test_real_shapes_match_the_published_architectures(shape, params, hidden, layers, vocab):
    """Count parameters on the meta device (no memory) and compare with the published sizes."""
    from transformers import LlamaConfig, Qwen2Config

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch"); spec.pop("dtype"); spec.pop("about")
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch](**spec)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(params, rel=0.01)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (hidden, layers, vocab)


def test_unknown_shape_suggests_the_close_one():
    with pytest.raises(ConfigError, match="Did you mean 'llama-1b'"):
        shape_name("synthetic:llama-1bb")


def test_tokenizer_covers_a_large_vocab():
    tokenizer = build_tokenizer(20000)
    assert len(tokenizer) == 20000
    assert tokenizer.decode([19999]) == "<fill19999>"
