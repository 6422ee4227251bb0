"""CPU time of a server's processes, from /proc: is the server's own front end what delays streamed tokens?

The load generator records its own CPU (client.py); this is the other side of the HTTP stream. A server
the suite started runs in its own process group (server.py), so every process of that group is counted:
for vLLM the API server (the group leader: HTTP, tokenising, detokenising, one event loop) and its engine
core. Linux only; elsewhere the reason says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

PROC = Path("/proc")


def group_cpu_seconds(pgid: int) -> Optional[dict[int, tuple[str, float]]]:
    """pid -> (command name, user + system CPU seconds) for every live process of the group; None without /proc."""
    if not (PROC / "self" / "stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone between listing and reading
            continue
        # "pid (comm) state ppid pgrp ... utime stime ...": comm may hold spaces and parentheses
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def cpu_use(before: Optional[dict[int, tuple[str, float]]], after: Optional[dict[int, tuple[str, float]]],
            wall_s: float, leader: int) -> dict[str, Any]:
    """Each process's CPU seconds between two readings and its share of one core over wall_s, busiest first."""
    if before is None or after is None:
        return {"reason": "no /proc on this system"}
    processes = []
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]  # a process born during the run counts from zero
        processes.append({"pid": pid, "name": name, "leader": pid == leader, "cpu_s": round(used, 3),
                          "cpu_fraction": round(used / wall_s, 4) if wall_s > 0 else None})
    processes.sort(key=lambda p: -p["cpu_s"])
    return {"wall_s": round(wall_s, 3), "processes": processes}
