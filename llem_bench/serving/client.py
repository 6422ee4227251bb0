"""The load generator: a streaming OpenAI-compatible HTTP client on asyncio streams (no extra
dependency), one connection per request, every server-sent event stamped on arrival.

Token counts come from the server's own `usage.completion_tokens` (vLLM's `continuous_usage_stats`
puts it in every chunk), so a chunk that carries several tokens counts them all.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional
from urllib.parse import urlsplit

from llem_bench.workload.lengths import PlannedRequest

now = time.perf_counter  # the clock of the power sampler's marks


@dataclass
class RequestRecord:
    index: int
    input_tokens: int
    planned_output_tokens: int
    scheduled: float  # when the plan wanted it sent (open loop) or a slot freed (closed loop)
    sent: Optional[float] = None
    first_token: Optional[float] = None
    finished: Optional[float] = None
    chunk_times: list[float] = field(default_factory=list)  # one per event that carried tokens
    chunk_tokens: list[int] = field(default_factory=list)
    output_tokens: int = 0  # the server's count (usage), else the events with text
    counted_by: Optional[str] = None  # "usage" (the server's completion_tokens), "events" (no usage sent), "engine"
    cached_prompt_tokens: Optional[int] = None  # usage.prompt_tokens_details.cached_tokens, if reported
    engine_queue_ms: Optional[float] = None  # in-process engine only: scheduled - queued (vLLM's stamps)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finished is not None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Endpoint:
    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"only http://localhost servers are measured, got {base_url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base_url = base_url.rstrip("/")

    async def _open(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict, AsyncIterator[bytes], Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        if not match:
            writer.close()
            raise ConnectionError(f"bad HTTP status line {status_line[:80]!r}")
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return int(match.group(1)), headers, _body(reader, chunked, headers), writer

    async def get(self, path: str) -> tuple[int, bytes]:
        status, _, body, writer = await self._open("GET", path)
        try:
            return status, b"".join([part async for part in body])
        finally:
            writer.close()

    async def stream(self, payload: dict[str, Any], record: RequestRecord) -> None:
        """POST /v1/completions with stream: true and fill `record` with every event's arrival time."""
        body = json.dumps(payload).encode()
        record.sent = now()
        status, _, chunks, writer = await self._open("POST", "/v1/completions", body)
        try:
            if status != 200:
                text = b"".join([c async for c in chunks]).decode(errors="replace")
                record.error = f"HTTP {status}: {text[:300]}"
                return
            buffer, counted = b"", 0
            async for chunk in chunks:
                arrived = now()
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    for line in event.splitlines():
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            record.finished = arrived
                            continue
                        counted = _count(json.loads(data), counted, record, arrived)
            if record.finished is None:
                record.error = "stream ended without [DONE]"
            record.output_tokens = counted
            record.counted_by = record.counted_by or "events"
        finally:
            writer.close()


def _count(event: dict[str, Any], counted: int, record: RequestRecord, arrived: float) -> int:
    if "error" in event:
        raise RuntimeError(f"server error in stream: {event['error']}")
    usage = event.get("usage") or {}
    total = usage.get("completion_tokens")
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int):  # llama.cpp always; vLLM with --enable-prompt-tokens-details
        record.cached_prompt_tokens = cached
    texts = [c for c in event.get("choices") or [] if c.get("text") or c.get("token_ids")]
    if isinstance(total, int):
        record.counted_by = "usage"
    new = (total - counted) if isinstance(total, int) else len(texts)
    if new > 0:
        if record.first_token is None:
            record.first_token = arrived
        record.chunk_times.append(arrived)
        record.chunk_tokens.append(new)
        counted += new
    return counted


async def _body(reader: asyncio.StreamReader, chunked: bool, headers: dict) -> AsyncIterator[bytes]:
    if not chunked:
        if "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
            return
        while part := await reader.read(65536):
            yield part
        return
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


def completion_payload(model: str, request: PlannedRequest, decoding: Any, ignore_eos: bool, seed: int) -> dict:
    sampling = decoding.preset == "sampling"
    payload: dict[str, Any] = {
        "model": model, "prompt": request.prompt_token_ids, "max_tokens": request.output_tokens,
        "temperature": decoding.temperature if sampling else 0.0, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if sampling:
        payload.update(top_p=decoding.top_p, seed=seed + request.index)
        if decoding.top_k:
            payload["top_k"] = decoding.top_k
    if ignore_eos:  # vLLM / SGLang extensions: exactly the planned length
        payload.update(min_tokens=request.output_tokens, ignore_eos=True)
    return payload


@dataclass
class LoadRun:
    records: list[RequestRecord]
    start: float
    end: float
    client_cpu_s: float  # CPU time of the event-loop thread(s) (all parsing happens there), summed
    scrapes: list[dict[str, Any]]
    process_cpu_s: list[float] = field(default_factory=list)  # per load-generator process

    @property
    def busiest_cpu_fraction(self) -> float:
        """The busiest load-generator process's CPU time / run time: near 1, it may be the bottleneck."""
        busiest = max(self.process_cpu_s) if self.process_cpu_s else self.client_cpu_s
        return busiest / (self.end - self.start) if self.end > self.start else 0.0


Send = Callable[[PlannedRequest, RequestRecord], Awaitable[None]]


async def _drive(send: Send, plan: list[PlannedRequest], concurrency: Optional[int], open_loop: bool,
                 scrape: Optional[Callable[[], Awaitable[Optional[dict]]]], scrape_s: float,
                 start_at: Optional[float] = None) -> LoadRun:
    records = [RequestRecord(r.index, len(r.prompt_token_ids), r.output_tokens, 0.0) for r in plan]
    scrapes: list[dict[str, Any]] = []
    done = asyncio.Event()
    if start_at is not None:  # several processes share one start (perf_counter is system-wide on Linux)
        if now() > start_at + 0.05:
            raise RuntimeError(f"load-generator process ready {now() - start_at:.2f} s after the common start")
        await asyncio.sleep(max(0.0, start_at - now()))
    cpu0 = time.thread_time()
    start = start_at if start_at is not None else now()

    async def one(i: int) -> None:
        try:
            await send(plan[i], records[i])
        except Exception as exc:  # recorded per request; the scenario fails the run if any failed
            records[i].error = f"{type(exc).__name__}: {exc}"

    async def scraper() -> None:
        while not done.is_set():
            try:
                gauges = await scrape()
            except Exception:  # a server without /metrics: the timeline comes from the client alone
                return
            if gauges is not None:
                scrapes.append({"t": now(), **gauges})
            try:
                await asyncio.wait_for(done.wait(), scrape_s)
            except asyncio.TimeoutError:
                pass

    scrape_task = asyncio.create_task(scraper()) if scrape is not None and scrape_s > 0 else None
    if open_loop:
        limit = asyncio.Semaphore(concurrency) if concurrency else None

        async def scheduled(i: int) -> None:
            delay = start + plan[i].offset_s - now()
            if delay > 0:
                await asyncio.sleep(delay)
            records[i].scheduled = start + plan[i].offset_s
            if limit is None:
                await one(i)
            else:
                async with limit:
                    await one(i)

        await asyncio.gather(*(scheduled(i) for i in range(len(plan))))
    else:
        queue = list(range(len(plan)))[::-1]

        async def worker() -> None:
            while queue:
                i = queue.pop()
                records[i].scheduled = now()
                await one(i)

        await asyncio.gather(*(worker() for _ in range(concurrency or 1)))
    end = now()
    done.set()
    if scrape_task:
        await scrape_task
    cpu = time.thread_time() - cpu0
    return LoadRun(records, start, end, cpu, scrapes, [cpu])


def run_load(send: Send, plan: list[PlannedRequest], *, concurrency: Optional[int], open_loop: bool,
             scrape: Optional[Callable[[], Awaitable[Optional[dict]]]] = None, scrape_s: float = 0.0,
             loop: Optional[asyncio.AbstractEventLoop] = None) -> LoadRun:
    """Drive `plan` through `send`; on `loop` (an engine's own event loop thread) when given."""
    coroutine = _drive(send, plan, concurrency, open_loop, scrape, scrape_s)
    if loop is None:
        return asyncio.run(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def http_sender(base_url: str, make_payload: Callable[[PlannedRequest], dict]) -> tuple[Send, Callable]:
    """(send, scrape) against an OpenAI-compatible server."""
    endpoint = Endpoint(base_url)

    async def send(request: PlannedRequest, record: RequestRecord) -> None:
        await endpoint.stream(make_payload(request), record)

    async def scrape() -> Optional[dict]:
        status, body = await endpoint.get("/metrics")
        return parse_prometheus(body.decode(errors="replace")) if status == 200 else None

    return send, scrape


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)", re.M)
WANTED = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_queue_time_seconds_sum",
          "vllm:request_queue_time_seconds_count", "vllm:kv_cache_usage_perc",
          "llamacpp:requests_processing", "llamacpp:requests_deferred")  # llama-server --metrics


def parse_prometheus(text: str) -> dict[str, float]:
    """The few engine gauges the timeline uses, summed over label sets (e.g. engine replicas)."""
    out: dict[str, float] = {}
    for name, _, value in _SAMPLE.findall(text):
        if name in WANTED:
            out[name] = out.get(name, 0.0) + float(value)
    return out


# --- the load generator spread over processes (server mode) -----------------------------------------

def _shard(conn: Any, base_url: str, payload_args: tuple, plan: list[PlannedRequest], concurrency: Optional[int],
           open_loop: bool, scrape_s: float) -> None:
    model, decoding, ignore_eos, seed = payload_args
    send, scrape = http_sender(base_url, lambda r: completion_payload(model, r, decoding, ignore_eos, seed))
    try:
        conn.send("ready")
        start_at = conn.recv()  # the common start, once every process is ready
        conn.send(asyncio.run(_drive(send, plan, concurrency, open_loop, scrape if scrape_s > 0 else None,
                                     scrape_s, start_at)))
    except BaseException as exc:
        conn.send(exc)
    finally:
        conn.close()


def run_load_processes(base_url: str, payload_args: tuple, plan: list[PlannedRequest], *, processes: int,
                       concurrency: Optional[int], open_loop: bool, scrape_s: float = 0.0) -> LoadRun:
    """The plan dealt round-robin to `processes` load generators (spawned, so nothing of this process
    is inherited), all starting at one instant once each is ready; a closed loop's concurrency is
    split between them. Records come back merged in plan order; process 0 scrapes /metrics."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    shards = [plan[k::processes] for k in range(processes)]
    limits = [None if concurrency is None else concurrency // processes + (1 if k < concurrency % processes else 0)
              for k in range(processes)]
    if any(limit == 0 for limit in limits):
        raise ValueError(f"serving.client_processes ({processes}) exceeds the concurrency ({concurrency})")
    pipes, procs = [], []
    for k in range(processes):
        parent, child = context.Pipe()
        proc = context.Process(target=_shard, args=(child, base_url, payload_args, shards[k], limits[k], open_loop,
                                                    scrape_s if k == 0 else 0.0), daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    runs = []
    try:
        for parent in pipes:
            if not parent.poll(120) or parent.recv() != "ready":
                raise RuntimeError("a load-generator process did not get ready within 120 s")
        start_at = now() + 0.2
        for parent in pipes:
            parent.send(start_at)
        for parent in pipes:
            run = parent.recv()
            if isinstance(run, BaseException):
                raise RuntimeError(f"a load-generator process failed: {type(run).__name__}: {run}")
            runs.append(run)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    records = sorted((rec for run in runs for rec in run.records), key=lambda rec: rec.index)
    return LoadRun(records, start_at, max(r.end for r in runs), sum(r.client_cpu_s for r in runs),
                   runs[0].scrapes, [r.client_cpu_s for r in runs])
