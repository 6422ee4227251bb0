"""transformers backend: `from_pretrained` + batched, left-padded `generate` with every
generation field set explicitly (transformers 5 fills unset fields from the model's defaults)."""

from __future__ import annotations

import copy
import os
import resource
import sys
import time
from typing import Any, Optional

from llem_bench.backends.base import PassOutput
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.harness.latency import RequestTiming
from llem_bench.harness.roofline import moe_experts, moe_reason
from llem_bench.workload.prompts import Workload
from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic


class PyTorchBackend:
    name = "pytorch"
    streaming_method = ("a streamer stamps every decode step when its tokens reach the host (the copy waits "
                        "for the step to finish); the requests of one batch share every stamp, so each batch is "
                        "one timing (one TTFT per batch per pass)")

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: str = "cpu"
        self.config: Optional[ExperimentConfig] = None
        self.generation_config: Any = None
        self.assistant: Any = None  # draft model of assisted decoding (pytorch.assistant_model)
        self.ranks: Any = None  # pytorch_tp.Ranks under tp_plan: this torchrun rank's part
        self._in_pass = False  # a pass was interrupted: the followers are stuck in it, do not send them STOP

    def load(self, config: ExperimentConfig) -> None:
        import torch
        from transformers import AutoTokenizer

        section = config.pytorch
        self.device = _resolve_device(section.device)
        if section.tp_plan:
            _check_tp_launch(self.device)
        path = _checkpoint(config.model, self.device)
        print(f"llem-bench: loading {config.model} ({path}) on {section.device_map or self.device}"
              + (f" (tensor parallel, rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})" if section.tp_plan else ""),
              file=sys.stderr, flush=True)
        model = _from_pretrained(path, self.device, config.dtype, section)
        if section.tp_plan:
            from llem_bench.backends.pytorch_tp import Ranks

            self.device = str(model.device)  # this rank's device: cuda:<local rank>, or cpu
            self.ranks = Ranks(model.device)
        if section.torch_compile:
            model.forward = torch.compile(model.forward, mode=section.compile_mode)
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.assistant = None
        if section.assistant_model:  # the draft model: same dtype and device, loaded plainly
            draft = _checkpoint(section.assistant_model, self.device)
            self.assistant = _from_pretrained(draft, self.device, config.dtype, type(section)())

    def configure(self, config: ExperimentConfig) -> None:
        from transformers import GenerationConfig

        self.config = config
        self.generation_config = GenerationConfig(**generation_fields(config, self.tokenizer))
        # Also replace the model's own defaults so nothing unset can leak in from generation_config.json.
        self.model.generation_config = self.generation_config
        if self.assistant is not None:  # transformers reads the draft settings from the assistant's own config
            self.assistant.generation_config = copy.deepcopy(self.generation_config)

    def run_pass(self, workload: Workload) -> PassOutput:
        generation_config = self.generation_config
        if workload.output_tokens != generation_config.max_new_tokens:  # e.g. a short warmup
            generation_config = copy.deepcopy(generation_config)
            generation_config.max_new_tokens = workload.output_tokens
            generation_config.min_new_tokens = min(generation_config.min_new_tokens or 0, workload.output_tokens)
        return self._generate_all(workload, generation_config)

    def run_prefill_pass(self, workload: Workload) -> PassOutput:
        """The same batches, stopped after the first token: prefill (plus one sampling step)."""
        prefill = copy.deepcopy(self.generation_config)
        prefill.max_new_tokens = prefill.min_new_tokens = 1
        return self._generate_all(workload, prefill)

    def run_streaming_pass(self, workload: Workload) -> list[RequestTiming]:
        """One pass with a streamer that stamps every decode step once its tokens reach the host: one
        timing per batch, since all its requests get their tokens at the same steps."""
        timings: list[RequestTiming] = []
        pass_start = time.perf_counter()

        def on_batch(size: int) -> TimingStreamer:
            streamer = TimingStreamer()
            timings.append(streamer.batch(size, pass_start))
            return streamer

        self._generate_all(workload, self.generation_config, streamer_for=on_batch)
        return timings

    def _generate_all(self, workload: Workload, generation_config: Any, streamer_for=None) -> PassOutput:
        batch_size = self.config.pytorch.batch_size
        prompts = workload.prompt_token_ids
        if self.ranks is not None:  # tensor parallel: the other ranks run the same pass
            self.ranks.announce(prompts, generation_config, batch_size)
        self._in_pass = True
        rows, counts = self._generate_batches(prompts, generation_config, batch_size, streamer_for)
        if self.ranks is not None:
            self.ranks.finish_pass(rows, counts)
        self._in_pass = False
        return PassOutput(output_tokens=counts)

    def _generate_batches(self, prompts: list[list[int]], generation_config: Any, batch_size: int,
                          streamer_for=None) -> tuple[list[list[int]], list[int]]:
        """(generated rows, generated length of each) over the prompts in batches of batch_size."""
        import torch

        eos = self.tokenizer.eos_token_id
        rows: list[list[int]] = []
        counts: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                input_ids, attention_mask = _left_pad(batch, self.tokenizer.pad_token_id, self.model.device)
                streamer = streamer_for(len(batch)) if streamer_for else None
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
                    streamer=streamer, assistant_model=self.assistant,
                )
                new = out[:, input_ids.shape[1]:].tolist()
                rows.extend(new)
                counts.extend(_generated_length(row, eos, self.config.workload.ignore_eos, self.tokenizer.pad_token_id)
                              for row in new)
        return rows, counts

    def follow_leader(self) -> int:
        """A tensor parallel rank other than 0: run every pass rank 0 runs until it stops; the passes run."""
        def run(prompts, generation_config, batch_size):
            self._in_pass = True
            self.ranks.finish_pass(*self._generate_batches(prompts, generation_config, batch_size))
            self._in_pass = False

        return self.ranks.follow(run)

    @property
    def layer_sequential(self) -> bool:
        """For the roofline: device_map runs its GPUs' layers one at a time; tensor parallel GPUs work at once."""
        return self.ranks is None

    def model_shape(self) -> dict[str, Any]:
        import torch

        cfg = self.model.config
        heads = cfg.num_attention_heads
        experts = moe_experts(cfg)
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            # Every parameter at its stored size, not the first one's (the embedding): bnb/quanto layers hold
            # packed or int8 weights next to bf16 embeddings and norms.
            "weight_bytes": None if experts else weight_bytes(self.model),
            **({"reason": moe_reason(experts)} if experts else {}),
            "weight_basis": "stored parameter dtypes (numel x element size); an untied input embedding is left out "
                            "(a step reads one row of it per sequence)",
            # the KV cache is kept in the activation dtype
            "kv_bytes_per_element": torch.empty(0, dtype=self.model.dtype).element_size(),
            "layers": cfg.num_hidden_layers,
            "kv_heads": getattr(cfg, "num_key_value_heads", None) or heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        }

    def decode_batch(self, workload: Workload) -> int:
        return min(self.config.pytorch.batch_size, workload.num_requests)

    def synchronize(self) -> None:
        import torch

        # Every GPU the model is on: with device_map, synchronize() alone waits for the current device only.
        # (The device set is cached per model: walking every parameter after each pass would cost time.)
        cached = getattr(self, "_sync_ordinals", None)
        if cached is None or cached[0] is not self.model:
            self._sync_ordinals = cached = (self.model, self._own_ordinals())
        for ordinal in cached[1]:
            torch.cuda.synchronize(ordinal)

    def cuda_ordinals(self) -> list[int]:
        """The GPUs the experiment uses, metered by rank 0: under tensor parallelism rank k holds GPU k of
        the worker's set (transformers binds cuda:LOCAL_RANK), as vLLM's tensor_parallel_size does."""
        if self.ranks is not None and self.device.startswith("cuda"):
            return list(range(self.ranks.world_size))
        return self._own_ordinals()

    def _own_ordinals(self) -> list[int]:
        """The GPUs this process holds weights on (under tensor parallelism: its own one; the other ranks
        finish each pass before rank 0 stamps it, see pytorch_tp)."""
        if not self.device.startswith("cuda"):
            return []
        devices = {p.device for p in self.model.parameters()}
        return sorted(d.index or 0 for d in devices if d.type == "cuda")

    def reset_peak_memory(self) -> None:
        import torch

        for ordinal in self._own_ordinals():
            torch.cuda.reset_peak_memory_stats(ordinal)
        if self.ranks is not None:
            self.ranks.reset_peak_memory()

    def peak_memory_mb(self) -> tuple[Optional[float], str]:
        import torch

        ordinals = self._own_ordinals()
        if self.ranks is not None and ordinals:
            peak = sum(self.ranks.report.peak_memory_bytes)
            return peak / 2**20, ("torch.cuda.max_memory_allocated of every tensor parallel rank's GPU, gathered "
                                  "after each pass, summed")
        if ordinals:
            peak = sum(torch.cuda.max_memory_allocated(o) for o in ordinals)
            return peak / 2**20, "torch.cuda.max_memory_allocated over the window, summed over the GPUs in use"
        # ru_maxrss is KiB on Linux; it is the whole process's peak since start, not per window.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.ranks is not None:
            return rss, f"rank 0's process peak RSS since start (CPU run; each of the {self.ranks.world_size} ranks " \
                        "holds its own shard)"
        return rss, "process peak RSS since start (CPU run)"

    def effective_config(self) -> dict[str, Any]:
        model, gen = self.model, self.generation_config
        return {
            "batch_size": self.config.pytorch.batch_size,
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "experts_implementation": getattr(model.config, "_experts_implementation", None),
            "quantization": _plain_dict(getattr(model.config, "quantization_config", None)),
            "hf_device_map": getattr(model, "hf_device_map", None),
            "tensor_parallel": {**self.ranks.describe(), "local_parameters": _local_parameters(model)}
            if self.ranks is not None else None,
            "torch_compile": self.config.pytorch.torch_compile,
            "assistant_model": self.config.pytorch.assistant_model,
            "generation": {k: getattr(gen, k) for k in (
                "max_new_tokens", "min_new_tokens", "do_sample", "num_beams", "temperature", "top_p", "top_k",
                "repetition_penalty", "use_cache", "cache_implementation", "cache_config", "max_cache_len",
                "prefill_chunk_size", "disable_compile", "num_assistant_tokens", "assistant_confidence_threshold",
                "pad_token_id", "eos_token_id")},
            "compile_config": _plain_dict(gen.compile_config),
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    def close(self) -> None:
        import gc

        import torch

        if self.ranks is not None:
            self._release_ranks()
        self.model = self.assistant = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _release_ranks(self) -> None:
        """Leader: stop the followers, unless a pass broke off (they wait inside it; the launch's exit ends
        them). Every rank leaves the process group."""
        import torch.distributed as dist

        ranks, self.ranks = self.ranks, None
        if ranks.leader and not self._in_pass:
            ranks.stop()
        if dist.is_initialized() and not self._in_pass:
            dist.destroy_process_group()


class TimingStreamer:
    """transformers streamer protocol: the first put() is the prompt, every later put() carries the
    batch's next tokens. Copying them to the host waits for the step to finish, so the stamp is
    when the tokens exist, not when the kernel was queued. The batch's requests share every stamp:
    they are recorded once, as one timing that stands for `size` requests."""

    def __init__(self) -> None:
        self._timing: Optional[RequestTiming] = None
        self._seen_prompt = False

    def batch(self, size: int, pass_start: float) -> RequestTiming:
        self._timing = RequestTiming(pass_start=pass_start, submitted=time.perf_counter(), requests=size)
        return self._timing

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        value = value.cpu()
        now = time.perf_counter()
        # one token per request per step; assisted decoding puts a (1, n) block of accepted tokens
        tokens = value.shape[-1] if value.dim() > 1 else 1
        self._timing.deliveries.append((now, tokens))

    def end(self) -> None:
        self._timing.end = time.perf_counter()


# from_pretrained arguments taken from the pytorch section as they are (None = transformers' default).
FROM_PRETRAINED_FIELDS = ("attn_implementation", "device_map", "quantization_config", "max_memory",
                          "experts_implementation")


def generation_fields(config: ExperimentConfig, tokenizer: Any) -> dict[str, Any]:
    """Every GenerationConfig field generate() reads, set explicitly (transformers 5 fills unset ones
    from the model's defaults). The pinned ones keep the fixed-output-length method: no early stop on
    text, no per-step outputs kept."""
    from transformers import CompileConfig

    section, decoding, workload = config.pytorch, config.decoding, config.workload
    sampling = decoding.preset == "sampling"
    fields = dict(
        max_new_tokens=workload.output_tokens, min_new_tokens=workload.output_tokens if workload.ignore_eos else 0,
        max_length=None, min_length=None, do_sample=sampling, num_beams=section.num_beams, num_return_sequences=1,
        temperature=decoding.temperature if sampling else 1.0,
        top_p=decoding.top_p if sampling else 1.0,
        top_k=(decoding.top_k or None) if sampling else None,
        min_p=(section.min_p or None) if sampling else None, typical_p=1.0,
        prompt_lookup_num_tokens=section.prompt_lookup_num_tokens, repetition_penalty=decoding.repetition_penalty,
        no_repeat_ngram_size=0, length_penalty=1.0, early_stopping=False,
        use_cache=section.use_cache, cache_implementation=section.cache_implementation,
        cache_config=section.cache_config, max_cache_len=section.max_cache_len,
        prefill_chunk_size=section.prefill_chunk_size, disable_compile=section.disable_compile,
        compile_config=CompileConfig(**section.compile_config) if section.compile_config else None,
        num_assistant_tokens=section.num_assistant_tokens,
        assistant_confidence_threshold=section.assistant_confidence_threshold,
        stop_strings=None, output_scores=False, output_logits=False, output_attentions=False,
        output_hidden_states=False, return_dict_in_generate=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    fields.update(section.passthrough.get("generate", {}))
    return fields


def _checkpoint(model: str, device: str) -> str:
    return str(ensure_checkpoint(model, device=device)) if is_synthetic(model) else model


def _from_pretrained(path: str, device: str, dtype: str, section: Any) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    kwargs.update({n: getattr(section, n) for n in FROM_PRETRAINED_FIELDS if getattr(section, n) is not None})
    if section.tp_plan:
        from llem_bench.backends.pytorch_tp import distributed_config

        kwargs["distributed_config"] = distributed_config(section)
    placed = section.device_map or section.tp_plan
    if section.quantization_config and not placed:
        kwargs["device_map"] = device  # quantized weights are placed at load: some (bitsandbytes) refuse .to()
    kwargs.update(section.passthrough.get("from_pretrained", {}))
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs and not placed:
        model = model.to(device)
    return model.eval()


def _check_tp_launch(device: str) -> None:
    """tp_plan shards over the ranks of a torchrun launch, on the accelerator torch finds."""
    import torch

    from llem_bench.backends.pytorch_tp import launched

    if not launched():
        raise RuntimeError("pytorch.tp_plan needs a torchrun launch (one process per rank); llem-bench starts one "
                           "for it from a study run. Loading the backend directly: start it under "
                           "`python -m torch.distributed.run --nproc-per-node N`")
    if device == "cpu" and torch.cuda.is_available():
        raise RuntimeError("pytorch.device: cpu with tp_plan, but torch sees a GPU, and transformers shards over the "
                           "GPUs it sees; llem-bench hides them from CPU ranks (CUDA_VISIBLE_DEVICES='') when it "
                           "launches them, so start them that way or use device: auto")


def _local_parameters(model: Any) -> int:
    """Parameters this rank holds: its shards (DTensor.to_local) plus what every rank keeps whole."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def _plain_dict(value: Any) -> Any:
    """A transformers config object (quantization, compile) as a plain dict for the result record."""
    if value is None or isinstance(value, dict):
        return value
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if to_dict else {k: v for k, v in vars(value).items() if not k.startswith("_")}


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"pytorch.device is '{device}' but torch sees no CUDA GPU; use device: cpu or auto")
    return device


def _left_pad(batch: list[list[int]], pad_id: int, device: Any):
    import torch

    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def weight_bytes(model: Any) -> int:
    """Bytes a decode step reads: every (deduplicated: tied weights once) parameter as stored, less an
    untied input embedding, of which a step reads only one row per sequence (the LM head is read whole)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    outputs = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if inputs is not None and outputs is not None and inputs.weight is not outputs.weight:
        total -= inputs.weight.numel() * inputs.weight.element_size()
    return total


def _generated_length(row: list[int], eos: Optional[int], ignore_eos: bool, pad: Optional[int] = None) -> int:
    """Generated tokens of one row, never the batch width: generate() pads a row that finished early
    (EOS, stop strings) up to the batch's width with `pad`, so that padding is not output.
    Up to and including the first EOS unless EOS is ignored; then the trailing run of pad tokens is
    stripped. A single trailing pad that differs from EOS is ambiguous (the model may have produced that
    token) and counts as generated; with pad == EOS under ignore_eos, EOS cannot be generated, so any
    trailing EOS is padding."""
    if not ignore_eos and eos is not None and eos in row:
        return row.index(eos) + 1
    if pad is None:
        return len(row)
    run = len(row)
    while run > 0 and row[run - 1] == pad:
        run -= 1
    trailing = len(row) - run
    if trailing == 0 or (trailing == 1 and pad != eos):
        return len(row)
    return run
