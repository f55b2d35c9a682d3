"""The work queue: what waits to be launched, in the order it goes.

Three kinds of work wait. Re-cuttable runs of elements (the input, and elements given back
unstarted) are cut to the size the BatchSizer asks for when they leave. Whole work (a retry, a
backup, half of a lost batch) leaves as it is: its size is part of the rule that queued it.
Parked elements (preempted stragglers) leave only once the queue is empty, so what they held
back goes first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gpar.split import BatchSizer


@dataclass(slots=True)
class Work:
    """Elements ``indices`` to run as attempt ``attempt``. Mutable: the queue's first
    re-cuttable work gives up its front in place as batches are cut from it, one per batch."""

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
        """Whether anything waits, parked elements included."""
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

    def pop(self) -> tuple[range, int, bool] | None:
        """The next work to launch, as (indices, attempt, backup): the queue's first,
        re-cuttable work cut to the size the sizer asks for; a parked element once the queue
        is empty; None if nothing waits. A plain tuple: one leaves for each batch."""
        queue = self._queue
        if queue:
            work = queue[0]
            indices = work.indices
            if work.whole:
                queue.popleft()
            else:
                size = self.sizer.next_size(self._recuttable)
                if size < len(indices):  # the rest stays first
                    work.indices = indices[size:]
                    indices = indices[:size]
                else:
                    queue.popleft()
                self._recuttable -= len(indices)
            self.queued -= len(indices)
            return indices, work.attempt, work.backup
        if self._parked:
            work = self._parked.popleft()
            return work.indices, work.attempt, work.backup
        return None
