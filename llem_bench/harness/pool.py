"""Keeps one loaded backend and reuses it for consecutive experiments with the same load settings."""

from __future__ import annotations

import time
from typing import Optional

from llem_bench.backends import Backend, create_backend, load_key
from llem_bench.config.experiment import ExperimentConfig


class BackendPool:
    def __init__(self) -> None:
        self._key: Optional[str] = None
        self._backend: Optional[Backend] = None
        self.idle_before_load: Optional[dict] = None  # measured at the last load, reused with the model

    def acquire(self, config: ExperimentConfig) -> tuple[Backend, bool, float]:
        """(backend configured for `config`, whether the loaded model was reused, load seconds)."""
        key = load_key(config) + _engine_key(config)
        reused = key == self._key and self._backend is not None
        load_s = 0.0
        if not reused:
            self.close()
            self.idle_before_load = _idle_before_load(config)
            backend = _server_backend(config) or create_backend(config.backend)
            start = time.perf_counter()
            try:
                backend.load(config)
            except BaseException:
                backend.close()
                raise
            load_s = time.perf_counter() - start
            self._key, self._backend = key, backend
        assert self._backend is not None
        self._backend.configure(config)
        return self._backend, reused, load_s

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        self._key, self._backend = None, None


def _engine_key(config: ExperimentConfig) -> str:
    if config.scenario == "offline":
        return ""
    serving = config.serving
    return f"|{serving.engine}:" + (serving.server.model_dump_json() if serving.engine == "server" else "")


def _server_backend(config: ExperimentConfig) -> Optional[Backend]:
    """Serving scenarios run against a server process or vLLM's async engine instead of a loaded `LLM`."""
    if config.scenario == "offline":
        return None
    if config.serving.engine == "inprocess":
        from llem_bench.serving.inprocess import AsyncEngineBackend

        return AsyncEngineBackend()
    from llem_bench.serving.server import ServerBackend

    return ServerBackend()


def _idle_before_load(config: ExperimentConfig) -> Optional[dict]:
    """Idle power of every GPU this process sees, before anything is loaded on them."""
    measurement = config.measurement
    if measurement.energy == "none" or measurement.baseline_idle_s <= 0 or measurement.sampler_interval_s <= 0:
        return None
    try:
        from llem_bench.energy.gpus import visible_handles
        from llem_bench.energy.idle import measure_idle

        handles = visible_handles()
    except Exception as exc:
        return {"mean_power_w": None, "reason": f"NVML unavailable: {exc}"}
    if not handles:
        return None
    idle = measure_idle(handles, measurement.baseline_idle_s, measurement.sampler_interval_s)
    return {**idle, "gpus": sorted(handles)}
