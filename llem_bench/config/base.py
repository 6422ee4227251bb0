"""Shared pydantic base: strict keys, so a typo in a study never silently falls back to a default."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def knob(
    default: Any,
    description: str,
    *,
    upstream: str | None = None,
    effect: str | None = None,
    load: bool = False,
    **constraints: Any,
) -> Any:
    """A config field with the metadata the parameter reference and wiring checks need.

    `upstream` names the backend API the field maps to, `effect` its expected effect on
    energy/throughput/latency, `load` marks fields that change how the model is loaded
    (experiments that differ only in non-load fields can share one loaded model).
    """
    extra = {"upstream": upstream, "effect": effect, "load": load}
    return Field(default, description=description, json_schema_extra=extra, **constraints)


def is_load_field(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra or {}
    return bool(extra.get("load"))  # type: ignore[union-attr]
