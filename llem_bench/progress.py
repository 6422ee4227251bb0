"""One-line progress of long work (experiment k/N, model load, warmup, cycles), shown on the
terminal of the pytest process that runs the study, also with -q.

Wherever the work runs, `status(message)` hands the line to the current sink:
- in the pytest controller (inprocess runner): its terminal, with output capture suspended;
- in a subprocess/venv worker: one JSON line on the worker's reply channel, which the controller
  forwards to its terminal (isolation/runner.py), plus the experiment's log;
- elsewhere (a docker worker, a script): stderr.

Lines are written between phases, never inside a measured window: the window loop calls nothing here.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

Sink = Callable[[str, Optional[float]], None]
_sink: Optional[Sink] = None


def set_sink(sink: Optional[Sink]) -> Optional[Sink]:
    """Install where status lines go; returns the previous sink (to restore it)."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def status(message: str, window_s: Optional[float] = None) -> None:
    """`window_s`: a measured window of at least this long opens right after this line (the
    controller can count it down on a terminal from its own process; the worker prints nothing)."""
    if _sink is not None:
        try:
            _sink(message, window_s)
            return
        except Exception:  # a progress line must never fail a measurement
            pass
    print(f"llem-bench: {message}", file=sys.stderr, flush=True)
