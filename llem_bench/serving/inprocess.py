"""vLLM's async engine (AsyncLLM) in this process as the engine of a serving experiment: the
same load generator, with `engine.generate()` instead of HTTP, every DELTA output stamped when
the engine's output handler hands it over (time.perf_counter, in the engine's own event loop).

AsyncLLM binds its output handler to the event loop it first runs in, so the engine lives on one
long-lived loop in a daemon thread and every run is submitted to that loop.

The engine is built as vLLM's own server builds it (usage context OPENAI_API_SERVER, stats on), so the
in-process and server modes of one study run the same engine: AsyncLLM.from_engine_args' default context
resolves unset limits to vLLM's generic fallbacks (max_num_batched_tokens 2048 where the server takes 8192
on an H100/H200 and the offline LLM 16384), which the H200 offline-vs-rate-inf run found.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from typing import Any, Optional

from llem_bench.config.experiment import ExperimentConfig
from llem_bench.serving.client import RequestRecord, now
from llem_bench.workload.lengths import PlannedRequest
from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic


class AsyncEngineBackend:
    streaming_method = "AsyncLLM DELTA outputs stamped on arrival in the engine's event loop (time.perf_counter)"

    def __init__(self) -> None:
        self.name = "vllm-async"
        self.tokenizer: Any = None
        self.engine: Any = None
        self.kwargs: dict[str, Any] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread: Optional[threading.Thread] = None
        self.start_s: Optional[float] = None
        self.config: Optional[ExperimentConfig] = None
        self.on_gpu = False

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def load(self, config: ExperimentConfig) -> None:
        import torch
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        from llem_bench.backends.vllm import VLLMBackend

        path = str(ensure_checkpoint(config.model)) if is_synthetic(config.model) else config.model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.on_gpu = torch.cuda.is_available()
        helper = VLLMBackend()
        helper.on_gpu = self.on_gpu
        # stats on, as in vLLM's AsyncLLM and its server: the queueing-delay metrics read the per-request
        # stamps (RequestOutput.metrics) that vLLM fills only with stats on (passthrough can still turn them off)
        self.kwargs = helper.engine_kwargs(config, path)
        if "disable_log_stats" not in config.vllm.passthrough:
            self.kwargs["disable_log_stats"] = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llem-async-engine", daemon=True)
        self.thread.start()
        print(f"llem-bench: starting vLLM AsyncLLM for {config.model}: {self.kwargs}", file=sys.stderr, flush=True)
        start = time.perf_counter()

        async def create() -> Any:  # inside the loop, so the output handler starts on it
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.kwargs),
                                             usage_context=UsageContext.OPENAI_API_SERVER)

        try:
            self.engine = self._call(create())
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - start

    def configure(self, config: ExperimentConfig) -> None:
        self.config = config

    def sender(self, config: ExperimentConfig):
        from llem_bench.backends.vllm import VLLMBackend

        helper = VLLMBackend()
        engine = self.engine

        async def send(request: PlannedRequest, record: RequestRecord) -> None:
            sampling = helper._sampling(config, request.output_tokens, delta=True)
            record.sent = now()
            counted = 0
            final = None
            async for out in engine.generate({"prompt_token_ids": request.prompt_token_ids}, sampling,
                                             request_id=f"llem-{uuid.uuid4().hex[:12]}"):
                arrived = now()
                new = len(out.outputs[0].token_ids)
                if new:
                    if record.first_token is None:
                        record.first_token = arrived
                    record.chunk_times.append(arrived)
                    record.chunk_tokens.append(new)
                    counted += new
                if out.finished:
                    record.finished = arrived
                    final = out
            record.output_tokens, record.counted_by = counted, "engine"
            metrics = getattr(final, "metrics", None)
            queued, scheduled = getattr(metrics, "queued_ts", 0.0), getattr(metrics, "scheduled_ts", 0.0)
            if queued and scheduled:
                record.engine_queue_ms = (scheduled - queued) * 1e3
            if record.finished is None:
                record.error = "the engine's stream ended without a finished output"

        return send, None, self.loop

    def reset_prefix_cache(self) -> dict[str, Any]:
        if self._call(self.engine.reset_prefix_cache()):
            return {"reset": True, "method": "AsyncLLM.reset_prefix_cache"}
        return {"reset": False, "reason": "AsyncLLM.reset_prefix_cache returned false"}

    def check_alive(self, grace_s: float = 0.0) -> None:
        if self.engine is not None and getattr(self.engine, "errored", False):
            raise RuntimeError("the vLLM async engine is dead (AsyncLLM.errored)")

    def synchronize(self) -> None:
        pass

    def cuda_ordinals(self) -> list[int]:
        if not self.on_gpu:
            return []
        import torch

        section = self.config.vllm if self.config is not None else None
        width = 1
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            width *= (getattr(section, name, None) or 1) if section is not None else 1
        return list(range(min(width, torch.cuda.device_count())))

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_mb(self) -> tuple[Optional[float], str]:
        return None, "not measured: the engine core runs in its own process"

    def queue_stamps_reason(self) -> str:
        if self.kwargs.get("disable_log_stats"):
            return "vLLM fills no per-request queue stamps with stats off (vllm.passthrough disable_log_stats: true)"
        return "vLLM returned no per-request queue stamps (RequestOutput.metrics)"

    def effective_config(self) -> dict[str, Any]:
        from llem_bench.backends.vllm import engine_settings

        return {"engine": "inprocess", "usage_context": "OPENAI_API_SERVER",
                **(engine_settings(self.engine.vllm_config) if self.engine is not None else {}),
                "engine_kwargs": {k: str(v) for k, v in self.kwargs.items()},
                "engine_start_s": round(self.start_s, 3) if self.start_s is not None else None}

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:
                pass
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self.thread is not None:
                self.thread.join(timeout=10)
            self.loop = None
