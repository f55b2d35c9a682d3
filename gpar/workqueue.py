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
        self._queue: deque[Work] = deque([Work(range(elements), 0, whole=False)]
                                         if elements else [])
        self.queued = elements  # elements in the queue
        self._recuttable = elements  # of which in re-cuttable work: what the sizer divides
        self._parked: deque[Work] = deque()

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    @property
    def parked(self) -> bool:
        return bool(self._parked)

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

    def extend_input(self, indices: range) -> None:
        """More of the input, read after what is queued: it joins the input's last run when
        that is still queued, so batches are cut across both."""
        queue = self._queue
        last = queue[-1] if queue else None
        if (last is not None and not last.whole and last.attempt == 0
                and last.indices.stop == indices.start):
            last.indices = range(last.indices.start, indices.stop)
            self.queued += len(indices)
            self._recuttable += len(indices)
        else:
            self.push(Work(indices, 0, whole=False))

    def take(self, index: int, parked_only: bool = False) -> tuple[range, int, bool] | None:
        """Element ``index`` alone, out of the work it waits in, as pop() gives work (whole
        work as it is); None if it waits nowhere (``parked_only``: if it is not parked). The
        rest of that work keeps its place."""
        found = self._find(index)
        if found is None or (parked_only and found[0] is not self._parked):
            return None
        line, position = found
        work = line[position]
        if work.whole:  # its size is part of the rule that queued it: it leaves as it is
            del line[position]
            if line is self._queue:
                self.queued -= len(work.indices)
            return work.indices, work.attempt, work.backup
        at = index - work.indices.start
        del line[position]
        for part in (work.indices[at + 1:], work.indices[:at]):  # inserted before: reversed
            if part:
                line.insert(position, Work(part, work.attempt, work.whole, work.backup))
        if line is self._queue:
            self.queued -= 1
            self._recuttable -= 1
        return range(index, index + 1), work.attempt, work.backup

    def _find(self, index: int) -> tuple[deque[Work], int] | None:
        """The line (queued or parked) and position of the work holding ``index``."""
        for line in (self._queue, self._parked):
            for position, work in enumerate(line):
                if index in work.indices:
                    return line, position
        return None

    def park(self, index: int, attempt: int) -> None:
        """Hold a preempted element until nothing else waits."""
        self._parked.append(Work(range(index, index + 1), attempt, whole=True))

    def pop(self, most: int | None = None) -> tuple[range, int, bool] | None:
        """The next work to launch, as (indices, attempt, backup): the queue's first,
        re-cuttable work cut to the size the sizer asks for (``most`` elements at most); a
        parked element once the queue is empty; None if nothing waits. A plain tuple: one
        leaves for each batch."""
        queue = self._queue
        if queue:
            work = queue[0]
            indices = work.indices
            if work.whole:
                queue.popleft()
            else:
                size = self.sizer.next_size(self._recuttable)
                if most is not None and size > most:
                    size = most
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
