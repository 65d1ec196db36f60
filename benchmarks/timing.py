"""The timer the benchmark scripts share."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def race(
    steps: Sequence[Callable[[], object]],
    iters: int,
    repeats: int,
    before: Sequence[Callable[[], object] | None] | None = None,
) -> list[float]:
    """Seconds per call of each step: the best over ``repeats`` means of ``iters`` calls.

    The steps take turns, one block of calls each per round, so a machine that speeds up or
    slows down during the run (they do) moves every contender alike and the ratios hold.
    ``before[i]``, when given, runs untimed ahead of each block of step i (e.g. setting torch's
    thread count); a short warm-up follows it.
    """
    before = before or [None] * len(steps)
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for i, (step, setup) in enumerate(zip(steps, before)):
            if setup is not None:
                setup()
            time.sleep(0.05)  # let the previous contender's worker threads stop spinning
            for _ in range(max(iters // 10, 1)):
                step()
            start = time.perf_counter()
            for _ in range(iters):
                step()
            best[i] = min(best[i], (time.perf_counter() - start) / iters)
    return best
