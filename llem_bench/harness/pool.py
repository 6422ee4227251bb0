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

    def acquire(self, config: ExperimentConfig) -> tuple[Backend, bool, float]:
        """(backend configured for `config`, whether the loaded model was reused, load seconds)."""
        key = load_key(config)
        reused = key == self._key and self._backend is not None
        load_s = 0.0
        if not reused:
            self.close()
            backend = create_backend(config.backend)
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
