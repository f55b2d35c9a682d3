"""The batches in flight: launched and not yet over, what each has reported, which element of
each is in fn.

A scan for stragglers and timeouts must not visit every batch of a 1,000-slot cluster: the
batches with an element in fn are kept in the order it entered, so a walk for those in fn
longer than some limit stops at the first that is young enough.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from gpar.records import Ended, InFn, Running


@dataclass(slots=True)
class Batch:
    """A launched batch: which of its positions reported, which one is in fn, where it ends."""

    indices: range
    attempt: int
    backup: bool
    end: int  # positions [end, len) were handed back by the worker
    reported: int = 0  # positions [0, reported) have reported
    running: InFn | None = None  # the element in fn
    straggling: bool = False

    def unstarted(self) -> tuple[range, ...]:
        """The elements it owns that never reported, other than the one in fn: before it,
        finished but not yet written (output=); behind it, not seen starting."""
        if self.running is None:
            return (self.indices[self.reported:self.end],)
        position = self.running.position
        return (self.indices[self.reported:position],
                self.indices[max(position + 1, self.reported):self.end])

    def parts_without(self, errors: dict[int, object], start: int, stop: int) -> list[range]:
        """Positions in [start, stop) the batch still owns, less those in ``errors``."""
        stop = min(stop, self.end)
        parts, begin = [], start
        for position in sorted(p for p in errors if start <= p < stop):
            if begin < position:
                parts.append(range(begin, position))
            begin = position + 1
        if begin < stop:
            parts.append(range(begin, stop))
        return parts

    def cancelled(self, message: str) -> Ended | None:
        """Its attempt in fn, cancelled for ``message``; None if none is in fn."""
        if self.running is None:
            return None
        position, started = self.running
        return Ended(self.indices[position], self.attempt, started, "cancelled", message)


class InFlight:
    """The batches in flight by number, and those with an element in fn by when it entered."""

    def __init__(self) -> None:
        self.batches: dict[int, Batch] = {}
        self.contested: set[int] = set()  # batches running an element that has a backup
        self._in_fn: OrderedDict[int, float] = OrderedDict()  # batch -> when its element entered fn
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def in_fn(self) -> int:
        """Batches with an element in fn now."""
        return len(self._in_fn)

    def unreported(self) -> int:
        """Elements launched whose batches have not reported them yet, each once (a
        backup's element is its original's too)."""
        return sum(batch.end - batch.reported for batch in self.batches.values()
                   if not batch.backup)

    def launch(self, indices: range, attempt: int, backup: bool) -> int:
        """Number a new batch of ``indices`` and hold it; returns its number."""
        batch = self._next
        self._next += 1
        self.batches[batch] = Batch(indices, attempt, backup, len(indices))
        if backup:
            self.contested.add(batch)
        return batch

    def on_running(self, event: Running) -> None:
        """Which element of the batch is in fn now, if any. A new element in fn is not (yet)
        straggling."""
        batch, running = event
        live = self.batches.get(batch)
        if live is None:
            return
        if running is None:
            live.running = None
            self._in_fn.pop(batch, None)
            return
        if live.running is None or live.running.position != running.position:
            live.straggling = False
        live.running = running
        self._in_fn[batch] = running.since
        self._in_fn.move_to_end(batch)

    def forget(self, batch: int) -> Batch | None:
        """The batch is over: drop it; returns it, or None if it was not in flight."""
        self._in_fn.pop(batch, None)
        self.contested.discard(batch)
        return self.batches.pop(batch, None)

    def clear(self) -> dict[int, Batch]:
        """Every batch is over: returns them, by number."""
        batches = dict(self.batches)
        self.batches.clear()
        self._in_fn.clear()
        self.contested.clear()
        return batches

    def first_in_fn_since(self) -> float | None:
        """When the element longest in fn entered it; None if none is in fn."""
        for since in self._in_fn.values():  # the first one, if any
            return since
        return None

    def in_fn_longer_than(self, now: float, limit: float) -> list[tuple[int, Batch]]:
        """Batches whose element in fn entered it more than ``limit`` ago; oldest first.

        The order is that in which the starts were reported, which is start order up to the
        delay of a progress message, so the walk stops at the first that is young enough.
        """
        found = []
        for batch in self._in_fn:
            live = self.batches[batch]
            if now - live.running.since <= limit:
                break
            found.append((batch, live))
        return found

    def all_started_straggle(self, waiting: bool) -> bool:
        """Work waits (``waiting``, or a batch launched and not started) and every batch that
        has started straggles. The walk stops at the first batch running at its pace: usually
        the first one."""
        started = False
        for live in self.batches.values():
            if live.running is None:
                waiting = True
            elif not live.straggling:
                return False
            else:
                started = True
        return waiting and started
