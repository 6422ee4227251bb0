"""Assertions shared by the benchmark tests: an experiment passes only if its numbers are sound."""

from __future__ import annotations

from typing import Optional

from llem_bench.results.schema import ExperimentResult

# Set from --llem-allow-invalid by the plugin (pytest_configure): demonstrations such as the warmup
# trap produce `invalid` results on purpose.
ALLOW_INVALID = False


def assert_sound(result: ExperimentResult, allow_invalid: Optional[bool] = None) -> None:
    assert result.status == "ok", result.error
    allow = ALLOW_INVALID if allow_invalid is None else allow_invalid
    verdict = (result.validity or {}).get("verdict")
    assert allow or verdict != "invalid", (
        f"verdict invalid: {'; '.join(result.validity.get('reasons', []))} (pass --llem-allow-invalid to accept "
        "invalid results, e.g. for a demonstration)")
    assert result.token_check.get("ok"), f"token counts off the plan: {result.token_check}"
    for metric in ("output_tokens_per_s", "requests_per_s", "wall_time_s"):
        summary = result.metrics.get(metric)
        assert summary is not None and summary.mean > 0, f"{metric} missing or not positive"
    if result.energy.get("available"):
        energy = result.metrics.get("energy_per_output_token_j")
        assert energy is not None and energy.mean > 0, "energy was measurable but no positive J/token came out"
    else:
        assert result.unavailable.get("energy_per_output_token_j"), "energy is null without a reason"
