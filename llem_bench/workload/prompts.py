"""Prompt sources, tokenised and truncated once so every run and every backend gets the same ids."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from llem_bench.config.errors import ConfigError
from llem_bench.config.experiment import WorkloadConfig

BUILTIN_SETS = {"default": "builtin_prompts.jsonl"}


@dataclass(frozen=True)
class Workload:
    """The exact token ids of every request in one workload pass, and what the run must produce."""

    prompt_token_ids: list[list[int]]
    output_tokens: int
    source: str

    @property
    def num_requests(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def input_tokens(self) -> int:
        return sum(len(p) for p in self.prompt_token_ids)

    @property
    def expected_output_tokens(self) -> int:
        return self.num_requests * self.output_tokens

    def fingerprint(self) -> str:
        blob = json.dumps(self.prompt_token_ids, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        lengths = [len(p) for p in self.prompt_token_ids]
        return {
            "source": self.source, "num_requests": self.num_requests, "input_tokens": self.input_tokens,
            "min_input_tokens": min(lengths), "max_input_tokens": max(lengths),
            "output_tokens_per_request": self.output_tokens, "fingerprint": self.fingerprint(),
        }


def _read_jsonl(lines: Iterator[str], origin: str) -> list[str]:
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"workload.prompts: {origin} line {number}: not JSON ({exc.msg})") from None
        text = record.get("prompt", record.get("text")) if isinstance(record, dict) else record
        if not isinstance(text, str) or not text:
            raise ConfigError(f"workload.prompts: {origin} line {number}: needs a non-empty 'prompt' or 'text' field")
        texts.append(text)
    if not texts:
        raise ConfigError(f"workload.prompts: {origin} has no prompts")
    return texts


def builtin_texts(name: str = "default") -> list[str]:
    if name not in BUILTIN_SETS:
        raise ConfigError(f"workload.prompts: unknown built-in set 'builtin:{name}'. Sets: "
                          + ", ".join(f"builtin:{n}" for n in BUILTIN_SETS))
    data = resources.files("llem_bench.workload").joinpath("data", BUILTIN_SETS[name])
    with data.open() as handle:
        return _read_jsonl(handle, f"builtin:{name}")


def prompt_texts(source: str) -> list[str]:
    if source.startswith("builtin:"):
        return builtin_texts(source.split(":", 1)[1])
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"workload.prompts: {source!r} is neither builtin:<set>, 'synthetic' nor an existing .jsonl file")
    with path.open() as handle:
        return _read_jsonl(handle, str(path))


def check_source(source: str) -> None:
    """Fail on a bad prompt source before any model loads."""
    if source != "synthetic":
        prompt_texts(source)


def prepare_workload(config: WorkloadConfig, tokenizer: Any) -> Workload:
    if config.prompts == "synthetic":
        ids = _synthetic_ids(config, tokenizer)
    else:
        texts = prompt_texts(config.prompts)
        chosen = [texts[i % len(texts)] for i in range(config.num_prompts)]
        encoded = tokenizer(chosen, add_special_tokens=True, truncation=True, max_length=config.max_input_tokens)
        ids = [list(map(int, row)) for row in encoded["input_ids"]]
    return Workload(prompt_token_ids=ids, output_tokens=config.output_tokens, source=config.prompts)


def _synthetic_ids(config: WorkloadConfig, tokenizer: Any) -> list[list[int]]:
    rng = random.Random(config.seed)
    special = set(tokenizer.all_special_ids)
    # Stay inside the learnt part of the vocab so prompts look like ordinary text to the tokenizer.
    high = min(len(tokenizer), 2048)
    choices = [i for i in range(high) if i not in special]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    length = config.input_tokens - len(bos)
    return [bos + [rng.choice(choices) for _ in range(length)] for _ in range(config.num_prompts)]
