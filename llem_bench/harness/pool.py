"""Keeps one loaded backend and reuses it for consecutive experiments with the same load settings."""

from __future__ import annotations

import time
from typing import Optional

from llem_bench.backends import Backend, create_backend, load_key
from llem_bench.config.experiment import ExperimentConfig
from llem_bench.energy.idle import note_gpu_work
from llem_bench.progress import status


class BackendPool:
    def __init__(self) -> None:
        self._key: Optional[str] = None
        self._backend: Optional[Backend] = None
        self.idle_before_load: Optional[dict] = None  # measured at the last load, reused with the model

    def acquire(self, config: ExperimentConfig) -> tuple[Backend, bool, float]:
        """(backend configured for `config`, whether the loaded model was reused, load seconds)."""
        key = instance_key(config)
        reused = key == self._key and self._backend is not None
        load_s = 0.0
        if not reused:
            self.close()
            self.idle_before_load = _idle_before_load(config)
            backend = _server_backend(config) or create_backend(config.backend)
            status(f"loading {config.model} on {config.backend}" + (" (starting the engine)" if config.backend == "vllm" else ""))
            start = time.perf_counter()
            try:
                backend.load(config)
            except BaseException:
                backend.close()
                raise
            load_s = time.perf_counter() - start
            note_gpu_work()  # loading puts weights on the GPU: resident idle waits from here
            status(f"loaded in {load_s:.1f} s")
            self._key, self._backend = key, backend
        if reused:
            status("model already loaded (same load settings): reused")
        assert self._backend is not None
        self._backend.configure(config)
        return self._backend, reused, load_s

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            note_gpu_work()
        self._key, self._backend = None, None


def instance_key(config: ExperimentConfig) -> str:
    """Experiments with equal keys run on one loaded engine: the load settings, and for the serving
    scenarios which engine serves them (a server, vLLM's AsyncLLM, or the offline LLM)."""
    return load_key(config) + _engine_key(config)


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
    """Idle power before anything is loaded. Which GPUs the experiment will use is only known once the
    backend has placed the model, so this covers every GPU the process sees, and says so."""
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
    return {**idle, "gpus": sorted(handles), "scope": f"all visible GPUs ({len(handles)})"}
