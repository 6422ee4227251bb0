"""Wiring checks: the `wiring` marker, and (with LLEM_WIRING_REPORT=path.json) a record of every
check's outcome for docs/parameters/wiring.md."""

import json
import os

import pytest

_OUTCOMES: dict[str, dict] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "wiring: proves a config field reaches the backend (pass/fail)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if item.get_closest_marker("wiring") and (report.when == "call" or report.skipped):
        backend = "vllm" if item.get_closest_marker("vllm") else "pytorch"
        reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else None
        name = item.callspec.id if hasattr(item, "callspec") else item.name
        _OUTCOMES[f"{backend}:{name}"] = {"outcome": report.outcome, "reason": reason}
    return report


def pytest_sessionfinish(session):
    path = os.environ.get("LLEM_WIRING_REPORT")
    if path and _OUTCOMES:
        previous = json.load(open(path)) if os.path.exists(path) else {}
        previous.update(_OUTCOMES)
        with open(path, "w") as handle:
            json.dump(previous, handle, indent=1, sort_keys=True)
