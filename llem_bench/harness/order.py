"""The order a study's experiments run in, with run-level repeats (measurement.repeats).

With one repeat, experiments that share load settings and engine run back to back (grouped by
harness.pool.instance_key: an offline LLM, an AsyncLLM and a server are three loads even with equal
engine arguments), so the model loads once per group. With N repeats the whole study runs N times; each repeat shuffles
the order of the load groups and the order inside each group with a generator seeded by
(measurement.repeat_seed, repeat), so slow drift (thermals, a neighbour on the host) spreads over all
experiments instead of biasing the ones that always run last, and a model still loads once per group
per repeat (once in total where the last group of a repeat is the first of the next).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from llem_bench.harness.pool import instance_key
from llem_bench.config.study import Experiment


def plan_runs(experiments: list[Experiment], repeats: int = 1, seed: int = 0) -> list[Experiment]:
    """Every run of the study, in order: the experiments themselves when repeats == 1, else one copy per
    repeat with `repeat` (1-based) and `repeats` set."""
    if repeats <= 1:
        return sorted(experiments, key=lambda e: instance_key(e.config))  # stable: study order inside a group
    groups: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        groups.setdefault(instance_key(experiment.config), []).append(experiment)
    plan = []
    for k in range(1, repeats + 1):
        rng = random.Random(f"{seed}:{k}")  # string seeds are hashed deterministically (not PYTHONHASHSEED)
        order = sorted(groups)
        rng.shuffle(order)
        for key in order:
            members = list(groups[key])
            rng.shuffle(members)
            plan += [dataclasses.replace(e, repeat=k, repeats=repeats) for e in members]
    return plan


def describe_plan(plan: list[Experiment], seed: int) -> dict[str, Any]:
    """What manifest.json and study.json record: the order per repeat and where a model (re)loads
    (an in-process or subprocess runner keeps a loaded model while the load key stays the same)."""
    repeats = max((e.repeats for e in plan), default=1)
    order: dict[str, list[str]] = {}
    loads, previous = [], None
    for e in plan:
        order.setdefault(str(e.repeat or 1), []).append(e.key)
        key = instance_key(e.config)
        if key != previous:
            loads.append(e.key)
        previous = key
    return {"repeats": repeats, "repeat_seed": seed, "order": order, "planned_loads": loads}
