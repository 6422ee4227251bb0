"""TensorRT-LLM 1.2.x backend: `LLM(...)` (the PyTorch runtime, or the TensorRT-engine LLM) with token-id
prompts, an exact output length, KV block reuse off unless the study asks for it, and the effective
settings read back from `llm.args`. What each call does is taken from TensorRT-LLM 1.2.1's source as
summarised in shared/research/tensorrt-llm-api.md.

tensorrt_llm installs from NVIDIA's own index or comes in NVIDIA's image
(nvcr.io/nvidia/tensorrt-llm/release:1.2.1), so it usually runs through the docker: or venv: runner; this
module imports tensorrt_llm only inside methods. The translation from a study to LLM kwargs and
SamplingParams kwargs is pure (`llm_kwargs`, `sampling_kwargs`) and unit-tested without TensorRT-LLM.

Multi-GPU runs spawn MPI workers that re-import the main module: the worker that builds the LLM is
`python -m llem_bench.isolation.worker`, whose work only starts under `if __name__ == "__main__"`.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import sys
import time
from typing import Any, Optional

from llem_bench.backends.base import PassOutput
from llem_bench.config.backends import TensorRTConfig
from llem_bench.config.base import is_load_field
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.harness.latency import RequestTiming
from llem_bench.workload.prompts import Workload
from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic

IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
# Where TensorRT-LLM runs when this interpreter does not have it: the exact commands.
HOW_TO_RUN = (f"run it in NVIDIA's container: 'docker pull {IMAGE}' then 'pytest benchmarks -k tensorrt --study "
              f"<study.yaml> --llem-runner docker:{IMAGE}' (needs the NVIDIA Container Toolkit), or from an "
              "interpreter where tensorrt_llm is installed: '--llem-runner venv:/path/to/bin/python'")
WIRING_COMMAND = (f"docker run --rm --gpus all --ipc host --ulimit memlock=-1 --ulimit stack=67108864 -v $PWD:/w "
                  f"-w /w -e PYTHONPATH=/w {IMAGE} python3 -m pytest -p llem_bench.plugin benchmarks/tensorrt -k wiring")
NESTED = ("kv_cache_config", "scheduler_config", "cuda_graph_config")
NOT_LLM_ARGS = ("runtime", "passthrough") + NESTED


def tensorrt_llm_importable() -> bool:
    """The real package is there (PyPI's 1.2.1 is a stub without it). Looks for its llmapi folder instead
    of importing: importing tensorrt_llm initialises MPI and CUDA."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("tensorrt_llm")
    except (ImportError, ValueError):
        return False
    return spec is not None and any((Path(p) / "llmapi").is_dir() for p in spec.submodule_search_locations or ())


def unavailable_reason(runner_kind: Optional[str]) -> Optional[str]:
    """Why tensorrt experiments cannot run with this runner here; None when they can (another interpreter
    or a container: its own check happens there)."""
    if runner_kind in ("docker", "venv") or tensorrt_llm_importable():
        return None
    return f"tensorrt_llm is not importable in this interpreter and no docker: or venv: runner is set; {HOW_TO_RUN}"


def llm_kwargs(config: ExperimentConfig, model_path: str) -> dict[str, Any]:
    """LLM(...) kwargs: every set load field under its upstream name, nested configs as dicts (converted to
    TensorRT-LLM's classes at load, as its own --config YAML is), passthrough last."""
    section: TensorRTConfig = config.tensorrt
    kwargs: dict[str, Any] = {"model": model_path, "tokenizer": model_path, "dtype": config.dtype,
                              "skip_tokenizer_init": False, "max_beam_width": 1}  # never beam search
    for name in type(section).model_fields:
        value = getattr(section, name)
        if name not in NOT_LLM_ARGS and is_load_field(type(section), name) and value is not None:
            kwargs[name] = value
    # enable_block_reuse is always passed: llem-bench's default (off) differs from TensorRT-LLM's (on)
    kwargs["kv_cache_config"] = section.kv_cache_config.model_dump(exclude_none=True)
    scheduler = section.scheduler_config.model_dump(exclude_none=True)
    if scheduler:
        kwargs["scheduler_config"] = scheduler
    graphs = section.cuda_graph_config
    if section.runtime == "pytorch" and graphs.model_fields_set:
        kwargs["cuda_graph_config"] = (graphs.model_dump(exclude_none=True, exclude={"enabled"})
                                       if graphs.enabled else None)
    kwargs.update(section.passthrough)
    return kwargs


def sampling_kwargs(config: ExperimentConfig, tokens: int) -> dict[str, Any]:
    """SamplingParams(...) kwargs. With workload.ignore_eos the length is exact as trtllm-bench makes it:
    end_id=-1 and pad_id=-1 (no EOS, and no extra stop ids taken from the model's generation_config, which
    ignore_eos alone would still add on multi-EOS models such as Llama 3) plus min_tokens."""
    decoding, section, workload = config.decoding, config.tensorrt, config.workload
    kwargs: dict[str, Any] = dict(
        max_tokens=tokens, seed=workload.seed, repetition_penalty=decoding.repetition_penalty,
        presence_penalty=section.presence_penalty, frequency_penalty=section.frequency_penalty,
        # pinned: the same work on every run and backend (one sequence, no early stop, nothing extra kept)
        n=1, best_of=None, use_beam_search=False, ignore_eos=False, detokenize=False, stop=None,
        stop_token_ids=None, logprobs=None, return_context_logits=False, return_generation_logits=False,
    )
    if workload.ignore_eos:
        kwargs.update(end_id=-1, pad_id=-1, min_tokens=tokens)
    if decoding.preset == "sampling":
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or None,
                      min_p=section.min_p or None)
    else:
        kwargs.update(temperature=0.0)  # greedy (params_imply_greedy_decoding)
    return kwargs


class TensorRTBackend:
    name = "tensorrt"
    streaming_method = ("every request goes through generate_async(streaming=True) at once; each chunk the async "
                        "iterator yields is stamped on arrival (time.perf_counter) and its tokens "
                        "(len(token_ids_diff), more than one with stream_interval > 1 or speculative decoding) "
                        "share that stamp; the overlap scheduler delays each chunk by about one iteration")

    def __init__(self) -> None:
        self.llm: Any = None
        self.tokenizer: Any = None
        self.config: Optional[ExperimentConfig] = None
        self.sampling: Any = None
        self.kwargs: dict[str, Any] = {}
        self.last_stream_chunks: list[list[int]] = []  # tokens per streamed chunk, per request

    def load(self, config: ExperimentConfig) -> None:
        from tensorrt_llm.llmapi.llm_args import update_llm_args_with_extra_dict
        from transformers import AutoTokenizer

        if config.tensorrt.runtime == "tensorrt":
            from tensorrt_llm._tensorrt_engine import LLM
        else:
            from tensorrt_llm import LLM
        path = str(ensure_checkpoint(config.model)) if is_synthetic(config.model) else config.model
        self.kwargs = llm_kwargs(config, path)
        print(f"llem-bench: starting TensorRT-LLM ({config.tensorrt.runtime} runtime) for {config.model}: "
              f"{self.kwargs}", file=sys.stderr, flush=True)
        # the nested dicts become KvCacheConfig, BuildConfig, ... as trtllm-serve's --config YAML does
        nested = {k: v for k, v in self.kwargs.items() if isinstance(v, dict)}
        self.llm = LLM(**update_llm_args_with_extra_dict(dict(self.kwargs), nested))
        # the Hugging Face tokenizer TensorRT-LLM wraps (the workload needs its full interface)
        self.tokenizer = getattr(self.llm.tokenizer, "tokenizer", None) or AutoTokenizer.from_pretrained(path)

    def configure(self, config: ExperimentConfig) -> None:
        self.config = config
        self.sampling = self._sampling(config.workload.output_tokens)

    def _sampling(self, tokens: int) -> Any:
        from tensorrt_llm import SamplingParams

        return SamplingParams(**sampling_kwargs(self.config, tokens))

    def _prompts(self, workload: Workload) -> list[dict]:
        return [{"prompt_token_ids": list(ids)} for ids in workload.prompt_token_ids]

    def run_pass(self, workload: Workload) -> PassOutput:
        sampling = self.sampling
        if workload.output_tokens != sampling.max_tokens:  # e.g. a short warmup
            sampling = self._sampling(workload.output_tokens)
        return self._generate(workload, sampling)

    def run_prefill_pass(self, workload: Workload) -> PassOutput:
        return self._generate(workload, self._sampling(1))

    def _generate(self, workload: Workload, sampling: Any) -> PassOutput:
        # one call with every prompt: the runtime batches them in flight (a call per prompt would serialise)
        outputs = self.llm.generate(self._prompts(workload), sampling, use_tqdm=False)
        return PassOutput(output_tokens=[len(o.outputs[0].token_ids) for o in outputs])

    def run_streaming_pass(self, workload: Workload) -> list[RequestTiming]:
        sampling = self._sampling(workload.output_tokens)
        self.last_stream_chunks = []

        async def one(prompt: dict, timing: RequestTiming, chunks: list[int]) -> None:
            timing.submitted = time.perf_counter()
            async for output in self.llm.generate_async(prompt, sampling, streaming=True):
                now = time.perf_counter()
                count = len(output.outputs[0].token_ids_diff)
                chunks.append(count)
                timing.token_times.extend([now] * count)
            timing.end = time.perf_counter()

        async def every() -> list[RequestTiming]:
            start = time.perf_counter()
            timings = [RequestTiming(pass_start=start, submitted=start) for _ in workload.prompt_token_ids]
            self.last_stream_chunks = [[] for _ in timings]
            await asyncio.gather(*(one(p, t, c) for p, t, c in
                                   zip(self._prompts(workload), timings, self.last_stream_chunks)))
            return timings

        return asyncio.run(every())

    def synchronize(self) -> None:
        pass  # generate() returns once every token is on the host; the GPU work runs in the executor

    def cuda_ordinals(self) -> list[int]:
        parallel = self.llm.args.parallel_config
        world = getattr(parallel, "world_size", None) or (self.llm.args.tensor_parallel_size *
                                                          self.llm.args.pipeline_parallel_size)
        return list(range(world))

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_mb(self) -> tuple[Optional[float], str]:
        return None, "not measured for TensorRT-LLM: the model runs in its executor (MPI) processes"

    def effective_config(self) -> dict[str, Any]:
        import tensorrt_llm

        args = self.llm.args

        def read(obj: Any, *names: str) -> Optional[dict[str, Any]]:
            return None if obj is None else {n: _plain(getattr(obj, n, None)) for n in names}

        runtime = self.config.tensorrt.runtime
        out = {
            "tensorrt_llm_version": tensorrt_llm.__version__, "runtime": runtime, "args_class": type(args).__name__,
            "limits": read(args, "max_batch_size", "max_num_tokens", "max_seq_len", "max_input_len", "max_beam_width",
                           "enable_chunked_prefill"),
            "parallel": read(args, "tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size",
                             "moe_expert_parallel_size", "moe_tensor_parallel_size", "enable_attention_dp"),
            "kv_cache": read(args.kv_cache_config, "free_gpu_memory_fraction", "max_tokens", "max_gpu_total_bytes",
                             "enable_block_reuse", "enable_partial_reuse", "dtype", "tokens_per_block",
                             "host_cache_size"),
            "scheduler": read(args.scheduler_config, "capacity_scheduler_policy", "context_chunking_policy",
                              "dynamic_batch_config"),
            # on the PyTorch runtime: the checkpoint's quantization; on the engine runtime: what the build applied
            "quant_config": _plain(getattr(args, "quant_config", None)),
            "speculative_config": _plain(getattr(args, "speculative_config", None)),
            "kv_block_reuse_between_passes": self.config.tensorrt.kv_cache_config.enable_block_reuse,
            "sampling": {k: _plain(getattr(self.sampling, k, None)) for k in (
                "max_tokens", "min_tokens", "end_id", "pad_id", "ignore_eos", "temperature", "top_p", "top_k",
                "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "n")},
        }
        if runtime == "pytorch":
            out["cuda_graphs"] = read(getattr(args, "cuda_graph_config", None), "batch_sizes", "max_batch_size",
                                      "enable_padding")
            out["pytorch"] = read(args, "disable_overlap_scheduler", "attn_backend", "torch_compile_config",
                                  "stream_interval", "moe_config", "sampler_type", "disable_flashinfer_sampling",
                                  "enable_autotuner", "allreduce_strategy", "batch_wait_timeout_ms",
                                  "batch_wait_timeout_iters", "batch_wait_max_tokens_ratio")
        else:
            out["engine"] = read(args, "build_config", "extended_runtime_perf_knob_config", "batching_type",
                                 "enable_build_cache", "fast_build")
        return out

    def close(self) -> None:
        if self.llm is not None:
            try:
                self.llm.shutdown()  # the executor and its MPI workers; without it the process does not exit
            except Exception as exc:
                print(f"llem-bench: TensorRT-LLM shutdown failed: {exc}", file=sys.stderr, flush=True)
        self.llm = None
        gc.collect()


def _plain(value: Any) -> Any:
    """JSON-safe form of an llm.args value (pydantic models, enums, dataclasses such as BuildConfig)."""
    if isinstance(value, enum.Enum):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    for dump in ("model_dump", "to_dict"):
        if hasattr(value, dump):
            try:
                return _plain(getattr(value, dump)(**({"mode": "json"} if dump == "model_dump" else {})))
            except Exception:
                break
    return str(value)
