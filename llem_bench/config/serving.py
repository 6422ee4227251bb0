"""The `serving:` section: how requests arrive (open loop at a rate, or closed loop at a
concurrency), how long each one is, the latency SLOs, and which engine serves them."""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import field_validator, model_validator

from llem_bench.config.base import StrictModel, knob


class LengthSpec(StrictModel):
    """Per-request token counts: drawn once per experiment from `serving.seed`, clipped to [min, max]."""

    dist: Literal["fixed", "uniform", "normal", "lognormal", "dataset"] = knob(
        "fixed", "fixed (value), uniform (min..max), normal or lognormal (mean, std; clipped to min..max), "
        "dataset (the lengths recorded in a .jsonl file: path, field).")
    value: Optional[int] = knob(None, "Length for dist: fixed.", ge=1)
    min: int = knob(1, "Lower clip / bound.", ge=1)
    max: Optional[int] = knob(None, "Upper clip / bound (needed by uniform, normal and lognormal).", ge=1)
    mean: Optional[float] = knob(None, "Mean length for normal / lognormal.", gt=0)
    std: Optional[float] = knob(None, "Standard deviation of the length for normal / lognormal.", gt=0)
    path: Optional[str] = knob(None, "dataset: a .jsonl file with one request per line.")
    field: Optional[str] = knob(None, "dataset: the integer field holding this length (e.g. output_tokens).")

    @model_validator(mode="after")
    def _needs(self) -> "LengthSpec":
        need = {"fixed": ["value"], "uniform": ["max"], "normal": ["mean", "std", "max"],
                "lognormal": ["mean", "std", "max"], "dataset": ["path", "field"]}[self.dist]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"dist: {self.dist} needs {', '.join(missing)}")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class SLOConfig(StrictModel):
    ttft_ms: Optional[float] = knob(None, "A good request's time to first token is at most this.", gt=0)
    itl_ms: Optional[float] = knob(None, "A good request's mean inter-token latency (TPOT) is at most this.", gt=0)
    e2e_ms: Optional[float] = knob(None, "A good request's end-to-end latency is at most this.", gt=0)


class ServerConfig(StrictModel):
    command: Optional[Union[str, list[str]]] = knob(
        None, "Command that starts an OpenAI-compatible server; {python}, {model}, {port} are filled in. "
        "Unset with backend: vllm = '{python} -m vllm.entrypoints.openai.api_server --model {model} "
        "--port {port}' plus the study's vllm engine arguments.")
    health: str = knob("/health", "Path polled until it answers 200.")
    url: Optional[str] = knob(None, "Base URL of a server started elsewhere (then no command is run); "
                              "localhost only.")
    start_timeout_s: float = knob(600.0, "Give up if the server is not healthy after this long.", gt=0)

    @field_validator("url")
    @classmethod
    def _localhost(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("http://127.0.0.1", "http://localhost")):
            raise ValueError("only localhost servers are measured (http://127.0.0.1:<port> or http://localhost:<port>)")
        return value


class ServingConfig(StrictModel):
    rate: Union[float, Literal["inf"]] = knob(
        "inf", "Open loop (scenario: serving): requests per second, or inf = all at t=0.")
    arrival: Literal["poisson", "gamma", "constant"] = knob(
        "poisson", "Inter-arrival times: poisson (exponential gaps), gamma (shape = burstiness), constant.")
    burstiness: float = knob(1.0, "Gamma shape for arrival: gamma; < 1 is burstier than Poisson, 1 is Poisson.", gt=0)
    concurrency: Optional[int] = knob(
        None, "Closed loop (scenario: concurrency): requests kept in flight; with scenario: serving a cap.", ge=1)
    num_requests: int = knob(64, "Measured requests per experiment.", ge=4)
    warmup_requests: int = knob(4, "Requests sent (and discarded) before the measured run.", ge=0)
    seed: int = knob(0, "Seed for arrival times, lengths and prompt token ids.")
    input_tokens: Optional[LengthSpec] = knob(None, "Prompt lengths; unset = workload.input_tokens (or "
                                              "max_input_tokens) for every request.")
    output_tokens: Optional[LengthSpec] = knob(None, "Output lengths; unset = workload.output_tokens.")
    slo: SLOConfig = knob(SLOConfig(), "Latency objectives for goodput.")
    engine: Literal["server", "inprocess"] = knob(
        "server", "server: an OpenAI-compatible HTTP server on localhost; inprocess: the backend's async engine.")
    server: ServerConfig = knob(ServerConfig(), "The server (engine: server).")
    client_processes: int = knob(
        1, "Load-generator processes (engine: server); requests are dealt round-robin, a closed loop's "
        "concurrency split between them. Raise it when client_cpu_fraction nears 1.", ge=1)
    scrape_interval_s: float = knob(1.0, "Seconds between reads of the server's Prometheus /metrics (0 = off).", ge=0)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity"):
            return "inf"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isinf(value):
                return "inf"
            if value <= 0:
                raise ValueError(f"rate must be > 0 requests/s or inf, got {value}")
        return value

    @property
    def rate_per_s(self) -> float:
        return math.inf if self.rate == "inf" else float(self.rate)
