"""Run an experiment in a separate process and bring its result back.

`subprocess` uses this interpreter; `venv:<python>` another one (e.g. a vLLM venv whose torch
and transformers pins clash with ours); `docker:<image>` a container. The worker gets its own
session so a timeout or Ctrl-C can kill the whole process group: backends such as vLLM start
children that must not keep the GPU.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pydantic import ValidationError

import llem_bench
from llem_bench.backends.base import load_key
from llem_bench.config.errors import ConfigError
from llem_bench.config.study import Experiment
from llem_bench.isolation.protocol import experiment_to_json
from llem_bench.isolation.torchrun import needs_torchrun
from llem_bench.results.schema import ExperimentResult

PACKAGE_ROOT = Path(llem_bench.__file__).resolve().parent.parent
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class RunnerSpec:
    kind: str  # inprocess | subprocess | venv | docker
    python: Optional[str] = None
    image: Optional[str] = None

    def __str__(self) -> str:
        return {"venv": f"venv:{self.python}", "docker": f"docker:{self.image}"}.get(self.kind, self.kind)


@dataclass(frozen=True)
class DockerOptions:
    shm_size: str = "8g"
    ipc_host: bool = False


def parse_runner(text: str, where: str) -> RunnerSpec:
    if text in ("inprocess", "subprocess"):
        return RunnerSpec(text, None if text == "inprocess" else sys.executable)
    if text.startswith("venv:"):
        python = text[len("venv:"):]
        if not python:
            raise ConfigError(f"{where}: 'venv:' needs an interpreter path, e.g. venv:.venv-vllm/bin/python")
        return RunnerSpec("venv", python)
    if text.startswith("docker:"):
        image = text[len("docker:"):]
        if not image:
            raise ConfigError(f"{where}: 'docker:' needs an image, e.g. docker:vllm/vllm-openai:v0.26.0")
        return RunnerSpec("docker", image=image)
    raise ConfigError(f"{where}: unknown runner {text!r}; use inprocess, subprocess, venv:<path to python> "
                      "or docker:<image>")


def choose_runner(backend: str, option: Optional[str], study_runners: dict[str, str],
                  gpu_host: bool = False) -> RunnerSpec:
    """Precedence: --llem-runner, then LLEM_RUNNER_<BACKEND>, then the study's runners:, then the
    default: subprocess on a host with GPUs (GPU memory and CUDA state cannot leak from one load
    group into the next, and a crash or hang costs one experiment), inprocess on a CPU-only host."""
    env_name = f"LLEM_RUNNER_{backend.upper()}"
    if option:
        return parse_runner(option, "--llem-runner")
    if os.environ.get(env_name):
        return parse_runner(os.environ[env_name], env_name)
    if backend in study_runners:
        return parse_runner(study_runners[backend], f"runners.{backend}")
    return parse_runner("subprocess" if gpu_host else "inprocess", "default runner")


def check_runner(spec: RunnerSpec, where: str, need_gpus: bool = False) -> None:
    """Pre-flight: fail before any experiment when the runner cannot work."""
    if spec.kind == "venv" and not (Path(spec.python).is_file() and os.access(spec.python, os.X_OK)):
        raise ConfigError(f"{where}: interpreter {spec.python!r} does not exist or is not executable "
                          "(create the venv first, see README)")
    if spec.kind == "docker":
        from llem_bench.isolation.docker import preflight

        preflight(spec.image, need_gpus)


class WorkerFailed(RuntimeError):
    """The worker died or hung without writing a result."""


class Workers:
    """Runs experiments out of process and keeps the subprocess/venv worker of the current load group
    alive: consecutive experiments with the same load settings (pytest orders them so) reuse its
    loaded model, as the in-process runner does. A docker: worker is one container per experiment.

    Each experiment gets `<run>/worker-io/<test-id>/` (request and result, mounted into a container)
    and its own log, `<run>/logs/<test-id>.log`.
    """

    def __init__(self, run_path: Path, timeout_s: Optional[float], docker: DockerOptions = DockerOptions(),
                 progress: Optional[Callable[..., None]] = None, idle: Optional[Callable[[], None]] = None):
        self.run_path, self.timeout_s, self.docker = Path(run_path), timeout_s, docker
        self.progress = progress  # where the worker's progress lines go (the controller's terminal)
        self.idle = idle  # called about once a second while the worker says nothing (a countdown)
        self._proc: Optional[subprocess.Popen] = None
        self._key: Optional[tuple[str, str]] = None

    def run(self, spec: RunnerSpec, experiment: Experiment, *, run_id: str, started_at: str) -> ExperimentResult:
        test_id = experiment.key  # one log and io folder per run (repeats: <test_id>-r<k>)
        log_path = self.run_path / "logs" / f"{test_id}.log"
        series_dir = self.run_path / "timeseries"
        io_dir = self.run_path / "worker-io" / test_id
        for folder in (log_path.parent, series_dir, io_dir):
            folder.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        request, result_path = io_dir / "request.json", io_dir / "result.json"
        result_path.unlink(missing_ok=True)
        in_container = spec.kind == "docker"
        request.write_text(json.dumps({"experiment": experiment_to_json(experiment), "run_id": run_id,
                                       "started_at": started_at,
                                       "timeseries_dir": _container_series() if in_container else str(series_dir)}))
        try:
            if in_container:
                self.close()
                code = self._run_container(spec, io_dir, series_dir, log_path, test_id, experiment.backend)
            elif needs_torchrun(experiment.config):
                self.close()
                code = self._run_torchrun(spec, experiment, request, result_path, log_path)
            else:
                code = self._serve(spec, experiment, request, result_path, log_path)
            if not result_path.is_file():
                raise WorkerFailed(f"worker exited with {_describe(code)} without a result\n{_tail(log_path)}")
            try:
                return ExperimentResult.model_validate_json(result_path.read_text())
            except ValidationError as exc:
                raise WorkerFailed(f"worker wrote an unreadable result: {exc}\n{_tail(log_path)}") from None
        finally:
            shutil.rmtree(io_dir, ignore_errors=True)  # files a container wrote as root may stay
            try:
                io_dir.parent.rmdir()
            except OSError:
                pass  # not empty (a container's leftovers) or already gone

    def _serve(self, spec: RunnerSpec, experiment: Experiment, request: Path, result_path: Path,
               log_path: Path) -> Optional[int]:
        """Hand the experiment to the group's worker; None once it replied, else its exit status."""
        key = (str(spec), load_key(experiment.config))
        if self._key != key or self._proc is None or self._proc.poll() is not None:
            self.close()
            with open(log_path, "a") as log:  # startup output goes to the first experiment's log
                self._proc = subprocess.Popen([spec.python, "-m", "llem_bench.isolation.worker", "--serve"],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                              env=_worker_env(), start_new_session=True, text=True)
            self._key = key
        proc = self._proc
        try:
            proc.stdin.write(json.dumps({"request": str(request), "result": str(result_path),
                                         "log": str(log_path)}) + "\n")
            proc.stdin.flush()
            outcome = self._reply(proc)
            if outcome == "reply":
                return None
            if outcome == "timeout":
                self.close()
                raise WorkerFailed(f"timed out after {self.timeout_s:.0f} s; process group killed\n{_tail(log_path)}")
        except BrokenPipeError:
            pass  # it died before reading the request: reported below with its exit status
        except BaseException:  # Ctrl-C: take the worker and its children down with us
            self.close()
            raise
        code = proc.wait()
        self.close()  # orphans (e.g. engine cores) must not keep the GPU
        return code

    def _reply(self, proc: subprocess.Popen) -> str:
        """Wait for the worker's reply line: "reply", "died" or "timeout". Looks at the worker every
        second as well: a child it forked (a vLLM engine core) may hold the pipe open after it died."""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return "timeout"
            line = _buffered_line(proc)
            if line is None:
                ready, _, _ = select.select([proc.stdout], [], [], wait)
                if ready:
                    # Raw reads: a buffered readline would leave later lines in Python's buffer, where
                    # select() cannot see them (the worker's reply after its progress lines).
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        return "died"
                    proc.llem_pending = getattr(proc, "llem_pending", b"") + chunk
                    line = _buffered_line(proc)
            if line is not None:
                message = _progress_of(line)
                if message is None:
                    return "reply"
                if self.progress is not None:
                    self.progress(*message)
                continue
            if proc.poll() is not None:
                return "died"
            if self.idle is not None:
                self.idle()

    def _run_torchrun(self, spec: RunnerSpec, experiment: Experiment, request: Path, result_path: Path,
                      log_path: Path) -> int:
        from llem_bench.isolation import torchrun
        from llem_bench.scaleout.gpus import node_gpus

        try:
            return torchrun.launch(torchrun.python_of(spec), experiment.config, node_gpus(), request, result_path,
                                   log_path, _worker_env(), self.timeout_s)
        except TimeoutError as exc:
            raise WorkerFailed(f"{exc}\n{_tail(log_path)}") from None

    def _run_container(self, spec: RunnerSpec, io_dir: Path, series_dir: Path, log_path: Path, test_id: str,
                       backend: str) -> int:
        from llem_bench.isolation.docker import docker_command, gpu_request, kill_container

        os.chmod(io_dir, 0o777)  # the container's user writes the result here
        name = f"llem-{os.getpid()}-{test_id}"[:120]
        gpus = gpu_request(host_has_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        command = docker_command(spec.image, io_dir, PACKAGE_ROOT, series_dir, name,
                                 self.docker.shm_size, self.docker.ipc_host, gpus=gpus, backend=backend)
        with open(log_path, "a") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_worker_env(),
                                    start_new_session=True)
            try:
                return proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise WorkerFailed(f"timed out after {self.timeout_s:.0f} s; container killed\n{_tail(log_path)}")
            finally:
                running = proc.poll() is None
                _kill_group(proc)
                if running:  # killing the docker CLI alone would leave the container running
                    kill_container(name)

    def close(self) -> None:
        """Stop the current worker and everything it started."""
        if self._proc is not None:
            _kill_group(self._proc)
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc, self._key = None, None


def _progress_of(line: str) -> Optional[tuple[str, Optional[float]]]:
    """(message, window_s) of a worker's progress line; None for its reply."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or "progress" not in data:
        return None
    return data["progress"], data.get("window_s")


def _container_series() -> str:
    from llem_bench.isolation.docker import SERIES_DIR

    return SERIES_DIR


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The other interpreter imports this very llem_bench, installed there or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    env["LLEM_CONTROLLER_PID"] = str(os.getpid())  # a worker whose controller is gone stops (worker --serve)
    return env


def host_has_gpus() -> bool:
    try:
        from llem_bench.energy.gpus import nvml_init

        return nvml_init().nvmlDeviceGetCount() > 0
    except Exception:
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _describe(code: Optional[int]) -> str:
    if code is None:
        return "a reply"
    if code < 0:
        return f"signal {signal.Signals(-code).name}" + (" (killed: out of memory?)" if code == -9 else "")
    return f"exit code {code}"


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"last {len(lines)} lines of {log_path}:\n" + "\n".join(lines)


def _buffered_line(proc: subprocess.Popen) -> Optional[str]:
    """The next complete line the worker wrote, from what was read so far, or None."""
    pending = getattr(proc, "llem_pending", b"")
    if b"\n" not in pending:
        return None
    line, proc.llem_pending = pending.split(b"\n", 1)
    return line.decode() + "\n"

