"""The median time of an element in fn, from a bounded sample: what a straggler is measured by.

A job may run a million elements; keeping every time would make each report slower than the
last. The sample keeps the middle SAMPLE_SIZE times: each new time beyond that drops both the
smallest and the largest, so the median stays the median of what was seen at its centre.
"""

from __future__ import annotations

import bisect

#: Times kept. Not tuned by a benchmark: odd, so the median is one of them, and small enough
#: that an insertion into the sorted list costs far less than the report that brings it.
SAMPLE_SIZE = 2001


class DurationSample:
    """The middle SAMPLE_SIZE per-element times seen, sorted; ``add`` returns their median."""

    __slots__ = ("_sorted", "_low")

    def __init__(self) -> None:
        self._sorted: list[float] = []  # [_low:] is the sample; below it, dropped smallest
        self._low = 0

    def add(self, seconds: float) -> float:
        """Add one element's time in fn; return the sample's median.

        The smallest is dropped by moving ``_low`` on, and the dropped ones are cut off once
        there are as many as the sample: shifting the list down for each took as long as the
        rest of a report.
        """
        times = self._sorted
        bisect.insort(times, seconds, self._low)
        if len(times) - self._low > SAMPLE_SIZE:
            times.pop()
            self._low += 1
            if self._low > SAMPLE_SIZE:
                del times[:self._low]
                self._low = 0
        return times[(self._low + len(times)) // 2]

    def __len__(self) -> int:
        return len(self._sorted) - self._low
