"""Wiring checks: the `wiring` marker, and (with LLEM_WIRING_REPORT=path.json) a record of every
check's outcome, merged into that file, for docs/parameters/wiring.md
(`python -m llem_bench.config.paramdocs --wiring path.json`)."""

import json
import os

import pytest

_OUTCOMES: dict[str, dict] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "wiring: proves a config field reaches the backend (pass/fail)")


def _where(backend: str) -> str:
    """The machine and library versions a check ran on."""
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    except Exception:
        device = "CPU"
    try:
        if backend == "vllm":
            import vllm

            return f"{device}, vllm {vllm.__version__}"
        if backend == "tensorrt":
            import tensorrt_llm

            return f"{device}, tensorrt_llm {tensorrt_llm.__version__}"
        import transformers

        return f"{device}, transformers {transformers.__version__}"
    except Exception:
        return device


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if item.get_closest_marker("wiring") and (report.when == "call" or (report.skipped and report.when == "setup")):
        backend = next((b for b in ("vllm", "tensorrt") if item.get_closest_marker(b)), "pytorch")
        name = item.callspec.id if hasattr(item, "callspec") else item.name
        reason = None
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:  # the assertion or error message, not the file:line pytest ends its report with
            crash = getattr(report.longrepr, "reprcrash", None)
            text = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1]
            reason = text.strip().splitlines()[0][:300]
        _OUTCOMES[f"{backend}:{name}"] = {"outcome": report.outcome, "reason": reason, "where": _where(backend)}
    return report


def pytest_sessionfinish(session):
    path = os.environ.get("LLEM_WIRING_REPORT")
    if path and _OUTCOMES:
        previous = json.load(open(path)) if os.path.exists(path) else {}
        previous.update(_OUTCOMES)
        with open(path, "w") as handle:
            json.dump(previous, handle, indent=1, sort_keys=True)
