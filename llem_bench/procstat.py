"""Processes from /proc: one parser of /proc/<pid>/stat, and the CPU time of a server's process group.

Is the server's own front end what delays streamed tokens? The load generator records its own CPU
(serving/client.py); this is the other side of the HTTP stream. A server the suite started runs in its
own process group (serving/server.py), so every process of that group is counted:
for vLLM the API server (the group leader: HTTP, tokenising, detokenising, one event loop) and its engine
core. Linux only; elsewhere the reason says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

PROC = Path("/proc")


def stat_fields(pid: int | str) -> Optional[tuple[str, list[str]]]:
    """(command name, the fields after it) of /proc/<pid>/stat, field 3 (state) first; None when unreadable."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone, or another PID namespace
        return None
    # "pid (comm) state ppid pgrp ... utime stime ...": comm may hold spaces and parentheses
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def group_cpu_seconds(pgid: int) -> Optional[dict[int, tuple[str, float]]]:
    """pid -> (command name, user + system CPU seconds) for every live process of the group; None without /proc."""
    if not (PROC / "self" / "stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in PROC.iterdir():
        parsed = stat_fields(entry.name) if entry.name.isdigit() else None
        if parsed is None:  # not a process, or gone between listing and reading
            continue
        name, fields = parsed
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
