"""`llem-bench merge RUN_DIR... --out DIR`: join shard runs (or any runs of one study) into one run
folder with one manifest and one report.

Results are keyed by their file name (`<test_id>.json`, or `<test_id>-r<k>.json` with run-level
repeats), never by test id alone. Refused: runs of different studies; the same result file in two
runs with different contents; results from different git commits (unless allow_mixed_commits);
shard runs of one split with shards missing (unless allow_partial).
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from llem_bench.config.errors import ConfigError
from llem_bench.results.manifest import Manifest
from llem_bench.results.store import utc_now, write_json_atomic

COPIED = (("results", ".json"), ("timeseries", ".csv"), ("logs", ".log"))


def merge_runs(run_dirs: list[Path], out: Path, allow_mixed_commits: bool = False,
               allow_partial: bool = False) -> dict[str, Any]:
    """Write the merged run folder `out`; return its manifest. ConfigError on anything refused."""
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ConfigError("merge: give at least one run folder")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"merge: --out {out} exists and is not empty; choose a new folder")
    for run in runs:
        if not (run / "results").is_dir():
            raise ConfigError(f"merge: {run} is not a run folder (no results/ inside); pass reports/<study>/<run-id>")
        if run.resolve() == out.resolve():
            raise ConfigError(f"merge: --out {out} is one of the inputs")
    manifests = {run: Manifest.read(run) or {} for run in runs}
    files = _result_files(runs)
    study = _one_study(runs, manifests, files)
    commits = _commits(files)
    if len(commits) > 1 and not allow_mixed_commits:
        raise ConfigError("merge: the runs come from different git commits (" +
                          "; ".join(f"{c or 'unknown'}: {', '.join(sorted(str(r) for r in rs))}"
                                    for c, rs in sorted(commits.items(), key=lambda kv: str(kv[0]))) +
                          "); rerun on one commit or pass --allow-mixed-commits")
    missing = _missing_shards(manifests)
    if missing and not allow_partial:
        raise ConfigError(f"merge: shard(s) {', '.join(missing)} missing from the inputs; pass every shard's run "
                          "folder, or --allow-partial to merge what is there")
    chosen = _pick(runs)
    out.mkdir(parents=True, exist_ok=True)
    for (folder, name), source in sorted(chosen.items()):
        (out / folder).mkdir(exist_ok=True)
        shutil.copy2(source, out / folder / name)
    manifest = _merged_manifest(study, out.name, runs, manifests, commits, missing)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _result_files(runs: list[Path]) -> dict[Path, dict[str, Any]]:
    """Every result file, parsed as plain JSON (a result another version wrote still merges)."""
    parsed = {}
    for run in runs:
        for path in sorted((run / "results").glob("*.json")):
            try:
                parsed[path] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"merge: {path} is unreadable ({exc}); rerun that experiment (--llem-resume) "
                                  "or delete the file") from None
    return parsed


def _one_study(runs: list[Path], manifests: dict[Path, dict], files: dict[Path, dict]) -> str:
    studies: dict[str, set[str]] = {}
    for run in runs:
        names = {manifests[run].get("study")} | {d.get("study") for p, d in files.items() if p.parent.parent == run}
        for name in names - {None}:
            studies.setdefault(name, set()).add(str(run))
    if len(studies) != 1:
        detail = "; ".join(f"'{s}': {', '.join(sorted(r))}" for s, r in sorted(studies.items())) or "none found"
        raise ConfigError(f"merge: the runs must be of one study ({detail})")
    return next(iter(studies))


def _commits(files: dict[Path, dict]) -> dict[Optional[str], set[Path]]:
    commits: dict[Optional[str], set[Path]] = {}
    for path, data in files.items():
        commits.setdefault((data.get("environment") or {}).get("git_commit"), set()).add(path.parent.parent)
    return commits


def _missing_shards(manifests: dict[Path, dict]) -> list[str]:
    counts = {m["shard"]["count"] for m in manifests.values() if isinstance(m.get("shard"), dict)}
    if len(counts) != 1:
        return [] if not counts else [f"(runs of {sorted(counts)} shards mixed)"]
    count = counts.pop()
    present = {m["shard"]["index"] for m in manifests.values() if isinstance(m.get("shard"), dict)}
    return [f"{i}/{count}" for i in range(1, count + 1) if i not in present]


def _pick(runs: list[Path]) -> dict[tuple[str, str], Path]:
    """(folder, file name) -> the file to copy; the same name twice must be the same bytes."""
    chosen: dict[tuple[str, str], Path] = {}
    for run in runs:
        for folder, suffix in COPIED:
            for path in sorted((run / folder).glob(f"*{suffix}")):
                key = (folder, path.name)
                if key in chosen and not filecmp.cmp(chosen[key], path, shallow=False):
                    what = "experiment" if folder == "results" else f"{folder} file of"
                    raise ConfigError(f"merge: {what} {path.stem} is in {chosen[key].parent.parent} and {run} with "
                                      "different contents; keep one of the two runs (or delete one result file)")
                chosen.setdefault(key, path)
    return chosen


def _merged_manifest(study: str, run_id: str, runs: list[Path], manifests: dict[Path, dict],
                     commits: dict, missing: list[str]) -> dict[str, Any]:
    experiments: dict[str, Any] = {}
    for run in runs:
        for key, entry in (manifests[run].get("experiments") or {}).items():
            experiments.setdefault(key, dict(entry, merged_from=str(run)))
    states = {manifests[run].get("state") for run in runs}
    state = "complete" if states == {"complete"} and not missing else "incomplete"
    return {
        "study": study, "run_id": run_id, "state": state, "merged_at": utc_now(),
        "started_at": min((m.get("started_at") for m in manifests.values() if m.get("started_at")), default=None),
        "finished_at": max((m.get("finished_at") for m in manifests.values() if m.get("finished_at")), default=None),
        "git_commits": sorted(str(c) for c in commits),
        "missing_shards": missing,
        "merged_from": [{"path": str(run), "run_id": manifests[run].get("run_id", run.name),
                         "state": manifests[run].get("state"), "shard": _shard_label(manifests[run]),
                         "xdist": manifests[run].get("xdist")} for run in runs],
        "experiments": experiments,
    }


def _shard_label(manifest: dict) -> Optional[str]:
    shard = manifest.get("shard")
    return f"{shard['index']}/{shard['count']}" if isinstance(shard, dict) else None
