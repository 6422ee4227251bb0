"""The run folder: reports/<study>/<run-id>/ with one result JSON per experiment, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from llem_bench.results.schema import ExperimentResult


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(commit: str | None = None) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{commit[:7]}" if commit else stamp


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out_root: Path, study: str, run_id: str) -> "RunDir":
        return cls(Path(out_root) / study / run_id)

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def result_path(self, key: str) -> Path:
        """key: the run's key, `<test_id>` or `<test_id>-r<k>` with repeats (ExperimentResult.key)."""
        return self.results_dir / f"{key}.json"

    def write_result(self, result: ExperimentResult) -> Path:
        path = self.result_path(result.key)
        write_json_atomic(path, result.model_dump(mode="json"))
        return path

    def read_results(self) -> list[ExperimentResult]:
        results, _ = self.read_results_with_problems()
        return results

    def read_results_with_problems(self) -> tuple[list[ExperimentResult], list[str]]:
        """Results that parse, plus a message for each file that does not (e.g. truncated by a crash)."""
        results, problems = [], []
        for path in sorted(self.results_dir.glob("*.json")):
            try:
                results.append(ExperimentResult.model_validate_json(path.read_text()))
            except (ValidationError, ValueError) as exc:
                problems.append(f"{path}: unreadable result ({str(exc).splitlines()[0]}); rerun that experiment")
        results.sort(key=lambda r: r.started_at)  # the order they ran in, not file-name order
        return results, problems


def load_results(paths: Iterable[Path]) -> list[ExperimentResult]:
    return [ExperimentResult.model_validate_json(Path(p).read_text()) for p in paths]
