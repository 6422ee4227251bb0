"""llama.cpp's server (llama-server) as the engine of the serving scenario, for real: every experiment of
studies/llamacpp-cpu-serving.yaml through the pool and the scenario, on a GGUF of synthetic:tiny
(docs/serving.md, "llama.cpp").

Runs when llama-server is on PATH (or LLEM_LLAMA_SERVER names it) and the GGUF is next to the test
cache's checkpoint, or LLEM_LLAMA_CPP names llama.cpp's sources to convert it from; skips with the
reason otherwise. Not in .ci/run: building llama-server takes ~7 minutes on 2 cores."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llem_bench.config.study import load_study
from llem_bench.energy.meter import make_energy_meter
from llem_bench.harness.pool import BackendPool
from llem_bench.harness.runner import run_experiment
from llem_bench.testing import assert_sound

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "llamacpp-cpu-serving.yaml"
HOW = "docs/serving.md, 'llama.cpp'"


@pytest.fixture(scope="module")
def server_binary() -> str:
    path = os.environ.get("LLEM_LLAMA_SERVER") or shutil.which("llama-server")
    if not path:
        pytest.skip(f"llama.cpp's llama-server is not on PATH and LLEM_LLAMA_SERVER is unset ({HOW})")
    return path


@pytest.fixture(scope="module")
def gguf(tiny_checkpoint) -> Path:
    path = Path(f"{tiny_checkpoint}-f32.gguf")
    if path.is_file():
        return path
    sources = os.environ.get("LLEM_LLAMA_CPP")
    if not sources:
        pytest.skip(f"no {path.name} beside the test cache's synthetic:tiny and LLEM_LLAMA_CPP (llama.cpp's "
                    f"sources, to convert it) is unset ({HOW})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, str(REPO / "tools" / "synthetic_gguf.py"), sources], env=env, check=True,
                   capture_output=True)
    return path


def test_llama_server_serves_the_study_at_exact_lengths_without_cache_hits(server_binary, gguf, tmp_path):
    _, experiments = load_study(STUDY)
    assert len(experiments) == 3  # rate 4, rate inf, closed loop at 4
    pool = BackendPool()
    try:
        for exp in experiments:
            exp.config.serving.server.command = exp.config.serving.server.command.replace(
                "llama-server", server_binary, 1)
            backend, reused, load_s = pool.acquire(exp.config)
            result = run_experiment(
                exp, backend, lambda ordinals, sampler=None: make_energy_meter("auto", ordinals, sampler),
                run_id="r", started_at="t", model_reused=reused, load_s=load_s, timeseries_dir=tmp_path)
            assert_sound(result)  # status ok, every request exactly its planned length, tok/s > 0
            assert result.token_check["requests"] == 24 and result.token_check["requests_off_plan"] == 0
            assert result.token_check["counted_by"] == {"usage": 24}  # the final event's usage reconciles the count
            assert result.effective["served_model"] == "llem"
            # no POST /reset_prefix_cache on llama-server: checked through its usage instead, and the
            # study's --no-cache-prompt --cache-ram 0 leave nothing to hit
            prefix = result.serving["prefix_cache"]
            assert prefix["reset"] is False and prefix["cached_prompt_tokens"] == 0
            assert not any("prefix cache" in w for w in result.warnings)
        pid = backend.proc.pid
    finally:
        pool.close()
    with pytest.raises(ProcessLookupError):  # the server's group is gone
        os.killpg(pid, 0)
