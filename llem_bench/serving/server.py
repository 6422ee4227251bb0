"""An OpenAI-compatible server as the engine of a serving experiment: started on a free localhost
port in its own process group, polled until healthy, watched while it serves, and stopped with its
whole group (SIGTERM, then SIGKILL) so nothing is left running.

It stands where a loaded backend stands in the pool, so consecutive experiments with the same
load settings (a rate sweep) share one server start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from llem_bench.config.experiment import ExperimentConfig
from llem_bench.workload.synthetic import ensure_checkpoint, is_synthetic

VLLM_COMMAND = "{python} -m vllm.entrypoints.openai.api_server --model {model} --port {port} --host 127.0.0.1"
SERVED_NAME = "llem"
LOG_TAIL_LINES = 40


class ServerDied(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_flags(kwargs: dict[str, Any]) -> list[str]:
    """vLLM engine keyword arguments as `vllm serve` flags (True -> --x, False -> --no-x, dicts as JSON)."""
    flags: list[str] = []
    for key, value in kwargs.items():
        if key in ("model", "disable_log_stats") or value is None:
            continue  # the model is in the command; the server logs stats by default
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


class ServerBackend:
    """The Backend protocol over a server process: load = start and wait for health, close = stop."""

    streaming_method = "server-sent events stamped by the client on arrival (time.perf_counter)"

    def __init__(self) -> None:
        self.name = "vllm-server"
        self.tokenizer: Any = None
        self.proc: Optional[subprocess.Popen] = None
        self.command: list[str] = []
        self.base_url = ""
        self.model_name = SERVED_NAME
        self.log_path: Optional[Path] = None
        self.start_s: Optional[float] = None
        self.on_gpu = False
        self._resolved: dict[str, Any] = {}  # what the running server resolved, asked once

    def load(self, config: ExperimentConfig) -> None:
        from transformers import AutoTokenizer

        server = config.serving.server
        self._resolved = {}
        path = str(ensure_checkpoint(config.model)) if is_synthetic(config.model) else config.model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.on_gpu = _cuda_count() > 0
        if server.url:  # started elsewhere: measure it, never start or stop it
            self.base_url = server.url.rstrip("/")
            self._wait_healthy(server.health, server.start_timeout_s)
            self.model_name = self._served_model()
            return
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        fill = {"python": sys.executable, "model": path, "port": str(port)}
        if server.command is None:
            if config.backend != "vllm":
                raise ValueError(f"serving.server.command: needed for backend {config.backend} (only vLLM has a default)")
            from llem_bench.backends.vllm import VLLMBackend

            vllm = VLLMBackend()
            vllm.on_gpu = self.on_gpu
            self.command = [part.format(**fill) for part in shlex.split(VLLM_COMMAND)]
            self.command += ["--served-model-name", SERVED_NAME] + engine_flags(vllm.engine_kwargs(config, path))
        else:
            parts = shlex.split(server.command) if isinstance(server.command, str) else list(server.command)
            self.command = [part.format(**fill) for part in parts]
        self.log_path = Path(tempfile.mkstemp(prefix="llem-server-", suffix=".log")[1])
        print(f"llem-bench: starting server: {shlex.join(self.command)} (log {self.log_path})", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # vLLM serves POST /reset_prefix_cache only in dev mode: each run starts from an empty cache.
        env = dict(os.environ, VLLM_SERVER_DEV_MODE="1") if server.command is None else None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=_own_group_dying_with_parent)
        try:
            self._wait_healthy(server.health, server.start_timeout_s)
            self.model_name = self._served_model()
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - start

    def process_group(self) -> tuple[Optional[int], str]:
        """The server's process group (its leader's pid) where the suite started it, else why there is none."""
        if self.proc is not None:
            return self.proc.pid, ""
        return None, "a server started elsewhere (serving.server.url): its processes are not the suite's to read"

    def _wait_healthy(self, health: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.base_url + health, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not healthy at {self.base_url}{health} after {timeout_s:.0f} s\n{self.log_tail()}")

    def _served_model(self) -> str:
        with urllib.request.urlopen(self.base_url + "/v1/models", timeout=10) as reply:
            models = json.loads(reply.read())["data"]
        return models[0]["id"]

    def sender(self, config: ExperimentConfig):
        """(send, scrape, loop) for the load generator: HTTP against this server, on a fresh event loop."""
        from llem_bench.serving.client import completion_payload, http_sender

        send, scrape = http_sender(self.base_url, lambda request: completion_payload(
            self.model_name, request, config.decoding, config.workload.ignore_eos, config.workload.seed))
        return send, scrape, None

    def payload_args(self, config: ExperimentConfig) -> tuple:
        """What a spawned load-generator process needs to build its requests (picklable)."""
        return (self.model_name, config.decoding, config.workload.ignore_eos, config.workload.seed)

    def reset_prefix_cache(self) -> dict[str, Any]:
        """Empty the server's prefix cache (vLLM: POST /reset_prefix_cache), so a run never reuses the
        blocks of the previous experiment's identical prompts. A server without it says so."""
        request = urllib.request.Request(self.base_url + "/reset_prefix_cache", data=b"", method="POST")
        for _ in range(5):
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    body = json.loads(reply.read() or b"{}")
            except urllib.error.HTTPError as exc:
                return {"reset": False, "reason": f"POST /reset_prefix_cache answered HTTP {exc.code}"}
            if body.get("success", True):
                return {"reset": True, "method": "POST /reset_prefix_cache"}
            time.sleep(1)  # blocks still held by finishing requests
        return {"reset": False, "reason": "the server refused to reset its prefix cache 5 times"}

    def check_alive(self, grace_s: float = 0.0) -> None:
        """Raise ServerDied with the log tail if the server has exited; grace_s waits for an exit that
        failed requests suggest (a dying server drops its connections before its process is reaped)."""
        if self.proc is not None and grace_s > 0:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerDied(f"server exited with code {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no server log)"
        lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return "server log tail:\n" + "\n".join(lines)

    # --- the Backend protocol (the server does the work; these describe it) ---
    def configure(self, config: ExperimentConfig) -> None:
        self.config = config

    def synchronize(self) -> None:
        pass

    def cuda_ordinals(self) -> list[int]:
        """The GPUs the server uses: vLLM takes the first tp x pp x dp visible ones."""
        if not self.on_gpu:
            return []
        section = self.config.vllm if getattr(self, "config", None) is not None else None
        width = 1
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            width *= (getattr(section, name, None) or 1) if section is not None else 1
        return list(range(min(width, _cuda_count())))

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_mb(self) -> tuple[Optional[float], str]:
        return None, "not measured: the engine runs in the server process"

    def effective_config(self) -> dict[str, Any]:
        return {"engine": "server", "command": self.command, "url": self.base_url, "served_model": self.model_name,
                "server_start_s": round(self.start_s, 3) if self.start_s is not None else None,
                "started_here": self.proc is not None, **self.resolved_settings()}

    def resolved_settings(self) -> dict[str, Any]:
        """What a vLLM server resolved (the keys of backends.vllm.engine_settings), so compare can set its
        settings beside the offline and in-process engines': from GET /server_info (vLLM's dev mode, which
        the suite's own vLLM server runs in), else the step budget from its start-up log, else nothing.
        Asked once per server: what it resolved at start-up holds for every experiment it serves."""
        if self._resolved:
            return self._resolved
        self._resolved = self._ask_resolved_settings()
        return self._resolved

    def _ask_resolved_settings(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.base_url + "/server_info?config_format=json", timeout=10) as reply:
                config = json.loads(reply.read()).get("vllm_config")
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict):  # compilation left out: its JSON holds enum values, engine_settings names
            pick = lambda section, *names: {n: (config.get(section) or {}).get(n) for n in names}  # noqa: E731
            return {"settings_source": "GET /server_info",
                    "model": pick("model_config", "dtype", "max_model_len", "enforce_eager"),
                    "cache": pick("cache_config", "block_size", "enable_prefix_caching", "cache_dtype"),
                    "scheduler": pick("scheduler_config", "max_num_seqs", "max_num_batched_tokens",
                                      "enable_chunked_prefill", "async_scheduling")}
        logged = logged_scheduler(self.log_path.read_text(errors="replace")) if self.log_path else {}
        return {"settings_source": "server log", "scheduler": logged} if logged else {}

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)  # vLLM shuts its engine core down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.wait(timeout=10)


def logged_scheduler(log: str) -> dict[str, Any]:
    """The step token budget a vLLM server resolved, from its start-up log (the server exposes no API for
    it, and its default depends on the entry point and GPU), so compare can set it beside other engines'."""
    found = re.search(r"max_num_batched_tokens=(\d+)", log)
    return {"max_num_batched_tokens": int(found.group(1))} if found else {}


def _own_group_dying_with_parent() -> None:
    """In the server's child before exec: its own process group (stopped as a whole), and SIGTERM when
    the process that started it dies, even by SIGKILL (a worker killed with its group at a timeout
    or at session end), so no server outlives the study."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the group is already gone
        pass


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
