"""The timer the benchmark scripts share."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(step: Callable[[], object], iters: int, repeats: int) -> float:
    """Seconds per call: the best over ``repeats`` means of ``iters`` calls (after a warm-up)."""
    for _ in range(max(iters // 10, 1)):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            step()
        best = min(best, (time.perf_counter() - start) / iters)
    return best
