"""manifest.json: the state of a run and of each experiment, rewritten atomically on every change,
so a crash or Ctrl-C leaves a truthful record of what finished, what failed and what never ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llem_bench.results.store import utc_now, write_json_atomic

STATES = ("pending", "running", "done", "failed", "skipped", "interrupted")


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = Path(path), data

    @classmethod
    def open(cls, run_dir: Path, study: str, run_id: str) -> "Manifest":
        """Continue an existing manifest (resume) or start a new one."""
        path = Path(run_dir) / "manifest.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                data.update(state="running", resumed_at=utc_now(), finished_at=None)
                return cls(path, data)
            except json.JSONDecodeError:
                pass  # a torn manifest from an older crash: start a fresh record, results are kept
        return cls(path, {"study": study, "run_id": run_id, "state": "running", "started_at": utc_now(),
                          "finished_at": None, "experiments": {}})

    def register(self, test_ids: list[str]) -> None:
        for test_id in test_ids:
            entry = self.data["experiments"].setdefault(test_id, {"state": "pending"})
            if entry["state"] in ("running", "interrupted", "failed"):
                entry.update(state="pending")
        self.write()

    def update(self, test_id: str, state: str, **fields: Any) -> None:
        assert state in STATES, state
        entry = self.data["experiments"].setdefault(test_id, {})
        entry.update(state=state, **fields)
        if state == "running":
            entry.update(started_at=utc_now(), finished_at=None, reason=None)
        elif state != "pending":
            entry["finished_at"] = utc_now()
        self.write()

    def finish(self, interrupted: bool) -> None:
        for entry in self.data["experiments"].values():
            if entry["state"] == "running":
                entry.update(state="interrupted", finished_at=utc_now())
        self.data.update(state="interrupted" if interrupted else "complete", finished_at=utc_now())
        self.write()

    def state_of(self, test_id: str) -> Optional[str]:
        return self.data["experiments"].get(test_id, {}).get("state")

    def write(self) -> None:
        write_json_atomic(self.path, self.data)
