"""Deterministic study shards: whole load groups (experiments that share one loaded model) go to
one shard, so a model still loads once per group.

The split depends only on the study's experiments, never on YAML or dict order or the machine:
groups are ordered by (size, largest first; then the SHA-256 of their load key) and each goes to
the shard with the fewest experiments so far (lowest shard number on a tie). Every array task
of a Slurm job therefore computes the same split.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

from llem_bench.backends.base import load_key

_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' (1-based: 1/2 and 2/2) -> (i, N). ValueError with the expected form."""
    match = _SHARD.match(str(text).strip())
    if not match:
        raise ValueError(f"--llem-shard {text!r}: expected i/N, e.g. 1/4 (shards are numbered 1..N)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--llem-shard {text}: i must be between 1 and N (N >= 1)")
    return index, count


def group_name(key: str) -> str:
    """Short, stable name of a load group (its key's SHA-256), e.g. for xdist_group."""
    return "llem-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def load_groups(experiments: Iterable) -> dict[str, list[str]]:
    """group name -> test ids of its experiments."""
    groups: dict[str, list[str]] = {}
    for exp in experiments:
        groups.setdefault(group_name(load_key(exp.config)), []).append(exp.test_id)
    return groups


def assign_shards(groups: dict[str, list[str]], count: int) -> dict[str, int]:
    """group name -> shard (1..count), balanced by number of experiments."""
    loads = [0] * count
    assignment: dict[str, int] = {}
    for name in sorted(groups, key=lambda g: (-len(groups[g]), g)):
        shard = min(range(count), key=lambda s: (loads[s], s))
        assignment[name] = shard + 1
        loads[shard] += len(groups[name])
    return assignment


def shard_test_ids(experiments: list, index: int, count: int) -> set[str]:
    """Test ids of shard `index` of `count`. ValueError when the study has fewer load groups than shards
    (a shard would be empty and pytest would collect nothing)."""
    groups = load_groups(experiments)
    if count > len(groups):
        raise ValueError(f"--llem-shard {index}/{count}: the study has {len(groups)} load group(s) (experiments "
                         f"that share a loaded model stay together), so at most {len(groups)} shard(s)")
    assignment = assign_shards(groups, count)
    return {t for name, ids in groups.items() if assignment[name] == index for t in ids}
