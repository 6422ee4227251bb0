"""Run an experiment in a separate process and bring its result back.

`subprocess` uses this interpreter; `venv:<python>` another one (e.g. a vLLM venv whose torch
and transformers pins clash with ours). The worker gets its own session so a timeout can kill
the whole process group: backends such as vLLM start children that must not keep the GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

import llem_bench
from llem_bench.config.errors import ConfigError
from llem_bench.config.study import Experiment
from llem_bench.isolation.protocol import experiment_to_json
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


def choose_runner(backend: str, option: Optional[str], study_runners: dict[str, str]) -> RunnerSpec:
    """Precedence: --llem-runner, then LLEM_RUNNER_<BACKEND>, then the study's runners:, then inprocess."""
    env_name = f"LLEM_RUNNER_{backend.upper()}"
    if option:
        return parse_runner(option, "--llem-runner")
    if os.environ.get(env_name):
        return parse_runner(os.environ[env_name], env_name)
    if backend in study_runners:
        return parse_runner(study_runners[backend], f"runners.{backend}")
    return RunnerSpec("inprocess")


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


def run_in_worker(spec: RunnerSpec, experiment: Experiment, *, run_id: str, started_at: str,
                  log_path: Path, timeout_s: Optional[float], docker: DockerOptions = DockerOptions()) -> ExperimentResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    series_dir = log_path.parent.parent / "timeseries"
    series_dir.mkdir(parents=True, exist_ok=True)
    container = f"llem-{os.getpid()}-{experiment.test_id}"[:120]
    with tempfile.TemporaryDirectory(prefix="llem-worker-") as tmp:
        request, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        if spec.kind == "docker":
            from llem_bench.isolation.docker import SERIES_DIR, docker_command

            os.chmod(tmp, 0o777)  # the container's user writes the result here
            command = docker_command(spec.image, Path(tmp), PACKAGE_ROOT, series_dir, container,
                                     docker.shm_size, docker.ipc_host)
            series_in_worker = SERIES_DIR
        else:
            command = [spec.python, "-m", "llem_bench.isolation.worker", str(request), str(result_path)]
            series_in_worker = str(series_dir)
        request.write_text(json.dumps({"experiment": experiment_to_json(experiment), "run_id": run_id,
                                       "started_at": started_at, "timeseries_dir": series_in_worker}))
        env = dict(os.environ)
        # The other interpreter imports this very llem_bench, installed there or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop(proc, spec, container)
                raise WorkerFailed(f"timed out after {timeout_s:.0f} s; process group killed\n{_tail(log_path)}")
            except BaseException:  # Ctrl-C: take the worker and its children down with us
                _stop(proc, spec, container)
                raise
            finally:
                _stop(proc, spec, container)  # orphans (e.g. engine cores) must not keep the GPU
        if not result_path.is_file():
            raise WorkerFailed(f"worker exited with {_describe(code)} without a result\n{_tail(log_path)}")
        try:
            return ExperimentResult.model_validate_json(result_path.read_text())
        except ValidationError as exc:
            raise WorkerFailed(f"worker wrote an unreadable result: {exc}\n{_tail(log_path)}") from None


def _stop(proc: subprocess.Popen, spec: RunnerSpec, container: str) -> None:
    if spec.kind == "docker" and proc.poll() is None:
        from llem_bench.isolation.docker import kill_container

        kill_container(container)  # killing the docker CLI alone would leave the container running
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}" + (" (killed: out of memory?)" if code == -9 else "")
    return f"exit code {code}"


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"last {len(lines)} lines of {log_path}:\n" + "\n".join(lines)
