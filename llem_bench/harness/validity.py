"""One verdict per result, with the reasons: valid, warning (usable, read the reasons) or invalid."""

from __future__ import annotations

from typing import Any, Optional

HIGH_CV = 0.05
INVALID_CV = 0.25
SHORT_WINDOW_S = 5.0


def verdict(*, energy_available: bool, energy_reason: Optional[str], token_ok: bool, cvs: dict[str, Optional[float]],
            window_s: float, throttling: list[str], cross_check: Optional[dict], other_processes: list[str]) -> dict[str, Any]:
    invalid, warning = [], []
    if not token_ok:
        invalid.append("token counts do not match the plan")
    if not energy_available:
        warning.append(f"energy unavailable: {energy_reason}")
    elif window_s < SHORT_WINDOW_S:
        warning.append(f"measured windows of {window_s:.1f} s are short for a ~100 ms energy counter "
                       f"(>= {SHORT_WINDOW_S:.0f} s keeps quantisation under ~2%)")
    for name, cv in cvs.items():
        if cv is None:
            continue
        if cv > INVALID_CV:
            invalid.append(f"{name} CV {cv:.1%} across cycles (> {INVALID_CV:.0%})")
        elif cv > HIGH_CV:
            warning.append(f"{name} CV {cv:.1%} across cycles (> {HIGH_CV:.0%})")
    if throttling:
        warning.append(f"GPU throttled in the measured windows: {', '.join(throttling)}")
    if cross_check and cross_check.get("agree") is False:
        warning.append(f"energy counter and integrated power samples disagree by "
                       f"{cross_check['relative_difference']:+.1%} (> {cross_check['threshold']:.0%})")
    if other_processes:
        warning.append(f"other processes on the GPU: {', '.join(other_processes)}")
    return {"verdict": "invalid" if invalid else "warning" if warning else "valid", "reasons": invalid + warning}
