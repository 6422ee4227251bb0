"""Turn pydantic validation errors into messages that name the YAML path and the fix."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A study or experiment configuration is invalid. The message is meant for the user."""


def allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at `loc` (the parent of a rejected key) inside `model`."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in_annotation(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_in_annotation(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in_annotation(arg)
        if found is not None:
            return found
    return None


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def format_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    where: Callable[[tuple[Any, ...]], str],
    source: str,
) -> str:
    """One line per problem: `<source>: <yaml path>: <what is wrong> (<fix>)`."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = where(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            choices = allowed_fields(model, loc[:-1])
            hint = did_you_mean(key, choices)
            lines.append(
                f"{source}: {path}: unknown key '{key}'.{hint} "
                f"Allowed keys here: {', '.join(choices)}."
            )
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{source}: {path}: {err['msg']}{shown}")
    return "\n".join(lines)
