"""One check per PyTorch-backend field: set a non-default value, read back from the live
transformers objects that it took effect, against the default built the same way."""

import copy

import pytest
import torch

from llem_bench.backends.base import load_key
from llem_bench.backends.pytorch import PyTorchBackend
from llem_bench.config.introspect import backend_fields
from llem_bench.config.study import parse_study
from llem_bench.workload.prompts import prepare_workload

pytestmark = [pytest.mark.wiring, pytest.mark.pytorch]

BASE = {"study": "wiring", "model": "synthetic:tiny", "backend": "pytorch", "dtype": "float32",
        "workload": {"num_prompts": 4, "max_input_tokens": 16, "output_tokens": 6}}
_LOADED: dict[str, PyTorchBackend] = {}


def backend_for(**overrides) -> tuple[PyTorchBackend, object]:
    raw = copy.deepcopy(BASE)
    for dotted, value in overrides.items():
        if dotted.startswith("pytorch."):
            dotted = "backends." + dotted  # a study sets backend fields under backends:
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config = parse_study(raw)[1][0].config
    key = load_key(config)
    if key not in _LOADED:
        backend = PyTorchBackend()
        backend.load(config)
        _LOADED[key] = backend
    backend = _LOADED[key]
    backend.configure(config)
    return backend, config


def batch_widths(backend, config) -> list[int]:
    """Behavioural probe: the batch sizes generate() really received."""
    widths, original = [], backend.model.generate

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    backend.model.generate = spy
    try:
        out = backend.run_pass(prepare_workload(config.workload, backend.tokenizer))
    finally:
        backend.model.generate = original
    assert out.output_tokens == [config.workload.output_tokens] * config.workload.num_prompts
    return widths


def gen(backend):
    return backend.model.generation_config


CHECKS = {
    "pytorch.batch_size": lambda b, c: batch_widths(b, c),
    "pytorch.device_map": lambda b, c: getattr(b.model, "hf_device_map", None),
    "pytorch.attn_implementation": lambda b, c: b.model.config._attn_implementation,
    "pytorch.torch_compile": lambda b, c: type(b.model.forward).__name__ + ":" + str(
        hasattr(b.model.forward, "_torchdynamo_orig_callable") or "Compiled" in type(b.model.forward).__name__
        or getattr(b.model.forward, "__wrapped__", None) is not None),
    "pytorch.use_cache": lambda b, c: (gen(b).use_cache, batch_widths(b, c)),
    "pytorch.cache_implementation": lambda b, c: (gen(b).cache_implementation, batch_widths(b, c)),
    "pytorch.num_beams": lambda b, c: (gen(b).num_beams, batch_widths(b, c)),
    "workload.output_tokens": lambda b, c: (gen(b).max_new_tokens, batch_widths(b, c)),
    "workload.ignore_eos": lambda b, c: gen(b).min_new_tokens,
    "decoding.preset": lambda b, c: gen(b).do_sample,
    "decoding.repetition_penalty": lambda b, c: gen(b).repetition_penalty,
    "dtype": lambda b, c: str(next(b.model.parameters()).dtype),
}
SAMPLING = {"decoding.temperature": "temperature", "decoding.top_p": "top_p", "decoding.top_k": "top_k"}
CPU_SKIPS = {
    "pytorch.device": "on a CPU-only machine 'auto' already resolves to cpu; the change to cuda is only visible on a GPU",
    "pytorch.compile_mode": "torch.compile keeps no public record of its mode; the value is passed to torch.compile",
    "pytorch.device_map": "on one CPU every map places the model where the default does, and transformers records "
                          "hf_device_map only for multi-device maps: check on a multi-GPU machine",
}


def cases():
    out = [("dtype", "bfloat16")]
    for f in backend_fields("pytorch"):
        out.append((f.key, f.test_value))
    for f in backend_fields("common"):
        if f.key in CHECKS or f.key in SAMPLING:
            out.append((f.key, f.test_value))
    return [pytest.param(key, value, id=key) for key, value in out if key != "pytorch.passthrough"]


@pytest.mark.parametrize("key, value", cases())
def test_field_reaches_transformers(key, value):
    if key in CPU_SKIPS:
        pytest.skip(CPU_SKIPS[key])
    extra = {"decoding.preset": "sampling"} if key in SAMPLING else {}
    default_backend, default_config = backend_for(**extra)
    if key in SAMPLING:
        before = getattr(gen(default_backend), SAMPLING[key])
        changed_backend, _ = backend_for(**extra, **{key: value})
        after = getattr(gen(changed_backend), SAMPLING[key])
        assert after == value and after != before
        return
    probe = CHECKS[key]
    before = probe(default_backend, default_config)
    changed_backend, changed_config = backend_for(**{key: value})
    after = probe(changed_backend, changed_config)
    assert after != before, f"{key}={value!r} did not change what transformers used ({before!r})"


def test_passthrough_reaches_generate():
    backend, _ = backend_for(**{"pytorch.passthrough": {"generate": {"no_repeat_ngram_size": 3}}})
    assert gen(backend).no_repeat_ngram_size == 3
    default, _ = backend_for()
    assert gen(default).no_repeat_ngram_size != 3
