"""manifest.json: the state of a run and of each experiment, rewritten atomically on every change,
so a crash or Ctrl-C leaves a truthful record of what finished, what failed and what never ran.

Run states: running, complete, interrupted. Experiment states: pending, running, done, failed
(with `reason`), skipped (with `reason`), interrupted (was running when the session stopped).
Only one process writes it: the pytest controller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llem_bench.results.store import utc_now, write_json_atomic

FINAL_STATES = ("done", "failed", "skipped")


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = Path(path), data

    @staticmethod
    def read(run_dir: Path) -> Optional[dict[str, Any]]:
        try:
            return json.loads((Path(run_dir) / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @classmethod
    def open(cls, run_dir: Path, study: str, run_id: str) -> "Manifest":
        """Continue the run folder's manifest (resume, or the same --llem-run-id again) or start one."""
        path = Path(run_dir) / "manifest.json"
        data = cls.read(run_dir)  # a torn or missing one starts a fresh record; results are kept anyway
        if data is None or "experiments" not in data:
            data = {"study": study, "run_id": run_id, "started_at": utc_now(), "session_started_at": None,
                    "experiments": {}}
        else:
            # "running" here means that session died without finishing (e.g. SIGKILL, power loss)
            data.setdefault("previous_sessions", []).append(
                {key: data.get(key) for key in ("session_started_at", "finished_at", "state")})
        data.update(state="running", session_started_at=utc_now(), finished_at=None)
        return cls(path, data)

    def register(self, test_ids: list[str], already_done: dict[str, str]) -> None:
        """This session's experiments: pending, or skipped when a complete result is already there."""
        for test_id in test_ids:
            entry = self.data["experiments"].setdefault(test_id, {})
            if test_id in already_done:
                entry.update(state="skipped", reason=already_done[test_id], result=f"results/{test_id}.json")
            else:
                entry.clear()
                entry.update(state="pending")
        self.write()

    def start(self, test_id: str) -> None:
        entry = self.data["experiments"].get(test_id)
        if entry is not None and entry["state"] == "pending":
            entry.update(state="running", started_at=utc_now())
            self.write()

    def add(self, test_id: str, **fields: Any) -> None:
        """Details known while it runs (runner, GPU hygiene, result path)."""
        entry = self.data["experiments"].get(test_id)
        if entry is not None and fields:
            entry.update(fields)
            self.write()

    def end(self, test_id: str, state: str, **fields: Any) -> None:
        assert state in FINAL_STATES, state
        entry = self.data["experiments"].setdefault(test_id, {})
        if entry.get("state") == "skipped" and state == "skipped":
            return  # registered as already done; keep that record
        entry.update(state=state, finished_at=utc_now(), **fields)
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
