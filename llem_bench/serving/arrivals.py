"""When each request is sent, as offsets from the start of the run (seconds), from one seed."""

from __future__ import annotations

import math
import random


def arrival_offsets(n: int, rate: float, arrival: str = "poisson", burstiness: float = 1.0,
                    seed: int = 0) -> list[float]:
    """Open-loop schedule: the first request at 0, then gaps drawn for `rate` requests/s.

    poisson: exponential gaps; gamma: gamma gaps of shape `burstiness` and mean 1/rate (shape 1 is
    Poisson, < 1 burstier); constant: exactly 1/rate. rate = inf sends everything at 0.
    """
    if n <= 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    offsets, t = [0.0], 0.0
    for _ in range(n - 1):
        if arrival == "constant":
            gap = 1.0 / rate
        elif arrival == "poisson":
            gap = rng.expovariate(rate)
        elif arrival == "gamma":
            gap = rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        else:
            raise ValueError(f"unknown arrival {arrival!r} (poisson, gamma, constant)")
        t += gap
        offsets.append(t)
    return offsets
