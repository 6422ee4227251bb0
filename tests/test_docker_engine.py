"""docker:<image> runner against a real Docker engine: a Ctrl-C and a timeout each stop the
experiment's container, and nothing is left running.

Needs an engine and a local image with this project's Python dependencies; CI builds one with
`.ci/docker-image.sh llem-ci-python .venv` (no registry needed) and sets LLEM_DOCKER_IMAGE. Without
them every test here skips and says so.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_plugin import BENCH
from test_lifecycle import sigint_default

IMAGE = os.environ.get("LLEM_DOCKER_IMAGE", "llem-ci-python")
HOW = (f"start a Docker engine, build the image with '.ci/docker-image.sh {IMAGE} .venv' and set "
       f"LLEM_DOCKER_IMAGE={IMAGE} (.ci/run does all three)")


def _engine_and_image() -> str:
    """Why these tests cannot run here; empty when they can."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
            return "no Docker engine answers 'docker info'"
        if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30).returncode != 0:
            return f"image {IMAGE!r} is not present locally"
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer in 30 s"
    return ""


WHY_NOT = _engine_and_image()
if WHY_NOT and os.environ.get("LLEM_DOCKER_REQUIRED"):  # CI made the engine available: a skip would hide it
    pytest.fail(f"LLEM_DOCKER_REQUIRED is set but {WHY_NOT}", pytrace=False)
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"{WHY_NOT}: {HOW}")

# One experiment that measures for ten minutes unless it is stopped.
LONG = """\
study: dock
model: synthetic:tiny
dtype: float32
workload: {num_prompts: 2, max_input_tokens: 16, output_tokens: 4}
measurement: {cycles: 2, warmup: {max_runs: 1}, min_window_s: 600}
backends: {pytorch: {batch_size: 2}}
"""


@pytest.fixture
def project(pytester, tiny_checkpoint):
    pytester.makepyfile(test_bench=BENCH)
    pytester.makefile(".yaml", study=LONG)
    return pytester


def containers(pid: int, every: bool = False) -> list[str]:
    """Containers of the pytest process `pid` (the runner names them llem-<pid>-<test id>)."""
    out = subprocess.run(["docker", "ps", "-q", *(["-a"] if every else []), "--filter", f"name=llem-{pid}-"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def wait_for(predicate, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)  # polling docker, bounded by the deadline
    return False


def start(project, *args):
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--study", "study.yaml",
                             "--llem-out", "out", "--llem-run-id", "r", "--llem-runner", f"docker:{IMAGE}", *args],
                            cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,  # its own group: Ctrl-C goes to it as a terminal sends it
                            preexec_fn=sigint_default)


def finish(proc, timeout_s: float) -> str:
    try:
        return proc.communicate(timeout=timeout_s)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_stops_the_container_and_nothing_is_left_running(project):
    proc = start(project)
    try:
        assert wait_for(lambda: containers(proc.pid) or proc.poll() is not None, 180)
        assert proc.poll() is None, f"pytest ended before the container started:\n{finish(proc, 10)[-3000:]}"
        # inside the experiment (the worker has loaded the model) rather than still starting up
        log = project.path / "out" / "dock" / "r" / "logs"
        assert wait_for(lambda: any("llem-bench: loading" in p.read_text() for p in log.glob("*.log")), 180), \
            [p.read_text()[-2000:] for p in log.glob("*.log")]
        os.killpg(proc.pid, signal.SIGINT)
        out = finish(proc, 120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert containers(proc.pid, every=True) == []  # stopped and removed (--rm)
    manifest = json.loads((project.path / "out" / "dock" / "r" / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"


def test_a_timeout_stops_the_container_and_fails_only_that_experiment(project):
    proc = start(project, "--llem-timeout", "30")
    out = finish(proc, 300)
    assert proc.returncode == 1, out[-3000:]
    assert containers(proc.pid, every=True) == []
    [result] = (project.path / "out" / "dock" / "r" / "results").glob("*.json")
    failed = json.loads(result.read_text())
    assert failed["status"] == "failed" and "timed out after 30 s; container killed" in failed["error"], failed["error"]
