"""pytest-xdist's loadgroup scheduler with the crash fixes that pytest-xdist 3.8.0 (the latest
release) lacks. Without them, a worker that crashes under --dist loadgroup hangs the session:

- the crashed worker's whole workload, finished groups included, went back on the queue and a
  replacement worker was sent an empty batch it never answers (pytest-dev/pytest-xdist#1323);
- a replacement worker given the last group was never told to shut down, so it waited for a
  next test forever (#1327);
- the test the worker died on went back on the queue, so the replacement ran it again and
  crashed too (#1371).

Here a crash fails only the experiment that was running; the rest of its load group and the other
groups run on.

The group of a test comes from its node id's experiment (`scope_of`), not from the `@group` suffix
xdist's workers add for the `xdist_group` mark: with pytest 9.2 that suffix is lost (xdist 3.8.0 sets
`item._nodeid`, which pytest no longer reads), and every test would be a group of its own.
"""

from __future__ import annotations

from typing import Callable, Optional

from xdist.scheduler import LoadGroupScheduling


class CrashSafeLoadGroupScheduling(LoadGroupScheduling):
    def __init__(self, config, log, scope_of: Callable[[str], Optional[str]]):
        super().__init__(config, log)
        self.scope_of = scope_of

    def _split_scope(self, nodeid: str) -> str:
        return self.scope_of(nodeid) or super()._split_scope(nodeid)

    def remove_node(self, node) -> Optional[str]:
        workload = self.assigned_work.pop(node)
        if not self._pending_of(workload):
            return None
        crashitem = next(nodeid for unit in workload.values() for nodeid, done in unit.items() if not done)
        for scope, unit in workload.items():
            if crashitem in unit:
                unit[crashitem] = True  # xdist reports it failed; running it again would crash the next worker
            if not all(unit.values()):
                self.workqueue[scope] = unit  # only groups with tests that never ran go back
        for other in self.nodes:
            self._reschedule(other)
        return crashitem

    def schedule(self) -> None:
        if self.collection is None:
            super().schedule()
            return
        for node in self.nodes:  # a replacement worker joined after the first distribution
            self._reschedule(node)
        if not self.workqueue:
            for node in self.nodes:
                if not node.shutting_down:
                    node.shutdown()  # it runs what it holds, then stops
