"""ExperimentResult: everything needed to trust, reproduce and compare one experiment."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def repeat_key(test_id: str, repeat: Optional[int]) -> str:
    return f"{test_id}-r{repeat}" if repeat is not None else test_id


class MetricSummary(BaseModel):
    mean: float
    std: Optional[float]  # None for a single value
    n: int
    cv: Optional[float]
    ci95_low: Optional[float]
    ci95_high: Optional[float]
    values: list[float]


class ExperimentResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    test_id: str
    config_hash: str
    repeat: Optional[int] = Field(None, description="1-based run-level repeat (measurement.repeats); None when 1")
    repeats: int = 1
    study: str
    run_id: str
    status: Literal["ok", "failed"]
    error: Optional[str] = None
    backend: str
    model: str
    synthetic: bool
    synthetic_info: Optional[dict[str, Any]] = None
    config: dict[str, Any] = Field(description="fully resolved experiment config")
    explicit: dict[str, Any] = Field(default_factory=dict, description="the settings the study wrote")
    effective: dict[str, Any] = Field(default_factory=dict, description="settings read back from the backend")
    workload: dict[str, Any] = Field(default_factory=dict)
    energy: dict[str, Any] = Field(default_factory=dict, description="source, availability and reason, GPUs")
    metrics: dict[str, Optional[MetricSummary]] = Field(default_factory=dict)
    unavailable: dict[str, str] = Field(default_factory=dict, description="metric -> why it is null")
    cycles: list[dict[str, Any]] = Field(default_factory=list)
    warmup: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    token_check: dict[str, Any] = Field(default_factory=dict)
    peak_memory_method: Optional[str] = None
    idle: dict[str, Any] = Field(default_factory=dict, description="idle power before load and with the model resident")
    power: dict[str, Any] = Field(default_factory=dict, description="sampler summary of the measured windows, "
                                  "counter vs integrated samples cross-check, throttling seen")
    latency: dict[str, Any] = Field(default_factory=dict, description="streaming run: ttft_ms, itl_ms, "
                                    "e2e_latency_ms, each {mean, p50, p90, p99, n}")
    phases: dict[str, Any] = Field(default_factory=dict, description="prefill vs decode time and energy")
    roofline: dict[str, Any] = Field(default_factory=dict, description="decode memory-bandwidth bound and the "
                                     "fraction reached")
    serving: dict[str, Any] = Field(default_factory=dict, description="serving scenarios: steady-state window, "
                                    "ramp-up/steady/drain segments, load generator, engine gauges")
    validity: dict[str, Any] = Field(default_factory=dict, description="verdict: valid | warning | invalid, reasons")
    timeseries: Optional[str] = Field(None, description="path of the power timeseries CSV, relative to the run folder")
    warnings: list[str] = Field(default_factory=list)
    environment: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    finished_at: Optional[str] = None

    @property
    def key(self) -> str:
        """The pytest param id and result file name: `<test_id>-r<k>` for repeat k, else the test id."""
        return repeat_key(self.test_id, self.repeat)

    def mean(self, metric: str) -> Optional[float]:
        summary = self.metrics.get(metric)
        return summary.mean if summary else None
