"""One check per PyTorch-backend field (plus the shared fields generate() uses): build the real
backend on synthetic:tiny with a non-default value, read back from the live transformers objects
what was used, and compare with a default-built backend read the same way (defaults are read,
not hard-coded). Runs without --study: `pytest benchmarks -k wiring`."""

import copy
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CompileConfig

from llem_bench.backends.base import load_key
from llem_bench.backends.pytorch import PyTorchBackend
from llem_bench.config.introspect import backend_fields
from llem_bench.config.study import parse_study
from llem_bench.workload.prompts import prepare_workload

pytestmark = [pytest.mark.wiring, pytest.mark.pytorch]

BASE = {"study": "wiring", "model": "synthetic:tiny", "backend": "pytorch", "dtype": "float32",
        "workload": {"num_prompts": 4, "max_input_tokens": 16, "output_tokens": 6}}
COMMON = ["dtype", "workload.output_tokens", "workload.ignore_eos", "decoding.preset", "decoding.temperature",
          "decoding.top_p", "decoding.top_k", "decoding.repetition_penalty"]
# Settings a field only acts with; both sides of the comparison use them.
SAMPLING = {"decoding.preset": "sampling"}
ASSISTED = {"pytorch.assistant_model": "synthetic:tiny"}
SETUP = {
    "decoding.temperature": SAMPLING, "decoding.top_p": SAMPLING, "decoding.top_k": SAMPLING, "pytorch.min_p": SAMPLING,
    "pytorch.max_memory": {"pytorch.device_map": "auto"},
    "pytorch.cache_config": {"pytorch.cache_implementation": "quantized"},
    "pytorch.max_cache_len": {"pytorch.cache_implementation": "static"},
    "pytorch.compile_mode": {"pytorch.torch_compile": True},
    # confidence 0: the assistant drafts num_assistant_tokens every step (random weights are never confident)
    "pytorch.num_assistant_tokens": {**ASSISTED, "pytorch.assistant_confidence_threshold": 0.0},
    "pytorch.assistant_confidence_threshold": ASSISTED,
}
# Generation attribute each shared field lands on.
GENERATION_ATTR = {"decoding.preset": "do_sample", "decoding.temperature": "temperature", "decoding.top_p": "top_p",
                   "decoding.top_k": "top_k", "decoding.repetition_penalty": "repetition_penalty"}
CPU_SKIPS: dict[str, str] = {}
# Checked under a real torchrun launch of 2 ranks (CPU ranks on a CPU host, GPUs 0 and 1 on a GPU host).
TORCHRUN = {"pytorch.tp_plan", "pytorch.tp_size"}
TP_PROBE = Path(__file__).with_name("tp_probe.py")
# On a GPU the default ('auto') places the model on cuda, so 'cpu' is a value that differs; on a CPU-only
# machine nothing does.
NEEDS_GPU = {
    "pytorch.device": "on a CPU-only machine 'auto' already resolves to cpu, so no value differs from the default "
                      "here; checked on a GPU",
    "pytorch.device_map": "on one CPU every map places the model where the default does; checked on a GPU",
}
# Needs optimum-quanto (the `test` extra): the CPU-capable quantization backend of transformers.
NEEDS_QUANTO = {"pytorch.quantization_config", "pytorch.cache_config"}

# Where a GPU is there, a CPU cap changes nothing (device_map auto fits the tiny model on the GPU): cap the GPU.
GPU_VALUES = {"pytorch.max_memory": {0: "8MB", "cpu": "1GB"}}

_LOADED: dict[str, PyTorchBackend] = {}


def installed(module: str) -> bool:
    try:  # find_spec of "a.b" raises when "a" itself is missing (optimum is not on every machine)
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def study_for(**overrides) -> dict:
    raw = copy.deepcopy(BASE)
    for dotted, value in overrides.items():
        if dotted.startswith("pytorch."):
            dotted = "backends." + dotted  # a study sets backend fields under backends:
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def backend_for(**overrides) -> tuple[PyTorchBackend, object]:
    """A loaded and configured backend; one load per distinct set of load settings (module cache)."""
    config = parse_study(study_for(**overrides))[1][0].config
    key = load_key(config)
    if key not in _LOADED:
        backend = PyTorchBackend()
        backend.load(config)
        _LOADED[key] = backend
    backend = _LOADED[key]
    backend.configure(config)
    return backend, config


@pytest.fixture(scope="module", autouse=True)
def close_backends():
    yield
    for backend in _LOADED.values():
        backend.close()
    _LOADED.clear()


def gen(backend):
    """The GenerationConfig generate() really uses (the backend installs it on the model)."""
    assert backend.model.generation_config is backend.generation_config
    return backend.model.generation_config


def run_widths(backend, config) -> tuple[list[int], list[int]]:
    """Behavioural probe: the batch widths generate() received, and the output tokens per request."""
    widths, original = [], backend.model.generate

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    backend.model.generate = spy
    try:
        out = backend.run_pass(prepare_workload(config.workload, backend.tokenizer))
    finally:
        backend.model.generate = original
    return widths, out.output_tokens


def stops_at_eos(backend, config) -> int:
    """Behavioural probe: make the token the model emits first the EOS; returns the generated length.
    With ignore_eos (min_new_tokens = output_tokens) the EOS cannot stop generation."""
    ids = prepare_workload(config.workload, backend.tokenizer).prompt_token_ids[0]
    input_ids = torch.tensor([ids], device=backend.model.device)
    probe = copy.deepcopy(backend.generation_config)
    probe.max_new_tokens, probe.min_new_tokens = 1, 0
    with torch.inference_mode():
        first = int(backend.model.generate(input_ids=input_ids, generation_config=probe)[0, -1])
        forced = copy.deepcopy(backend.generation_config)
        forced.eos_token_id = first
        out = backend.model.generate(input_ids=input_ids, generation_config=forced)
    return out.shape[1] - input_ids.shape[1]


def compile_options(backend) -> dict:
    """The inductor options torch.compile was configured with (a mode is a preset of them, e.g.
    reduce-overhead = {'triton.cudagraphs': True}), read from the compiled forward's dynamo backend."""
    wrapper = inspect.getclosurevars(backend.model.forward).nonlocals["callback"]
    while not hasattr(wrapper, "get_compiler_config"):
        wrapper = wrapper._torchdynamo_orig_backend
    return wrapper.get_compiler_config()


def is_compiled(backend) -> bool:
    return hasattr(backend.model.forward, "_torchdynamo_orig_callable") or \
        "OptimizedModule" in type(backend.model.forward).__name__


def held_quantization(backend) -> tuple:
    """What from_pretrained applied: the model's quantization config and the class of a linear weight."""
    qc = getattr(backend.model.config, "quantization_config", None)
    weight = backend.model.model.layers[0].mlp.down_proj.weight
    return getattr(qc, "quant_method", None), getattr(qc, "weights", None), type(weight).__name__


def one_generate(backend, config, **changes):
    """generate() on the first prompt with the backend's GenerationConfig (plus `changes`); returns its output."""
    ids = prepare_workload(config.workload, backend.tokenizer).prompt_token_ids[0]
    probe = copy.deepcopy(backend.generation_config)
    for name, value in changes.items():
        setattr(probe, name, value)
    with torch.inference_mode():
        return backend.model.generate(input_ids=torch.tensor([ids], device=backend.model.device),
                                      generation_config=probe, assistant_model=backend.assistant)


def kv_cache_held(backend, config) -> tuple:
    """Behavioural probe: the cache generate() really built (class, static length, quantized bits)."""
    layer = one_generate(backend, config, return_dict_in_generate=True).past_key_values.layers[0]
    return type(layer).__name__, getattr(layer, "max_cache_len", None), getattr(layer, "nbits", None)


def forward_calls(backend, config, model_attr: str = "model") -> int:
    """Behavioural probe: forward passes of the model (or the assistant) during one generate()."""
    model = getattr(backend, model_attr)
    if model is None:
        return 0
    calls, original = [], model.forward
    model.forward = lambda *args, **kwargs: (calls.append(1), original(*args, **kwargs))[1]
    try:
        one_generate(backend, config)
    finally:
        model.forward = original
    return len(calls)


CHECKS = {
    "dtype": lambda b, c: str(b.model.dtype),
    "pytorch.batch_size": lambda b, c: run_widths(b, c)[0],
    "pytorch.attn_implementation": lambda b, c: b.model.config._attn_implementation,
    "pytorch.torch_compile": lambda b, c: is_compiled(b),
    "pytorch.compile_mode": lambda b, c: compile_options(b),
    "pytorch.device": lambda b, c: str(b.model.device),
    "pytorch.device_map": lambda b, c: (str(b.model.device), getattr(b.model, "hf_device_map", None)),
    # use_cache off must still produce every requested token (it only recomputes the prefix)
    "pytorch.use_cache": lambda b, c: (gen(b).use_cache, run_widths(b, c)[1]),
    "pytorch.cache_implementation": lambda b, c: (gen(b).cache_implementation, run_widths(b, c)[1]),
    "pytorch.num_beams": lambda b, c: (gen(b).num_beams, run_widths(b, c)[1]),
    "pytorch.prompt_lookup_num_tokens": lambda b, c: (gen(b).prompt_lookup_num_tokens, run_widths(b, c)[1]),
    "workload.output_tokens": lambda b, c: (gen(b).max_new_tokens, run_widths(b, c)[1]),
    "workload.ignore_eos": lambda b, c: (gen(b).min_new_tokens, stops_at_eos(b, c)),
    "pytorch.quantization_config": lambda b, c: (held_quantization(b), run_widths(b, c)[1]),
    # the layers that do not fit the cap go to disk; generation still produces every token
    "pytorch.max_memory": lambda b, c: (b.model.hf_device_map if hasattr(b.model, "hf_device_map") else None,
                                        run_widths(b, c)[1]),
    # read-back only: the synthetic shapes are dense, so no expert kernel runs either way
    "pytorch.experts_implementation": lambda b, c: b.model.config._experts_implementation,
    "pytorch.assistant_model": lambda b, c: (forward_calls(b, c, "assistant"), run_widths(b, c)[1]),
}
# Behavioural probes for GenerationConfig fields, next to their read-back: what generate() did.
BEHAVIOUR = {
    "pytorch.cache_config": kv_cache_held,
    "pytorch.max_cache_len": kv_cache_held,
    "pytorch.prefill_chunk_size": forward_calls,  # one forward per prompt chunk
    "pytorch.num_assistant_tokens": lambda b, c: forward_calls(b, c, "assistant"),
    "pytorch.assistant_confidence_threshold": lambda b, c: forward_calls(b, c, "assistant"),
}
# How transformers holds a value when it is not the value itself.
HELD_AS = {"decoding.preset": lambda value: value == "sampling",
           "pytorch.compile_config": lambda value: CompileConfig(**value)}


def cases():
    keys = ["dtype"] + [f.key for f in backend_fields("pytorch") if f.name != "passthrough"] + COMMON[1:]
    values = {f.key: f.test_value for f in backend_fields("pytorch") + backend_fields("common")}
    values["dtype"] = "bfloat16"
    if torch.cuda.is_available():
        values.update(GPU_VALUES)
    return [pytest.param(key, values[key], id=key) for key in dict.fromkeys(keys)]


def probe_for(key: str):
    if key in CHECKS:
        return CHECKS[key]
    field = next((f for f in backend_fields("pytorch") + backend_fields("common") if f.key == key), None)
    upstream = (field.upstream or "") if field else ""
    attr = GENERATION_ATTR.get(key) or (upstream.split(".", 1)[1] if upstream.startswith("GenerationConfig.") else None)
    if attr is None:
        return None
    return lambda b, c: getattr(gen(b), attr)


@pytest.mark.parametrize("key, value", cases())
def test_field_reaches_transformers(key, value):
    if key in CPU_SKIPS:
        pytest.skip(CPU_SKIPS[key])
    if key in TORCHRUN:
        return check_tensor_parallel(key, value)
    if key in NEEDS_GPU and not torch.cuda.is_available():
        pytest.skip(NEEDS_GPU[key])
    if key in NEEDS_QUANTO and not installed("optimum.quanto"):
        pytest.skip("optimum-quanto is not installed (pip install -e '.[test]')")
    probe = probe_for(key)
    assert probe is not None, f"{key} has no wiring check: add a read-back to CHECKS in {__file__}"
    behaviour = BEHAVIOUR.get(key, lambda b, c: None)

    def observe(**settings):  # probe right away: backends that share a load are reconfigured by the next call
        backend, config = backend_for(**settings)
        return probe(backend, config), behaviour(backend, config), config

    extra = SETUP.get(key, {})
    before, did_before, default_config = observe(**extra)
    after, did_after, _ = observe(**{**extra, key: value})
    assert after != before, f"{key}={value!r} did not change what transformers used ({before!r})"
    if key not in CHECKS:  # a plain GenerationConfig attribute: it must hold the value asked for
        expected = HELD_AS.get(key, lambda v: v)(value)
        assert after == expected, f"{key}={value!r} reached generate() as {after!r}"
    if key in BEHAVIOUR:
        assert did_after != did_before, f"{key}={value!r} did not change what generate() did ({did_before!r})"
    if key == "workload.ignore_eos":
        assert after[1] == 1 and before[1] == default_config.workload.output_tokens


def torchrun_probe(ranks: int = 2, **settings) -> dict:
    """Rank 0's report of tp_probe.py under `torchrun --nproc-per-node ranks`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                           str(TP_PROBE), json.dumps(study_for(**settings))],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("WIRING ")]
    assert lines, f"the torchrun probe said nothing (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[0][len("WIRING "):])


def check_tensor_parallel(key, value):
    """tp_plan: 2 ranks each hold a shard (not the whole model) and generate what the plain model does.
    tp_size: the value reaches transformers' mesh: tp_size 3 on a 2-rank launch is refused by transformers."""
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        pytest.skip("tensor parallelism on CUDA needs 2+ GPUs (a CPU-only host runs 2 CPU ranks)")
    plain, config = backend_for()
    plain_tokens = run_widths(plain, config)[1]
    size = value if key == "pytorch.tp_size" else 2
    tp = torchrun_probe(**{"pytorch.tp_plan": "auto", "pytorch.tp_size": size})
    assert "error" not in tp, tp
    assert (tp["world_size"], tp["tp_size"], tp["sharded"]) == (2, 2, True), tp
    assert tp["tokens"] == plain_tokens
    if key == "pytorch.tp_size":
        refused = torchrun_probe(**{"pytorch.tp_plan": "auto", "pytorch.tp_size": 3})
        assert "requires 3 processes, but world_size is 2" in refused.get("error", ""), refused


def test_passthrough_reaches_generate_and_from_pretrained():
    backend, _ = backend_for(**{"pytorch.passthrough": {"generate": {"no_repeat_ngram_size": 3},
                                                        "from_pretrained": {"attn_implementation": "eager"}}})
    default, _ = backend_for()
    assert gen(backend).no_repeat_ngram_size == 3 != gen(default).no_repeat_ngram_size
    assert backend.model.config._attn_implementation == "eager" != default.model.config._attn_implementation
