"""TensorRTConfig validation and the study -> LLM(...) / SamplingParams(...) translation of the TensorRT-LLM
backend: pure logic, no TensorRT-LLM needed (the backend itself runs where tensorrt_llm imports:
benchmarks/tensorrt)."""

import pytest

from llem_bench.backends.tensorrt import HOW_TO_RUN, llm_kwargs, sampling_kwargs, unavailable_reason
from llem_bench.config import ConfigError
from llem_bench.config.coverage import ENERGY_RELEVANT, PINNED, coverage
from llem_bench.config.introspect import backend_fields
from llem_bench.config.study import parse_study
from llem_bench.isolation.docker import docker_command

IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"


def trt(section=None, **top):
    raw = {"study": "t", "backend": "tensorrt", "model": "synthetic:tiny", "backends": {"tensorrt": section or {}},
           **top}
    return parse_study(raw)[1][0].config


def test_defaults_pass_only_what_llem_bench_decides_and_turn_block_reuse_off():
    kwargs = llm_kwargs(trt(), "/ckpt")
    # every other argument is left to TensorRT-LLM (and read back from llm.args)
    assert kwargs == {"model": "/ckpt", "tokenizer": "/ckpt", "dtype": "auto", "skip_tokenizer_init": False,
                      "max_beam_width": 1, "kv_cache_config": {"enable_block_reuse": False}}


def test_study_fields_become_llm_kwargs_under_their_upstream_names():
    config = trt({"max_batch_size": 64, "max_num_tokens": 4096, "enable_chunked_prefill": True,
                  "tensor_parallel_size": 2, "attn_backend": "FLASHINFER", "disable_overlap_scheduler": True,
                  "stream_interval": 4, "torch_compile_config": {"enable_piecewise_cuda_graph": True},
                  "speculative_config": {"decoding_type": "NGram", "max_draft_len": 4},
                  "kv_cache_config": {"free_gpu_memory_fraction": 0.5, "enable_block_reuse": True, "dtype": "fp8"},
                  "scheduler_config": {"capacity_scheduler_policy": "MAX_UTILIZATION"},
                  "cuda_graph_config": {"batch_sizes": [1, 8, 64], "enable_padding": True},
                  "passthrough": {"print_iter_log": True}}, dtype="float16")
    kwargs = llm_kwargs(config, "/ckpt")
    assert kwargs["dtype"] == "float16" and kwargs["max_batch_size"] == 64 and kwargs["max_num_tokens"] == 4096
    assert kwargs["enable_chunked_prefill"] is True and kwargs["tensor_parallel_size"] == 2
    assert kwargs["attn_backend"] == "FLASHINFER" and kwargs["disable_overlap_scheduler"] is True
    assert kwargs["stream_interval"] == 4 and kwargs["torch_compile_config"] == {"enable_piecewise_cuda_graph": True}
    assert kwargs["speculative_config"] == {"decoding_type": "NGram", "max_draft_len": 4}
    assert kwargs["kv_cache_config"] == {"free_gpu_memory_fraction": 0.5, "enable_block_reuse": True, "dtype": "fp8"}
    assert kwargs["scheduler_config"] == {"capacity_scheduler_policy": "MAX_UTILIZATION"}
    assert kwargs["cuda_graph_config"] == {"batch_sizes": [1, 8, 64], "enable_padding": True}
    assert kwargs["print_iter_log"] is True
    # sampling-only fields and llem-bench's own switches are not LLM arguments
    assert not {"presence_penalty", "min_p", "runtime", "passthrough"} & set(kwargs)


def test_cuda_graphs_off_is_none_as_tensorrt_llm_spells_it():
    assert llm_kwargs(trt({"cuda_graph_config": {"enabled": False}}), "/m")["cuda_graph_config"] is None
    with pytest.raises(ConfigError, match="enabled: false turns CUDA graphs off; remove batch_sizes"):
        trt({"cuda_graph_config": {"enabled": False, "batch_sizes": [1]}})


def test_the_engine_runtime_takes_build_settings_and_refuses_pytorch_runtime_fields():
    kwargs = llm_kwargs(trt({"runtime": "tensorrt", "build_config": {"max_batch_size": 32, "plugin_config":
                                                                    {"multiple_profiles": True}},
                             "quant_config": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
                             "extended_runtime_perf_knob_config": {"cuda_graph_mode": True}}), "/m")
    assert kwargs["build_config"] == {"max_batch_size": 32, "plugin_config": {"multiple_profiles": True}}
    assert kwargs["quant_config"]["quant_algo"] == "FP8" and "cuda_graph_config" not in kwargs
    assert kwargs["extended_runtime_perf_knob_config"] == {"cuda_graph_mode": True}


@pytest.mark.parametrize("section, message", [
    ({"build_config": {"max_batch_size": 8}}, "build_config only exist on the TensorRT-engine LLM (TrtLlmArgs); set "
                                              "tensorrt.runtime: tensorrt"),
    ({"runtime": "tensorrt", "attn_backend": "TRTLLM"}, "attn_backend only exist on the PyTorch runtime"),
    ({"runtime": "tensorrt", "cuda_graph_config": {"enable_padding": True}}, "extended_runtime_perf_knob_config: "
                                                                            "{cuda_graph_mode: true}"),
    ({"runtime": "tensorrt", "kv_cache_config": {"dtype": "fp8"}}, "kv_cache_quant_algo: FP8"),
    ({"dtype": "float16"}, "dtype cannot be set in the tensorrt section: set the study's dtype"),
    ({"passthrough": {"max_batch_size": 4}}, "'max_batch_size' is a modelled field: set tensorrt.max_batch_size"),
    ({"passthrough": {"skip_tokenizer_init": True}}, "llem-bench tokenises once and passes token ids"),
    ({"max_batch_sise": 4}, "Did you mean 'max_batch_size'?"),
    ({"kv_cache_config": {"free_gpu_memory_fraction": 1.5}}, "backends.tensorrt.kv_cache_config.free_gpu_memory_fraction"),
    ({"scheduler_config": {"capacity_scheduler_policy": "GREEDY"}}, "'GUARANTEED_NO_EVICT', 'MAX_UTILIZATION'"),
    ({"torch_compile_config": {"fullgraph": True}}, "Did you mean 'enable_fullgraph'?"),
    ({"speculative_config": {"max_draft_len": 4}}, "speculative_config needs a decoding_type"),
    ({"cuda_graph_config": {"batch_sizes": [1, 8], "max_batch_size": 16}},
     "max_batch_size (16) must equal the largest batch_sizes entry (8)"),
])
def test_bad_settings_fail_before_any_model_loads_naming_the_field_and_the_fix(section, message):
    with pytest.raises(ConfigError) as info:
        trt(section)
    assert message in str(info.value), str(info.value)


def test_exact_output_length_as_trtllm_bench_forces_it():
    kwargs = sampling_kwargs(trt(), 128)
    # end_id -1: no EOS and no stop ids added from generation_config (ignore_eos alone would keep those)
    assert (kwargs["max_tokens"], kwargs["min_tokens"], kwargs["end_id"], kwargs["pad_id"]) == (128, 128, -1, -1)
    assert kwargs["temperature"] == 0.0 and "top_p" not in kwargs and "top_k" not in kwargs  # greedy
    assert (kwargs["n"], kwargs["detokenize"], kwargs["stop"], kwargs["stop_token_ids"]) == (1, False, None, None)
    eos = sampling_kwargs(trt(workload={"ignore_eos": False}), 16)
    assert "end_id" not in eos and "min_tokens" not in eos  # the model's EOS ends requests as it would in service


def test_sampling_preset_and_penalties_reach_sampling_params():
    config = trt({"presence_penalty": 0.5, "frequency_penalty": 0.25, "min_p": 0.1},
                 decoding={"preset": "sampling", "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                           "repetition_penalty": 1.1}, workload={"seed": 3})
    kwargs = sampling_kwargs(config, 8)
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["min_p"]) == (0.7, 0.9, 40, 0.1)
    assert (kwargs["presence_penalty"], kwargs["frequency_penalty"], kwargs["repetition_penalty"]) == (0.5, 0.25, 1.1)
    assert kwargs["seed"] == 3
    assert sampling_kwargs(trt(decoding={"preset": "sampling"}), 8)["top_k"] is None  # 0 = off: not passed as 0


def test_every_pinned_sampling_parameter_is_passed_explicitly():
    kwargs = sampling_kwargs(trt(), 4)
    pinned = [n.split(".", 1)[1] for n in PINNED["tensorrt"] if n.startswith("SamplingParams.")]
    assert pinned and all(name in kwargs for name in pinned), [n for n in pinned if n not in kwargs]
    llm = llm_kwargs(trt(), "/m")
    assert all(n.split(".", 1)[1] in llm for n in PINNED["tensorrt"] if n.startswith("LlmArgs."))


def test_load_settings_split_load_groups_and_sampling_settings_do_not():
    from llem_bench.backends import load_key

    base = load_key(trt())
    assert load_key(trt({"kv_cache_config": {"free_gpu_memory_fraction": 0.5}})) != base
    assert load_key(trt({"cuda_graph_config": {"enabled": False}})) != base
    assert load_key(trt({"max_batch_size": 8})) != base
    assert load_key(trt({"presence_penalty": 0.5})) == base


def test_where_it_cannot_run_the_reason_names_the_commands():
    assert "docker pull nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in HOW_TO_RUN
    assert "--llem-runner docker:nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in HOW_TO_RUN
    assert unavailable_reason("docker") is None and unavailable_reason("venv") is None
    reason = unavailable_reason("inprocess")  # tensorrt_llm is not installable here
    assert reason.startswith("tensorrt_llm is not importable in this interpreter") and HOW_TO_RUN in reason


def test_the_container_gets_the_flags_tensorrt_llm_needs(tmp_path):
    cmd = docker_command(IMAGE, tmp_path, tmp_path, tmp_path, "n", "8g", ipc_host=False, gpus="all", environ={},
                         workdir=tmp_path, backend="tensorrt")
    pairs = list(zip(cmd, cmd[1:]))
    assert "--ipc=host" in cmd and "--shm-size" not in cmd
    assert ("--ulimit", "memlock=-1") in pairs and ("--ulimit", "stack=67108864") in pairs
    other = docker_command(IMAGE, tmp_path, tmp_path, tmp_path, "n", "8g", ipc_host=False, gpus="all", environ={},
                           workdir=tmp_path, backend="vllm")
    assert "--ulimit" not in other and ("--shm-size", "8g") in list(zip(other, other[1:]))


def test_coverage_is_audited_against_the_recorded_1_2_1_names_and_says_so():
    cov = coverage("tensorrt")
    assert "TensorRT-LLM 1.2.1 (commit 376f7e1" in cov.source and "not every LlmArgs field" in cov.source
    assert "KvCacheConfig.enable_block_reuse" in cov.modelled and "TorchLlmArgs.cuda_graph_config" in cov.modelled
    # every energy-relevant name is a name of the recorded surface, and every typed field names one
    assert set(ENERGY_RELEVANT["tensorrt"]) <= set(cov.upstream)
    missing = [f.key for f in backend_fields("tensorrt") if f.upstream and f.name != "runtime"
               and f.upstream not in cov.upstream]
    assert missing == []


@pytest.mark.parametrize("field", ["torch_compile_config", "build_config", "quant_config",
                                   "extended_runtime_perf_knob_config"])
def test_unknown_keys_of_dict_fields_name_the_field_and_the_known_keys(field):
    from llem_bench.config.backends import TENSORRT_DICT_KEYS, TensorRTConfig

    known = TENSORRT_DICT_KEYS[field][0]
    runtime = "pytorch" if field == "torch_compile_config" else "tensorrt"  # the others are engine-build fields
    assert getattr(TensorRTConfig(runtime=runtime, **{field: {known: None}}), field) == {known: None}
    with pytest.raises(ValueError, match=f"{field}: unknown key '{known}x'.*Keys: {known}"):
        TensorRTConfig(runtime=runtime, **{field: {known + "x": 1}})
