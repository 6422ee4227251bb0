"""The configuration of one experiment: one model, one backend, one workload, one grid point."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Optional

from pydantic import field_validator, model_validator

from llem_bench.config.backends import PyTorchConfig, TensorRTConfig, VLLMConfig
from llem_bench.config.base import StrictModel, knob
from llem_bench.config.serving import ServingConfig

DTYPE_SHORT = {"auto": "auto", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
DTYPE_ALIASES = {short: full for full, short in DTYPE_SHORT.items()}


class WorkloadConfig(StrictModel):
    prompts: str = knob(
        "builtin:default",
        "Prompt source: builtin:default (shipped set), a .jsonl path (field 'prompt' or 'text'), "
        "or 'synthetic' (random token ids of length input_tokens).",
    )
    num_prompts: int = knob(32, "Requests per workload pass (prompts are reused in order if the set is smaller).", ge=1)
    max_input_tokens: int = knob(256, "Prompts are truncated to this many tokens, once, before any run.", ge=1)
    input_tokens: Optional[int] = knob(None, "Exact prompt length for prompts: synthetic.", ge=1)
    output_tokens: int = knob(128, "Tokens generated per request.", ge=1)
    ignore_eos: bool = knob(
        True, "Force exactly output_tokens per request so every run and backend does the same work."
    )
    seed: int = knob(0, "Seed for synthetic prompts and sampling.")

    @model_validator(mode="after")
    def _synthetic_needs_length(self) -> "WorkloadConfig":
        if self.prompts == "synthetic" and self.input_tokens is None:
            raise ValueError("prompts: synthetic needs workload.input_tokens (e.g. input_tokens: 128)")
        if self.prompts != "synthetic" and self.input_tokens is not None:
            raise ValueError("workload.input_tokens only applies to prompts: synthetic; use max_input_tokens to truncate")
        return self


class DecodingConfig(StrictModel):
    preset: Literal["deterministic", "sampling"] = knob(
        "deterministic", "deterministic = greedy decoding; sampling uses the fields below."
    )
    temperature: float = knob(1.0, "Sampling temperature (preset: sampling).", gt=0)
    top_p: float = knob(1.0, "Nucleus sampling mass (preset: sampling).", gt=0, le=1)
    top_k: int = knob(0, "Top-k cut-off, 0 = off (preset: sampling).", ge=0)
    repetition_penalty: float = knob(1.0, "Penalty on repeated tokens, 1.0 = off.", gt=0)

    @model_validator(mode="after")
    def _sampling_fields_need_sampling(self) -> "DecodingConfig":
        if self.preset == "deterministic":
            changed = [n for n in ("temperature", "top_p", "top_k") if n in self.model_fields_set]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} only apply to preset: sampling (greedy decoding ignores them); "
                    "set decoding.preset: sampling or remove them"
                )
        return self


# The stability check looks at the last 3 pass times and never the cold first one (runner's warmup).
STABILITY_MIN_RUNS = 4


class WarmupConfig(StrictModel):
    min_runs: int = knob(1, "Full-shape warmup passes always run.", ge=1)
    max_runs: int = knob(
        8, "Cap on warmup passes. The stability check skips the cold first pass, so it needs max_runs >= "
        f"{STABILITY_MIN_RUNS}; reaching the cap without stability, or a fixed warmup (max_runs == min_runs "
        f"< {STABILITY_MIN_RUNS}), makes the verdict a warning.", ge=1)
    cv_target: float = knob(0.05, "Stop warming up once the CV of the last 3 pass times (never the first "
                            "pass) is below this.", gt=0)
    output_tokens: Optional[int] = knob(
        None, "Tokens per request in warmup passes; None = the measured length (full shape). A shorter "
        "warmup is only for demonstrating the warmup trap: the result warns.", ge=1,
    )

    @model_validator(mode="after")
    def _order(self) -> "WarmupConfig":
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})")
        if self.min_runs < self.max_runs < STABILITY_MIN_RUNS:
            raise ValueError(
                f"max_runs ({self.max_runs}) leaves the stability check no chance: it needs 3 pass times after "
                f"the cold first pass (max_runs >= {STABILITY_MIN_RUNS}). Raise measurement.warmup.max_runs to "
                f">= {STABILITY_MIN_RUNS}, or set max_runs == min_runs for a fixed, unchecked warmup (the "
                "verdict then says so)")
        return self


# Run-level settings: the same for every experiment of a study, and not part of an experiment's
# identity (test id, config hash), so a baseline with repeats matches a candidate without.
RUN_LEVEL_MEASUREMENT = ("repeats", "repeat_seed")


class MeasurementConfig(StrictModel):
    cycles: int = knob(3, "Measured cycles; statistics (mean, std, 95% CI) are over these. Fewer than 2 "
                       "cannot give a valid verdict (no spread).", ge=1)
    repeats: int = knob(
        1, "Run the whole study this many times (run-level repeats, each in a freshly shuffled order and "
        "re-warmed); the gate needs >= 2 to measure run-to-run noise. Study level only.", ge=1,
    )
    repeat_seed: int = knob(0, "Seed of the per-repeat shuffled experiment order. Study level only.")
    warmup: WarmupConfig = knob(WarmupConfig(), "Full-shape warmup before the measured cycles.")
    min_window_s: float = knob(
        10.0, "Repeat the workload inside each cycle until the window lasts this long "
        "(the NVML counter updates every ~100 ms: 10 s keeps quantisation near 1%).", ge=0,
    )
    energy: Literal["auto", "nvml", "zeus", "none"] = knob(
        "auto", "auto: NVML on the GPUs in use when there are any; nvml: fail without it; zeus: Zeus's "
        "ZeusMonitor windows; none: do not measure.",
    )
    tier: Literal["standard", "reference"] = knob(
        "standard", "reference: publication tier, requires min_window_s >= 30 and cycles >= 5."
    )
    baseline_idle_s: float = knob(
        5.0, "Seconds of idle power measured before the model loads and again with it resident "
        "(GPU only); net energy subtracts the resident idle power.", ge=0,
    )
    sampler_interval_s: float = knob(
        0.1, "NVML power/clock/temperature/throttle sampling interval; 0 turns the sampler off. The NVML "
        "power fields and energy counter update about every 100 ms, so shorter intervals mostly repeat values.",
        ge=0,
    )
    latency: bool = knob(True, "Run streaming passes after the cycles for TTFT / inter-token latency / TPOT.")
    latency_passes: int = knob(
        3, "Streaming passes (outside the energy windows); percentiles pool them, the CI of each mean is "
        "over the passes.", ge=1,
    )
    phases: bool = knob(True, "Measure a prefill-only window to split prefill and decode time and energy.")

    @model_validator(mode="after")
    def _reference_tier(self) -> "MeasurementConfig":
        if self.tier == "reference" and (self.min_window_s < 30 or self.cycles < 5):
            raise ValueError(f"tier: reference needs min_window_s >= 30 and cycles >= 5 "
                             f"(got {self.min_window_s} s, {self.cycles} cycles); raise them or use tier: standard")
        return self


class ExperimentConfig(StrictModel):
    study: str = knob("adhoc", "Name of the study this experiment belongs to.")
    model: str = knob(
        ..., "Required. synthetic:<shape> (offline random-init checkpoint), a Hugging Face id or a local path.",
        load=True,
    )
    backend: Literal["pytorch", "vllm", "tensorrt"] = knob("pytorch", "Inference backend.", load=True)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = knob(
        "auto", "Weight/activation dtype; auto keeps the checkpoint's.", load=True,
        effect="Half precision halves weight traffic: faster decode, fewer J/token.",
    )
    workload: WorkloadConfig = knob(WorkloadConfig(), "What is generated.")
    decoding: DecodingConfig = knob(DecodingConfig(), "How tokens are chosen.")
    measurement: MeasurementConfig = knob(MeasurementConfig(), "How it is measured.")
    scenario: Literal["offline", "serving", "concurrency"] = knob(
        "offline", "offline: a fixed batch submitted at once; serving: requests arrive at serving.rate (open loop); "
        "concurrency: serving.concurrency requests kept in flight (closed loop).")
    serving: Optional[ServingConfig] = knob(None, "Arrivals, lengths, SLOs and engine (scenario: serving / concurrency).")
    pytorch: Optional[PyTorchConfig] = None
    vllm: Optional[VLLMConfig] = None
    tensorrt: Optional[TensorRTConfig] = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: object) -> object:
        return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_backend_section(self) -> "ExperimentConfig":
        for name in ("pytorch", "vllm", "tensorrt"):
            if name != self.backend and getattr(self, name) is not None:
                raise ValueError(f"section '{name}' given but backend is '{self.backend}'")
        if getattr(self, self.backend) is None:
            default = {"pytorch": PyTorchConfig, "vllm": VLLMConfig, "tensorrt": TensorRTConfig}[self.backend]()
            object.__setattr__(self, self.backend, default)
        return self

    @model_validator(mode="after")
    def _static_cache_fits(self) -> "ExperimentConfig":
        cache_len = self.pytorch.max_cache_len if self.pytorch else None
        workload = self.workload
        longest = (workload.input_tokens or workload.max_input_tokens) + max(
            workload.output_tokens, self.measurement.warmup.output_tokens or 0)
        if cache_len is not None and cache_len < longest:
            raise ValueError(f"pytorch.max_cache_len ({cache_len}) is shorter than the longest request ({longest} "
                             "tokens: prompt + output), so transformers would ignore it; raise it or remove it")
        return self

    @model_validator(mode="after")
    def _scenario_fields(self) -> "ExperimentConfig":
        # Serving scenarios (config/serving.py, scenarios/serving.py); offline configs stay as they were.
        if self.scenario == "offline":
            if self.serving is not None:
                raise ValueError("section 'serving' given but scenario is 'offline'; set scenario: serving "
                                 "(or concurrency) or remove the section")
            return self
        if self.backend != "vllm":
            raise ValueError(f"scenario: {self.scenario} needs backend: vllm (the {self.backend} backend has no "
                             "serving engine yet); use scenario: offline for it")
        if self.serving is None:
            object.__setattr__(self, "serving", ServingConfig())
        serving = self.serving
        if self.scenario == "concurrency" and serving.concurrency is None:
            raise ValueError("scenario: concurrency needs serving.concurrency (requests kept in flight, e.g. 8)")
        if self.scenario == "concurrency" and "rate" in serving.model_fields_set:
            raise ValueError("serving.rate applies to scenario: serving (open loop); scenario: concurrency "
                             "keeps serving.concurrency requests in flight instead")
        if self.measurement.sampler_interval_s <= 0 and self.measurement.energy != "none":
            raise ValueError("scenario: serving/concurrency reads window energy from the power sampler's timestamped "
                             "counter readings: measurement.sampler_interval_s must be > 0 (or energy: none)")
        if serving.engine == "inprocess" and serving.client_processes > 1:
            raise ValueError("serving.client_processes > 1 needs engine: server (the in-process engine has one "
                             "event loop)")
        if serving.concurrency is not None and serving.client_processes > serving.concurrency:
            raise ValueError(f"serving.client_processes ({serving.client_processes}) exceeds serving.concurrency "
                             f"({serving.concurrency}): some processes would hold no request slot")
        if serving.engine == "inprocess" and ("server" in serving.model_fields_set):
            raise ValueError("serving.server applies to engine: server; engine: inprocess runs vLLM's AsyncLLM "
                             "in the worker")
        return self

    @property
    def backend_config(self) -> StrictModel:
        return getattr(self, self.backend)

    def canonical(self) -> dict:
        """The fully resolved config, other backends' sections dropped."""
        exclude = {b for b in ("pytorch", "vllm", "tensorrt") if b != self.backend}
        return self.model_dump(mode="json", exclude=exclude | ({"serving"} if self.serving is None else set()))


def config_hash(explicit: dict) -> str:
    """Short stable hash of the settings a user wrote (not of schema defaults, so adding a
    field with a default later does not change ids or break baselines)."""
    return hashlib.sha256(stable_json(explicit).encode()).hexdigest()[:6]


def stable_json(value: Any) -> str:
    """One text for equal settings: keys sorted, and all of them strings first."""
    return json.dumps(_str_keys(value), sort_keys=True, separators=(",", ":"), default=str)


def _str_keys(value: Any) -> Any:
    """YAML may mix key types ({0: 20GiB, cpu: 64GiB}); JSON writes them all as strings anyway, and
    sorting needs one type."""
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value
