"""What every benchmark here measures with: the median wall time of repeated runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(run: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``run`` (this machine is shared and noisy)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
