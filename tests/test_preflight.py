"""Bad input is caught before any model loads: a missing `model:`, and requests that cannot fit the
model's context or vLLM's max_model_len. Checked through the real `llem-bench validate` command and a
real pytest session, and as pure logic."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llem_bench.config import ConfigError
from llem_bench.config.context import model_context
from llem_bench.config.preflight import preflight
from llem_bench.config.study import parse_study

VLLM_TOO_LONG = textwrap.dedent("""
    study: too-long
    model: synthetic:tiny
    backend: vllm
    workload: {prompts: builtin:default, max_input_tokens: 600, output_tokens: 600}
    backends:
      vllm: {max_model_len: 512}
""")


def validate(path: Path, **env) -> subprocess.CompletedProcess:
    """`llem-bench validate` as a user runs it (the console script next to this interpreter)."""
    script = shutil.which("llem-bench", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "llem_bench.cli"]
    return subprocess.run([*command, "validate", str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def checked(raw: dict) -> list[str]:
    return preflight(parse_study(raw)[1])


def test_validate_refuses_a_study_without_a_model_and_says_how_to_fix_it(write_study):
    proc = validate(write_study("study: nomodel\nworkload: {output_tokens: 8}\n"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "model: required" in proc.stderr
    assert "model: synthetic:tiny" in proc.stderr and "Hugging Face id" in proc.stderr


def test_validate_refuses_prompt_plus_output_beyond_vllm_max_model_len(write_study):
    proc = validate(write_study(VLLM_TOO_LONG))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "workload.max_input_tokens (600; an upper bound" in err
    assert "workload.output_tokens (600) = 1200 tokens do not fit vllm.max_model_len (512)" in err
    assert "raise vllm.max_model_len to at least 1200" in err


def test_validate_says_when_an_hf_model_context_could_not_be_checked(write_study, tmp_path):
    study = write_study("study: hf\nmodel: some-org/some-model\n")
    proc = validate(study, HF_HUB_CACHE=str(tmp_path / "empty-hf-cache"), HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "could not check that" in proc.stderr and "not in the local Hugging Face cache" in proc.stderr


def test_the_pytest_header_says_what_could_not_be_checked(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    pytester.makepyfile(test_bench="def test_x(llem_experiment):\n    pass\n")
    pytester.makefile(".yaml", study="study: hf\nmodel: some-org/some-model\n")
    result = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["llem-bench: note: *could not check that*some-org/some-model*not in the local "
                                 "Hugging Face cache*"])


def test_a_pytest_session_stops_before_loading_anything(pytester, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLEM_CACHE_DIR", str(cache))  # a model load would build the checkpoint here
    pytester.makepyfile(test_bench="def test_x(llem_experiment, llem_run):\n    llem_run(llem_experiment)\n")
    pytester.makefile(".yaml", study=VLLM_TOO_LONG)
    result = pytester.runpytest_subprocess("--study", "study.yaml", "--llem-out", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid study:*", "*do not fit vllm.max_model_len (512)*"])
    assert not cache.exists() and not (pytester.path / "out").exists()


def test_a_model_named_per_experiment_or_per_sweep_needs_no_top_level_model():
    per_experiment = parse_study({"study": "s", "model": "synthetic:tiny", "experiments": [
        {"model": "synthetic:tiny"}, {"model": "synthetic:qwen-0.5b", "dtype": "bfloat16"}]})[1]
    assert [e.config.model for e in per_experiment] == ["synthetic:tiny", "synthetic:qwen-0.5b"]
    swept = parse_study({"study": "s", "sweep": {"model": ["synthetic:tiny", "synthetic:llama-1b"]}})[1]
    assert [e.config.model for e in swept] == ["synthetic:tiny", "synthetic:llama-1b"]
    with pytest.raises(ConfigError, match=r"experiments\[1\]\.model: required"):
        parse_study({"study": "s", "experiments": [{"model": "synthetic:tiny"}, {"dtype": "bfloat16"}]})


def test_synthetic_prompts_count_input_tokens_against_the_shape_context():
    raw = {"study": "s", "model": "synthetic:tiny",
           "workload": {"prompts": "synthetic", "input_tokens": 4000, "output_tokens": 97}}
    with pytest.raises(ConfigError, match=r"workload.input_tokens \(4000\) \+ workload.output_tokens \(97\) = 4097 "
                                          r"tokens are beyond the model's context \(4096: max_position_embeddings"):
        checked(raw)
    raw["workload"]["output_tokens"] = 96
    assert checked(raw) == []  # exactly the context fits


def test_a_longer_warmup_output_counts_too():
    raw = {"study": "s", "model": "synthetic:tiny", "workload": {"max_input_tokens": 4000, "output_tokens": 8},
           "measurement": {"warmup": {"output_tokens": 200}}}
    with pytest.raises(ConfigError, match=r"measurement.warmup.output_tokens \(200\)"):
        checked(raw)


def test_vllm_max_model_len_beyond_the_model_context_is_refused():
    raw = {"study": "s", "model": "synthetic:tiny", "backend": "vllm", "backends": {"vllm": {"max_model_len": 8192}}}
    with pytest.raises(ConfigError, match=r"vllm.max_model_len \(8192\) is beyond the model's context \(4096"):
        checked(raw)


def test_a_local_checkpoint_context_comes_from_its_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512, "n_positions": 1024}))
    raw = {"study": "s", "model": str(tmp_path), "workload": {"max_input_tokens": 500, "output_tokens": 13}}
    with pytest.raises(ConfigError, match=r"beyond the model's context \(512: max_position_embeddings in .*config.json"):
        checked(raw)
    (tmp_path / "config.json").write_text(json.dumps(
        {"max_position_embeddings": 512, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    assert model_context(str(tmp_path)).tokens == 2048  # as vLLM derives it
    assert checked(raw) == []


def test_a_checkpoint_without_a_context_length_is_a_note_not_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    [note] = checked({"study": "s", "model": str(tmp_path)})
    assert "could not check" in note and "names no context length" in note


@pytest.mark.parametrize("study", sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_study_passes_the_checks_before_loading(study):
    from llem_bench.config.study import load_study

    _, experiments = load_study(study)
    notes = preflight(experiments, str(study))  # synthetic shapes: nothing left unchecked, but two studies kept
    assert [n for n in notes if "leave vllm.max_num_batched_tokens unset" not in n] == []  # as run say that


def test_offline_beside_serving_with_the_step_budget_unset_is_a_note():
    raw = {"study": "s", "model": "synthetic:tiny", "backend": "vllm",
           "experiments": [{"scenario": "offline"}, {"scenario": "serving", "serving": {"rate": 4}}]}
    assert any("resolves it per entry point" in n and "set vllm.max_num_batched_tokens" in n for n in checked(raw))
    pinned = {**raw, "backends": {"vllm": {"max_num_batched_tokens": 4096}}}
    assert checked(pinned) == []
    serving_only = {**raw, "experiments": [{"scenario": "serving", "serving": {"rate": r}} for r in (4, 8)]}
    assert checked(serving_only) == []
