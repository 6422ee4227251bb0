"""One check per TensorRT-LLM field: an LLM built with a non-default value, read back from `llm.args` (the
validated TorchLlmArgs / TrtLlmArgs the runtime really uses) or from the SamplingParams and outputs.

Runs wherever tensorrt_llm imports: on a GPU machine inside NVIDIA's image,
  docker run --rm --gpus all --ipc host --ulimit memlock=-1 --ulimit stack=67108864 -v $PWD:/w -w /w \\
      -e PYTHONPATH=/w nvcr.io/nvidia/tensorrt-llm/release:1.2.1 \\
      python3 -m pytest -p llem_bench.plugin benchmarks/tensorrt -k wiring
Compatible fields share one LLM (group "a"); when that LLM does not start, each field of the group is
retried alone, so one incompatible setting cannot hide the others. Not run on hardware yet (see README).
"""

import copy

import pytest

from llem_bench.backends.tensorrt import WIRING_COMMAND, tensorrt_llm_importable

if not tensorrt_llm_importable():
    pytest.skip(f"tensorrt_llm is not importable in this interpreter; the wiring checks run where it is, e.g. in "
                f"NVIDIA's container on a GPU machine: {WIRING_COMMAND}", allow_module_level=True)

import torch  # noqa: E402

from llem_bench.backends.tensorrt import TensorRTBackend, _plain  # noqa: E402
from llem_bench.config.introspect import backend_fields  # noqa: E402
from llem_bench.config.study import parse_study  # noqa: E402
from llem_bench.workload.prompts import prepare_workload  # noqa: E402

pytestmark = [pytest.mark.wiring, pytest.mark.tensorrt]

BASE = {"study": "wiring", "model": "synthetic:tiny", "backend": "tensorrt", "dtype": "bfloat16",
        "workload": {"num_prompts": 2, "max_input_tokens": 32, "output_tokens": 4},
        "backends": {"tensorrt": {"kv_cache_config": {"free_gpu_memory_fraction": 0.2}}}}
GPUS = torch.cuda.device_count()

# field -> (value, where llm.args keeps it); grouped into LLMs by GROUPS below
A = {
    "max_batch_size": (8, "max_batch_size"), "max_num_tokens": (1024, "max_num_tokens"),
    "max_seq_len": (512, "max_seq_len"), "max_input_len": (256, "max_input_len"),
    "enable_chunked_prefill": (True, "enable_chunked_prefill"),
    "kv_cache_config.max_tokens": (4096, "kv_cache_config.max_tokens"),
    "kv_cache_config.max_gpu_total_bytes": (2**30, "kv_cache_config.max_gpu_total_bytes"),
    "kv_cache_config.enable_block_reuse": (True, "kv_cache_config.enable_block_reuse"),
    "kv_cache_config.enable_partial_reuse": (False, "kv_cache_config.enable_partial_reuse"),
    "kv_cache_config.tokens_per_block": (64, "kv_cache_config.tokens_per_block"),
    "kv_cache_config.host_cache_size": (2**30, "kv_cache_config.host_cache_size"),
    "scheduler_config.capacity_scheduler_policy": ("MAX_UTILIZATION", "scheduler_config.capacity_scheduler_policy"),
    "scheduler_config.context_chunking_policy": ("EQUAL_PROGRESS", "scheduler_config.context_chunking_policy"),
    "scheduler_config.dynamic_batch_config": ({"enable_batch_size_tuning": True, "enable_max_num_tokens_tuning": False,
                                               "dynamic_batch_moving_average_window": 64},
                                              "scheduler_config.dynamic_batch_config.dynamic_batch_moving_average_window"),
    "cuda_graph_config.batch_sizes": ([1, 2, 4], "cuda_graph_config.batch_sizes"),
    "cuda_graph_config.max_batch_size": (4, "cuda_graph_config.max_batch_size"),
    "cuda_graph_config.enable_padding": (True, "cuda_graph_config.enable_padding"),
    "disable_overlap_scheduler": (True, "disable_overlap_scheduler"), "stream_interval": (2, "stream_interval"),
    "sampler_type": ("TorchSampler", "sampler_type"), "disable_flashinfer_sampling": (True, "disable_flashinfer_sampling"),
    "enable_autotuner": (False, "enable_autotuner"), "allreduce_strategy": ("NCCL", "allreduce_strategy"),
    "batch_wait_timeout_ms": (1.0, "batch_wait_timeout_ms"), "batch_wait_timeout_iters": (2, "batch_wait_timeout_iters"),
    "batch_wait_max_tokens_ratio": (0.5, "batch_wait_max_tokens_ratio"),
    "load_format": ("dummy", "load_format"),
}
GROUPS = {
    "a": (1, A),
    "kv_fp8": (1, {"kv_cache_config.dtype": ("fp8", "kv_cache_config.dtype")}),
    "fraction": (1, {"kv_cache_config.free_gpu_memory_fraction": (0.3, "kv_cache_config.free_gpu_memory_fraction")}),
    "no_graphs": (1, {"cuda_graph_config.enabled": (False, "cuda_graph_config")}),
    "attention": (1, {"attn_backend": ("FLASHINFER", "attn_backend")}),
    "compile": (1, {"torch_compile_config": ({"enable_fullgraph": False}, "torch_compile_config.enable_fullgraph")}),
    "moe": (1, {"moe_config": ({"backend": "TRITON"}, "moe_config.backend")}),
    "speculative": (1, {"speculative_config": ({"decoding_type": "NGram", "max_draft_len": 2,
                                                "max_matching_ngram_size": 2}, "speculative_config.max_draft_len")}),
    "engine": (1, {"runtime": ("tensorrt", None),
                   "build_config": ({"max_batch_size": 4}, "build_config.max_batch_size"),
                   "extended_runtime_perf_knob_config": ({"cuda_graph_mode": True},
                                                         "extended_runtime_perf_knob_config.cuda_graph_mode"),
                   "fast_build": (True, "fast_build"), "enable_build_cache": (True, "enable_build_cache")}),
    "engine_fp8": (1, {"runtime": ("tensorrt", None), "quant_config": ({"quant_algo": "FP8"}, "quant_config.quant_algo")}),
    "engine_static": (1, {"runtime": ("tensorrt", None), "batching_type": ("STATIC", "batching_type")}),
    "tp": (2, {"tensor_parallel_size": (2, "tensor_parallel_size")}),
    "pp": (2, {"pipeline_parallel_size": (2, "pipeline_parallel_size")}),
    "cp": (2, {"context_parallel_size": (2, "context_parallel_size")}),
}
# What llm.args holds where the value asked for is a dict or a switch (the key the path reads).
HELD_AS = {"scheduler_config.dynamic_batch_config": 64, "cuda_graph_config.enabled": None,
           "torch_compile_config": False, "moe_config": "TRITON", "speculative_config": 2, "build_config": 4,
           "extended_runtime_perf_knob_config": True, "quant_config": "FP8"}
NEEDS_MOE_MODEL = ("moe_expert_parallel_size", "moe_tensor_parallel_size", "enable_attention_dp")
SAMPLING = {"presence_penalty": 0.5, "frequency_penalty": 0.5, "min_p": 0.1}
GROUP_OF = {name: group for group, (_, fields) in GROUPS.items() for name in fields if name != "runtime"}
_LLMS: dict[str, TensorRTBackend] = {}
_FAILED: dict[str, str] = {}


def config_for(section: dict, **top):
    raw = copy.deepcopy(BASE)
    for key, value in top.items():
        raw.setdefault(key, {}).update(value)
    for key, value in section.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            raw["backends"]["tensorrt"].setdefault(outer, {})[inner] = value
        else:
            raw["backends"]["tensorrt"][key] = value
    return parse_study(raw)[1][0].config


def llm(key: str, section: dict) -> TensorRTBackend:
    """The LLM built with `section` (one at a time besides the default one: GPU memory)."""
    if key in _FAILED:
        raise RuntimeError(_FAILED[key])
    if key not in _LLMS:
        for other in [k for k in _LLMS if k != "default"]:
            _LLMS.pop(other).close()
        backend = TensorRTBackend()
        try:
            backend.load(config_for(section))
        except Exception as exc:
            backend.close()
            _FAILED[key] = f"LLM {key} ({section}) did not start: {type(exc).__name__}: {exc}"
            raise RuntimeError(_FAILED[key]) from exc
        _LLMS[key] = backend
    backend = _LLMS[key]
    backend.configure(config_for(section))
    return backend


def read(backend: TensorRTBackend, path: str):
    value = backend.llm.args
    for name in path.split("."):
        value = getattr(value, name, None)
    return _plain(value)


def teardown_module():
    for backend in _LLMS.values():
        backend.close()


FIELDS = [f.key.split(".", 1)[1] for f in backend_fields("tensorrt") if f.name != "passthrough"]


@pytest.mark.parametrize("field", FIELDS)
def test_field_reaches_tensorrt_llm(field):
    if field in SAMPLING:
        backend = llm("default", {})
        sampling = backend._sampling(4)
        config = config_for({field: SAMPLING[field]}, decoding={"preset": "sampling"})
        backend.configure(config)
        assert getattr(backend.sampling, field) == pytest.approx(SAMPLING[field]) != getattr(sampling, field)
        return
    if field in NEEDS_MOE_MODEL:
        pytest.skip("needs a mixture-of-experts model on 2+ GPUs; the synthetic shapes are dense")
    if field == "runtime":
        assert llm("engine", {"runtime": "tensorrt"}).llm.args.__class__.__name__ == "TrtLlmArgs"
        return
    group = GROUP_OF.get(field)
    assert group, f"{field} has no wiring check: add it to a group"
    gpus, values = GROUPS[group]
    if GPUS < gpus:
        pytest.skip(f"needs {gpus} GPUs, this machine has {GPUS}")
    section = {n: v for n, (v, _) in values.items()}
    value, path = values[field]
    try:
        backend = llm(group, section)
    except RuntimeError:  # alone, so another field of the group cannot hide this one
        alone = {field: value, **({"runtime": "tensorrt"} if "runtime" in values else {})}
        backend = llm(f"{group}:{field}", alone)
    expected = HELD_AS.get(field, value)
    assert read(backend, path) == expected, f"llm.args.{path} = {read(backend, path)!r}, asked {value!r}"


def test_output_length_is_exact_and_ignores_eos():
    backend = llm("default", {})
    config = config_for({})
    workload = prepare_workload(config.workload, backend.tokenizer)
    out = backend.llm.generate(backend._prompts(workload), backend.sampling, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in out] == [4, 4]
    assert {o.outputs[0].finish_reason for o in out} == {"length"}
    assert (backend.sampling.end_id, backend.sampling.pad_id, backend.sampling.min_tokens) == (-1, -1, 4)


def test_streaming_stamps_every_token():
    backend = llm("default", {})
    workload = prepare_workload(config_for({}).workload, backend.tokenizer)
    timings = backend.run_streaming_pass(workload)
    assert [len(t.token_times) for t in timings] == [4, 4]
    assert [sum(c) for c in backend.last_stream_chunks] == [4, 4]
    assert all(t.submitted <= t.token_times[0] <= t.end for t in timings)
