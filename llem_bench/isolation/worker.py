"""Worker entry point, run in this interpreter or another one (a venv or a container with its own
backend pins). Writes each ExperimentResult atomically.

  python -m llem_bench.isolation.worker REQUEST.json RESULT.json
      one experiment; exit 0 with status ok, 1 with a failed result (the docker: runner)
  python -m llem_bench.isolation.worker --serve
      experiments of one load group, one JSON line each on stdin ({"request", "result", "log"});
      the loaded model is kept between them; one line back on stdout when a result is written
      ({"code": ...}), and before it any number of progress lines ({"progress": "..."}) that the
      controller shows on its terminal
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path

# Backends are imported inside the functions: in --serve mode nothing may print to the reply
# channel, so stdout is redirected before anything heavy (torch, vLLM) is imported.


def run_one(request_path: str, result_path: str, pool) -> int:
    from llem_bench.energy.meter import make_energy_meter
    from llem_bench.harness.runner import failed_result, run_experiment
    from llem_bench.isolation.protocol import experiment_from_json
    from llem_bench.results.store import write_json_atomic

    request = json.loads(Path(request_path).read_text())
    experiment = experiment_from_json(request["experiment"])
    run_id, started = request["run_id"], request["started_at"]
    try:
        backend, reused, load_s = pool.acquire(experiment.config)
        result = run_experiment(
            experiment, backend,
            lambda ordinals, sampler=None: make_energy_meter(experiment.config.measurement.energy, ordinals, sampler),
            run_id=run_id, started_at=started, model_reused=reused, load_s=load_s,
            idle_before_load=pool.idle_before_load,
            timeseries_dir=Path(request["timeseries_dir"]) if request.get("timeseries_dir") else None,
        )
        code = 0
    except Exception as exc:
        traceback.print_exc()
        result = failed_result(experiment, run_id, started, f"{type(exc).__name__}: {exc}")
        code = 1
        pool.close()  # a failure may leave the backend in a bad state: the next experiment reloads
    write_json_atomic(Path(result_path), result.model_dump(mode="json"))
    return code


def main(request_path: str, result_path: str) -> int:
    from llem_bench.backends.pytorch_tp import launched
    from llem_bench.harness.pool import BackendPool

    if launched():
        _die_with_parent()
    pool = BackendPool()
    try:
        if launched() and os.environ["RANK"] != "0":
            return follow(request_path, pool)
        return run_one(request_path, result_path, pool)
    finally:
        pool.close()


def follow(request_path: str, pool) -> int:
    """A torchrun rank other than 0 (pytorch.tp_plan): load the same shards and join every pass rank 0
    runs. Rank 0 alone measures and writes the result."""
    from llem_bench.isolation.protocol import experiment_from_json

    experiment = experiment_from_json(json.loads(Path(request_path).read_text())["experiment"])
    backend, _, _ = pool.acquire(experiment.config)
    passes = backend.follow_leader()
    print(f"llem-bench: rank {os.environ['RANK']} ran {passes} passes with rank 0", file=sys.stderr, flush=True)
    return 0


def _die_with_parent() -> None:
    """A torchrun rank runs in a session of its own: when torchrun dies, even by SIGKILL (a timeout, the
    controller gone), the rank must not keep its GPU."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)  # torchrun died before the line above took effect


def _die_with_controller() -> None:
    """When the pytest process that started this worker dies, even by SIGKILL, take this worker's process
    group (the backend's engine processes included) down too: nothing may keep the GPU after the study is
    gone. The worker leads its own group (the runner starts it in a new session)."""
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM us when it dies
    if str(os.getppid()) != os.environ.get("LLEM_CONTROLLER_PID", str(os.getppid())):
        os.killpg(0, signal.SIGKILL)  # it died before the line above took effect


def serve() -> int:
    _die_with_controller()
    # stdout is the reply channel; everything printed (ours, the backend's) goes to the experiment's log.
    # os.dup gives a non-inheritable fd: a backend's child processes never hold the channel open.
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from llem_bench import progress
    from llem_bench.harness.pool import BackendPool

    def forward(message: str, window_s=None) -> None:
        print(f"llem-bench: {message}", file=sys.stderr, flush=True)  # the experiment's log keeps it too
        reply.write(json.dumps({"progress": message, "window_s": window_s}) + "\n")
        reply.flush()

    progress.set_sink(forward)

    pool = BackendPool()
    try:
        for line in sys.stdin:
            job = json.loads(line)
            _log_to(job["log"])
            code = run_one(job["request"], job["result"], pool)
            reply.write(json.dumps({"code": code}) + "\n")
            reply.flush()
    finally:
        pool.close()
    return 0


def _log_to(path: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main(sys.argv[1], sys.argv[2]))
