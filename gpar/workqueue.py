"""The work queue: what waits to be launched, in the order it goes.

Three kinds of work wait. Re-cuttable runs of elements (the input, and elements given back
unstarted) are cut to the size the BatchSizer asks for when they leave. Whole work (a retry, a
backup, half of a lost batch) leaves as it is: its size is part of the rule that queued it.
Parked elements (preempted stragglers) leave only once the queue is empty, so what they held
back goes first.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from gpar.split import BatchSizer


class Work(NamedTuple):  # a tuple, as Launch is: one is made for nearly every batch
    """Elements ``indices`` to run as attempt ``attempt``."""

    indices: range
    attempt: int
    whole: bool  # dispatch as one batch, never re-cut
    backup: bool = False


class WorkQueue:
    """Work waiting for a slot: queued (in order, retries first) and parked (after it)."""

    def __init__(self, elements: int, sizer: BatchSizer):
        self.sizer = sizer
        self._queue: deque[Work] = deque([Work(range(elements), 0, whole=False)])
        self.queued = elements  # elements in the queue
        self._recuttable = elements  # of which in re-cuttable work: what the sizer divides
        self._parked: deque[Work] = deque()

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    @property
    def waiting(self) -> int:
        """Elements waiting for a slot, parked ones included."""
        return self.queued + len(self._parked)

    def __bool__(self) -> bool:
        return bool(self._queue or self._parked)

    def push(self, work: Work, front: bool = False) -> None:
        """Queue work: retries, backups and halves go first, elements given back go last."""
        self.queued += len(work.indices)
        if not work.whole:
            self._recuttable += len(work.indices)
        if front:
            self._queue.appendleft(work)
        else:
            self._queue.append(work)

    def park(self, index: int, attempt: int) -> None:
        """Hold a preempted element until nothing else waits."""
        self._parked.append(Work(range(index, index + 1), attempt, whole=True))

    def pop(self) -> Work | None:
        """The next work to launch: the queue's first, re-cuttable work cut to the size the
        sizer asks for; a parked element once the queue is empty; None if nothing waits."""
        if self._queue:
            work = self._queue.popleft()
            if not work.whole:
                size = self.sizer.next_size(self._recuttable)
                indices = work.indices
                if size < len(indices):
                    self._queue.appendleft(Work(indices[size:], work.attempt, False))
                    work = Work(indices[:size], work.attempt, False)
                self._recuttable -= len(work.indices)
            self.queued -= len(work.indices)
            return work
        if self._parked:
            return self._parked.popleft()
        return None
