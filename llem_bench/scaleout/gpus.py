"""Disjoint GPU sets for the xdist workers of one node.

The controller lists the GPUs it may hand out (CUDA_VISIBLE_DEVICES when set, e.g. by Slurm,
else every GPU NVML sees, named by UUID so CUDA's and NVML's orderings cannot disagree), gives
worker slot gwN the N-th block of K of them, and passes it to the worker through the worker's
environment (execnet sets it before the worker imports anything), so CUDA and NVML in that worker
and in its experiment subprocesses see only their own GPUs. A restarted worker inherits its
slot's environment, hence its GPUs.

LLEM_PLACEMENT (JSON) carries what each result records about it: the slot, its GPUs and UUIDs,
and the node's other GPUs that ran other experiments at the same time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

PLACEMENT_ENV = "LLEM_PLACEMENT"


@dataclass(frozen=True)
class NodeGpus:
    tokens: list[str]  # CUDA_VISIBLE_DEVICES entries naming each GPU
    uuids: list[Optional[str]]  # NVML UUID (GPU-...) of each, None where it cannot be told
    source: str  # where the list came from
    reason: Optional[str] = None  # why there are none
    notes: list[str] = field(default_factory=list)


def node_gpus(environ: Optional[dict[str, str]] = None, nvml_uuids: Optional[list[str]] = None) -> NodeGpus:
    """The GPUs this process may hand out. `nvml_uuids` (NVML index order) is read from NVML unless given."""
    environ = os.environ if environ is None else environ
    reason = None
    if nvml_uuids is None:
        try:
            nvml_uuids = _nvml_uuids()
        except Exception as exc:  # no driver, no pynvml: a CPU host
            reason = f"NVML unavailable: {exc}"
    if not nvml_uuids:  # no driver or no GPU: CUDA_VISIBLE_DEVICES names nothing real
        return NodeGpus([], [], "NVML", reason or "NVML sees no GPU")
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        tokens = [t.strip() for t in cvd.split(",") if t.strip()]
        notes: list[str] = []
        uuids = [_uuid_of(t, nvml_uuids or [], environ, notes) for t in tokens]
        return NodeGpus(tokens, uuids, "CUDA_VISIBLE_DEVICES", None if tokens else "CUDA_VISIBLE_DEVICES is empty",
                        sorted(set(notes)))
    return NodeGpus(list(nvml_uuids), list(nvml_uuids), "NVML")


def _nvml_uuids() -> list[str]:
    from llem_bench.energy.gpus import _text, nvml_init

    nvml = nvml_init()
    return [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(nvml.nvmlDeviceGetCount())]


def _uuid_of(token: str, nvml_uuids: list[str], environ: dict[str, str], notes: list[str]) -> Optional[str]:
    if token.startswith(("GPU-", "MIG-")):  # CUDA accepts a unique prefix of a UUID
        matches = [u for u in nvml_uuids if u.startswith(token)]
        return matches[0] if len(matches) == 1 else None
    if token.isdigit() and int(token) < len(nvml_uuids):
        if environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":  # then CUDA's index is NVML's index
            return nvml_uuids[int(token)]
        notes.append("CUDA_VISIBLE_DEVICES gives indices and CUDA_DEVICE_ORDER is not PCI_BUS_ID: the UUIDs are "
                     "those the energy meter reads in each experiment (energy.gpus)")
    return None


def plan_workers(gpu_count: int, workers: int, per_worker: int) -> list[list[int]]:
    """Indices into the node's GPU list for worker slots gw0..gw{workers-1}: disjoint blocks of
    `per_worker`, in order. ValueError with the fix when they do not fit."""
    if per_worker < 1:
        raise ValueError(f"--llem-gpus-per-worker must be 1 or more, got {per_worker}")
    if workers * per_worker > gpu_count:
        raise ValueError(f"-n {workers} workers x --llem-gpus-per-worker {per_worker} = {workers * per_worker} GPUs, "
                         f"but {gpu_count} are visible; use -n {max(gpu_count // per_worker, 1)} or fewer GPUs "
                         "per worker")
    return [list(range(w * per_worker, (w + 1) * per_worker)) for w in range(workers)]


def worker_environment(slot: int, workers: int, per_worker: Optional[int], gpus: NodeGpus) -> dict[str, str]:
    """Environment of worker slot `slot`: CUDA_VISIBLE_DEVICES (when pinned) and LLEM_PLACEMENT."""
    placement: dict[str, Any] = {"worker_slot": f"gw{slot}", "workers": workers, "gpus_per_worker": per_worker}
    env: dict[str, str] = {}
    if per_worker and gpus.tokens:
        block = plan_workers(len(gpus.tokens), workers, per_worker)[slot]
        mine = [gpus.tokens[i] for i in block]
        others = [i for i in range(len(gpus.tokens)) if i not in block]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
        placement.update(
            pinned=True, cuda_visible_devices=env["CUDA_VISIBLE_DEVICES"], gpu_uuids=[gpus.uuids[i] for i in block],
            node_gpus=gpus.tokens, other_gpus_busy=[gpus.uuids[i] or gpus.tokens[i] for i in others
                                                    if _busy(i, workers, per_worker)],
            note=f"{workers} workers ran experiments at the same time on this node's GPUs "
                 f"{', '.join(gpus.tokens[: workers * per_worker])}; this one metered only its own GPUs. "
                 "Shared node power (CPU, host memory, fans, PSU losses) is not attributed to any of them.")
    else:
        why = gpus.reason or "no --llem-gpus-per-worker"
        placement.update(pinned=False, gpu_uuids=[], note=(
            f"not pinned to GPUs ({why}); {workers} workers shared this host, so their experiments ran at the "
            "same time on the same CPUs" if workers > 1 else f"not pinned to GPUs ({why})"))
    if gpus.notes:
        placement["notes"] = gpus.notes
    env[PLACEMENT_ENV] = json.dumps(placement, sort_keys=True)
    return env


def _busy(index: int, workers: int, per_worker: int) -> bool:
    return index < workers * per_worker  # GPUs past the last block stay idle


def current_placement() -> Optional[dict[str, Any]]:
    """What this worker's LLEM_PLACEMENT says, with the xdist worker id that actually ran it."""
    text = os.environ.get(PLACEMENT_ENV)
    if not text:
        return None
    try:
        placement = json.loads(text)
    except json.JSONDecodeError:
        return {"reason": f"unreadable {PLACEMENT_ENV}"}
    placement["worker"] = os.environ.get("PYTEST_XDIST_WORKER")
    return placement


def pinned_uuids() -> Optional[set[str]]:
    """NVML UUIDs this worker owns, when pinned and all are known; None means "every GPU of the node"."""
    placement = current_placement() or {}
    uuids = placement.get("gpu_uuids") or []
    if not placement.get("pinned") or not uuids or None in uuids:
        return None
    return set(uuids)


def gpus_needed(config: Any) -> Optional[int]:
    """GPUs one experiment occupies when its config says: vLLM tensor x pipeline parallel size, PyTorch
    tp_size under tp_plan (the GPUs its backend meters, CUDA ordinals 0..n-1 of the worker's set). None
    when it takes what it is given (PyTorch device / device_map, tp_plan without tp_size, CPU ranks)."""
    if config.backend == "vllm":
        section = config.vllm
        total = (section.tensor_parallel_size or 1) * (section.pipeline_parallel_size or 1)
        return total if total > 1 else None
    if config.backend == "pytorch" and config.pytorch.tp_plan and config.pytorch.device != "cpu":
        return config.pytorch.tp_size
    return None


def check_experiments_fit(experiments: list, gpus_per_worker: int) -> None:
    """ValueError naming the first experiment that needs more GPUs than a worker owns."""
    for exp in experiments:
        need = gpus_needed(exp.config)
        if need is not None and need > gpus_per_worker:
            what = "pytorch.tp_size" if exp.config.backend == "pytorch" else "vllm tensor x pipeline parallel size"
            raise ValueError(f"experiment {exp.test_id} needs {need} GPUs ({what}) but a worker has "
                             f"{gpus_per_worker}; use --llem-gpus-per-worker {need} or more, "
                             "or select other experiments with -k")
