"""The element ledger: for each element of xs, whether it is final, and its attempts so far.

An element becomes final once: done (the first attempt to finish wins), failed for good, or
cancelled when the job stops. Every later report of it is ignored, which is how a backup's
loser or a late report after a kill never counts twice. States are one byte per element, so a
million-element job's ledger is a megabyte and a batch's elements are checked with one
``bytearray.count``.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable

from gpar.results import TaskFailure

OPEN, DONE, FAILED, CANCELLED = 0, 1, 2, 3
_DONE_BYTE = bytes([DONE])
_NOT_DONE = re.compile(b"[^%c]" % DONE)


class Ledger:
    """The final state of each element, the failures, and how many attempts each has had."""

    def __init__(self, elements: int):
        self.state = bytearray(elements)  # OPEN, DONE, FAILED or CANCELLED per element
        self.final_count = 0  # elements no longer OPEN
        self.final_order = array("q")  # the elements in the order they became final
        self.failures: dict[int, TaskFailure] = {}
        self.failed_count: dict[int, int] = {}  # element -> failed attempts so far
        self._last_attempt: dict[int, int] = {}  # element -> its latest attempt run alone

    def extend(self, count: int) -> None:
        """``count`` more elements, open: an input read as it goes (imap)."""
        self.state.extend(bytes(count))

    def is_open(self, index: int) -> bool:
        return self.state[index] == OPEN

    def done_until(self, start: int) -> int:
        """The end of the run of done elements from ``start`` (one C scan of the states)."""
        found = _NOT_DONE.search(self.state, start)
        return len(self.state) if found is None else found.start()

    def all_final(self, indices: range) -> bool:
        return not self.state.count(OPEN, indices.start, indices.stop)

    def accept(self, indices: range) -> list[range]:
        """Mark the open elements of ``indices`` done; return the runs that were open."""
        if not indices:
            return []
        start, stop = indices.start, indices.stop
        state = self.state
        if state.count(OPEN, start, stop) == len(indices):
            state[start:stop] = _DONE_BYTE * len(indices)
            self.final_count += len(indices)
            self.final_order.extend(indices)
            return [indices]
        runs, begin = [], None
        for offset, value in enumerate(state[start:stop]):
            if value == OPEN:
                state[start + offset] = DONE
                self.final_count += 1
                self.final_order.append(start + offset)
                begin = offset if begin is None else begin
            elif begin is not None:
                runs.append(indices[begin:offset])
                begin = None
        if begin is not None:
            runs.append(indices[begin:])
        return runs

    def charge(self, index: int) -> int:
        """Count a failed attempt of an open element; return its failed attempts so far."""
        failed = self.failed_count[index] = self.failed_count.get(index, 0) + 1
        return failed

    def fail(self, failure: TaskFailure) -> None:
        """The element has failed for good."""
        self._finalize(failure.index, FAILED, failure)

    def failed(self) -> list[TaskFailure]:
        """The failures of elements final without a value (failed or cancelled), in input
        order."""
        return [self.failures[index] for index in sorted(self.failures)]

    def cancel_open(self, failure_of: Callable[[int, int], TaskFailure]) -> None:
        """The job stopped: every open element is cancelled, its slot holding
        ``failure_of(index, failed attempts)``."""
        for index, value in enumerate(self.state):
            if value == OPEN:
                self._finalize(index, CANCELLED,
                               failure_of(index, self.failed_count.get(index, 0)))

    def trim(self, indices: range) -> range:
        """``indices`` without final elements at either end (final ones inside stay: rare)."""
        start, stop = indices.start, indices.stop
        state = self.state
        while start < stop and state[start] != OPEN:
            start += 1
        while stop > start and state[stop - 1] != OPEN:
            stop -= 1
        return range(start, stop)

    def next_attempt(self, index: int, after: int) -> int:
        """The number of the element's next attempt run alone: past every one it has had."""
        attempt = max(after, self._last_attempt.get(index, after)) + 1
        self._last_attempt[index] = attempt
        return attempt

    def rerun_attempt(self, indices: range, attempt: int) -> int:
        """The attempt number of a re-run of ``indices``, which ran as ``attempt``: past
        every attempt any of them has had (backups)."""
        last = self._last_attempt
        rerun = max([attempt, *(last[i] for i in indices if i in last)]) + 1
        for index in indices:
            if index in last:
                last[index] = rerun
        return rerun

    def _finalize(self, index: int, state: int, failure: TaskFailure) -> None:
        self.state[index] = state
        self.final_count += 1
        self.final_order.append(index)
        self.failures[index] = failure
