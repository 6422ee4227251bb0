"""Per-request input and output lengths, and the request plan of a serving experiment.

The plan is built once per experiment from `serving.seed`, so every backend, engine and repeat
gets the same requests: the same prompt token ids, the same output lengths, the same arrival offsets.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llem_bench.config.errors import ConfigError
from llem_bench.config.serving import LengthSpec


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    offset_s: float  # open loop: when it is sent, after the run starts; closed loop: unused (0)
    prompt_token_ids: list[int]
    output_tokens: int


def sample_lengths(spec: LengthSpec, n: int, rng: random.Random, where: str) -> list[int]:
    """n lengths from `spec`; normal and lognormal are clipped to [min, max] (lognormal's mean and
    std are those of the lengths, not of the log)."""
    hi = spec.max if spec.max is not None else 10**9
    clip = lambda x: int(min(hi, max(spec.min, round(x))))  # noqa: E731
    if spec.dist == "fixed":
        return [clip(spec.value)] * n
    if spec.dist == "uniform":
        return [rng.randint(spec.min, hi) for _ in range(n)]
    if spec.dist == "normal":
        return [clip(rng.gauss(spec.mean, spec.std)) for _ in range(n)]
    if spec.dist == "lognormal":
        sigma2 = math.log(1 + (spec.std / spec.mean) ** 2)
        mu = math.log(spec.mean) - sigma2 / 2
        return [clip(rng.lognormvariate(mu, math.sqrt(sigma2))) for _ in range(n)]
    return [clip(v) for v in _dataset_lengths(spec, n, where)]


def _dataset_lengths(spec: LengthSpec, n: int, where: str) -> list[int]:
    """The file's own lengths, in file order, cycled if it has fewer lines than requests."""
    path = Path(spec.path)
    if not path.is_file():
        raise ConfigError(f"{where}.path: file not found: {path}")
    values: list[int] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)[spec.field]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{where}: {path} line {number} has no integer field {spec.field!r}") from None
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {path} line {number}: {spec.field} = {value!r} is not a positive integer")
        values.append(value)
    if not values:
        raise ConfigError(f"{where}: {path} has no requests")
    return [values[i % len(values)] for i in range(n)]


def plan_requests(serving: Any, workload: Any, vocab_size: int, avoid_ids: set[int],
                  offsets: list[float]) -> list[PlannedRequest]:
    """Random prompt token ids (ids in avoid_ids, e.g. special tokens, are never drawn) of the planned
    lengths, so the prompt length is exact and no tokenizer round trip changes it."""
    n = serving.num_requests
    rng = random.Random(serving.seed)
    default_in = LengthSpec(dist="fixed", value=workload.input_tokens or workload.max_input_tokens)
    default_out = LengthSpec(dist="fixed", value=workload.output_tokens)
    inputs = sample_lengths(serving.input_tokens or default_in, n, rng, "serving.input_tokens")
    outputs = sample_lengths(serving.output_tokens or default_out, n, rng, "serving.output_tokens")
    allowed = [i for i in range(vocab_size) if i not in avoid_ids]
    return [PlannedRequest(i, offsets[i], [rng.choice(allowed) for _ in range(inputs[i])], outputs[i])
            for i in range(n)]


def plan_summary(plan: list[PlannedRequest], limit: Optional[int] = None) -> dict[str, Any]:
    ins = [len(r.prompt_token_ids) for r in plan]
    outs = [r.output_tokens for r in plan]
    blob = json.dumps([[r.prompt_token_ids, r.output_tokens, round(r.offset_s, 6)] for r in plan])
    describe = lambda xs: {"min": min(xs), "max": max(xs), "mean": sum(xs) / len(xs), "total": sum(xs)}  # noqa: E731
    return {"num_requests": len(plan), "input_tokens": describe(ins), "output_tokens": describe(outs),
            "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16]}
