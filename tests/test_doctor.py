"""Runs the real doctor on this machine (nothing mocked) and checks it against what we observe
independently: NVML, torch, transformers and docker probed directly here."""

import shutil
import subprocess

import pytest

from llem_bench.doctor import doctor_report, render_doctor


@pytest.fixture(scope="module")
def report():
    return doctor_report()


@pytest.fixture(scope="module")
def text(report):
    return render_doctor(report)


def nvml_error():
    """None when NVML initialises here, else its error."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        return exc
    return None


def test_python_and_torch(report, text):
    import platform

    import torch

    assert report["python"] == platform.python_version() and report["python"] in text
    t = report["torch"]
    assert t["installed"] and t["version"] == torch.__version__
    assert t["cuda_available"] == torch.cuda.is_available()
    if not t["cuda_available"]:
        assert t["reason"] and f"torch CUDA      no   -- {t['reason']}" in text


def test_nvml_matches_this_machine(report, text):
    error = nvml_error()
    nv = report["nvml"]
    if error is not None:  # e.g. this CPU-only box: no GPU, so no energy, each with a reason
        assert nv["available"] is False and str(error) in nv["reason"]
        assert nv["energy_counter"] is False and nv["power_sampling"] is False
        for label in ("NVML", "GPU energy", "power sampling"):
            assert f"{label:<16}no   -- {nv['reason']}" in text
    else:
        import pynvml

        assert nv["available"] and len(nv["gpus"]) == pynvml.nvmlDeviceGetCount()
        for gpu in nv["gpus"]:
            assert gpu["uuid"] in text
            assert gpu["energy_counter"] or gpu["energy_counter_reason"]
        assert nv["power_sampling"] or nv["power_sampling_reason"]


def test_backends_and_zeus(report, text):
    import transformers

    b = report["backends"]
    assert b["transformers"]["versions"]["transformers"] == transformers.__version__
    assert f"transformers    yes  transformers {transformers.__version__}" in text
    for name in ("vllm", "tensorrt_llm"):
        assert b[name]["installed"] or b[name]["reason"].startswith("not installed")
    if not b["tensorrt_llm"]["installed"]:  # where it would run instead, as the tensorrt benchmarks say
        assert "--llem-runner docker:nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in b["tensorrt_llm"]["reason"]
        assert name in text
    zeus = report["zeus"]
    assert zeus["installed"] or "not installed" in zeus["reason"]
    assert text.count("\nzeus ") == 1


def test_docker_matches_this_machine(report, text):
    d = report["docker"]
    cli = shutil.which("docker")
    assert d["cli"] == cli
    if cli is None:
        assert d["reason"] == "docker CLI not found on PATH" and "docker CLI      no" in text
        return
    assert f"docker CLI      yes  {cli}" in text
    probe = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        assert d["engine"] is True and "docker engine   yes" in text
    else:  # CLI present, engine unreachable: the reason is docker's own last stderr line
        last = [line.strip() for line in probe.stderr.splitlines() if line.strip()][-1]
        assert d["engine"] is False and d["reason"] == last
        assert f"docker engine   no   -- {last}" in text


def test_render_is_small_and_every_no_has_a_reason(text):
    lines = text.splitlines()
    assert lines[0] == "llem-bench doctor" and len(lines) < 40
    for line in lines:
        if line[16:19] == "no ":
            assert " -- " in line, line
