"""Scheduling policy: every decision of a job as a pure state machine, with the clock passed in.

Events go in (``on_*``), decisions come out (``launches``, ``tick``); no Ray, no I/O, so tests
drive it with a fake clock. The Ray loop in scheduler.py only turns decisions into Ray calls and
Ray outcomes into events. An element of xs is the unit of every rule, however it is batched.

Rules (DESIGN §3):

* **Per-element budget**: a failed attempt is retried while the element has failed at most
  ``task_retries`` times and the failure is retryable (system failures always; an exception
  from fn only if its type is in ``retry_on``). A retry runs alone.
* **Total budget**: every failed attempt counts (retried or not, timeouts, lost batches); when
  more than ``max_failures`` have failed the job stops: ``stop == "budget"``.
* **Deadline**: at ``deadline_at`` the job stops; what has not finished is marked "deadline".
* **task_timeout**: an element whose attempt has run longer is killed with its batch, charged a
  retryable failure; the batch's other unreported elements are re-dispatched uncharged.
* **Quorum**: once ``ceil(quorum * elements)`` elements are final the job stops; the rest are
  marked "quorum".
* **Stragglers**: an attempt running more than BACKUP_SLOWDOWN times the median element time
  (and at least BACKUP_MIN_S) hands the elements queued behind it in its batch to new batches,
  so it holds back only itself.
* **Backups** (cubed's ``should_launch_backup``): once at least BACKUP_AFTER_DONE of the elements
  are final, such a straggler also gets a second attempt; the first to finish wins and the other
  is cancelled. At most BACKUP_SHARE of the elements get one. At the tail, when nothing is left
  to launch and a slot is idle, TAIL_SLOWDOWN times the median is straggling enough.
* **Slow nodes**: a node whose attempts were stragglers SLOW_NODE_STRIKES times gets no new
  work for the rest of the job (at most half the nodes, never the last): elements that straggle
  wherever they run are what backups are for, a node that is slow for everything is not.
* **Lost batch** (worker died): reported elements are kept. A lone unreported element is charged
  a retryable failure. Several are re-run uncharged: the one last seen in fn alone, the rest
  as usual (or, with nothing seen, two halves), so a crash is charged only to the element that
  caused it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from gpar.results import TaskFailure
from gpar.split import BatchSizer
from gpar.worker import ElementError

#: Backups start once this share of the elements is final...
BACKUP_AFTER_DONE = 0.5
#: ...for an attempt running this many times longer than the median element...
BACKUP_SLOWDOWN = 3.0
#: ...and at least this long (a 1 ms median must not make a 4 ms element a straggler)...
BACKUP_MIN_S = 0.5
#: ...for at most this share of the elements.
BACKUP_SHARE = 0.1

#: At the tail (nothing left to launch, a slot idle) an attempt running this many times the
#: median already gets its backup: the slot would idle anyway (MapReduce's backups run then).
TAIL_SLOWDOWN = 1.5

#: Stragglers on one node before it gets no new work: one could be the element's fault, a
#: second on the same node rarely is. bench/bench_stragglers.py's slow-node case measures it.
SLOW_NODE_STRIKES = 2

_OPEN, _DONE, _FAILED, _CANCELLED = 0, 1, 2, 3


def default_max_failures(elements: int) -> int:
    """The total failure budget when none is given: 10, or 5 % of the elements if more."""
    return max(10, math.ceil(0.05 * elements))


@dataclass(frozen=True)
class Rules:
    """The knobs of one job. Times are on the policy's clock (seconds, monotonic)."""

    max_workers: int
    task_retries: int = 3
    max_failures: int = 10
    deadline_at: float | None = None
    task_timeout_s: float | None = None
    quorum: float = 1.0
    backups: bool = True
    errors: str = "warn"


@dataclass(frozen=True)
class Launch:
    """Decision: run elements ``indices`` as batch ``batch``."""

    batch: int
    indices: range
    attempt: int
    backup: bool = False


@dataclass(frozen=True)
class Charge:
    """A failed attempt the policy charged without a report from the worker (timeout, loss)."""

    batch: int
    index: int
    attempt: int
    started_at: float | None
    outcome: str  # "timeout" or "system"
    message: str


@dataclass(frozen=True)
class _Work:
    indices: range
    attempt: int
    whole: bool  # dispatch as one batch, never re-cut
    backup: bool = False


@dataclass
class _Batch:
    indices: range
    attempt: int
    backup: bool
    reported: int = 0  # positions [0, reported) have reported
    owned: int = -1  # positions [owned, len) were handed to other batches; -1: none
    running: tuple[int, float] | None = None  # (position, started_at) of the element in fn
    straggling: bool = False

    @property
    def end(self) -> int:
        return len(self.indices) if self.owned < 0 else self.owned


@dataclass
class Policy:
    """The state of one job; see the module docstring for the rules."""

    elements: int
    rules: Rules
    sizer: BatchSizer
    state: bytearray = field(init=False)
    failures: dict[int, TaskFailure] = field(default_factory=dict)
    failed_attempts: int = 0
    stop: str | None = None  # "quorum", "deadline", "budget", "raise", or None while running
    first_failure: TaskFailure | None = None  # the first element that failed for good
    final: int = 0
    backups_launched: int = 0
    retries: int = 0
    timeouts: int = 0
    batches_split: int = 0  # lost batches re-run uncharged because the culprit was unknown

    def __post_init__(self):
        self.state = bytearray(self.elements)
        self._pending: deque[_Work] = deque([_Work(range(self.elements), 0, whole=False)])
        self._undispatched = self.elements
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._failed_count: dict[int, int] = {}  # element -> failed attempts so far
        self._last_error: dict[int, ElementError] = {}
        self._backed_up: set[int] = set()
        self._new_stragglers: list[int] = []
        self._durations: list[float] = []  # sorted sample of per-element times, for the median

    # ----------------------------------------------------------------- decisions

    @property
    def finished(self) -> bool:
        return self.stop is not None or self.final == self.elements

    def launches(self, in_flight_limit: int) -> list[Launch]:
        """Batches to start now, while fewer than ``in_flight_limit`` are in flight."""
        decided = []
        while self._pending and len(self._batches) < in_flight_limit and not self.finished:
            work = self._pending.popleft()
            indices = work.indices
            if not work.whole:
                size = self.sizer.next_size(self._undispatched)
                if size < len(indices):
                    self._pending.appendleft(_Work(indices[size:], work.attempt, whole=False))
                    indices = indices[:size]
                self._undispatched -= len(indices)
            indices = self._trim_final(indices)
            if not indices:
                continue
            batch = self._next_batch
            self._next_batch += 1
            self._batches[batch] = _Batch(indices, work.attempt, work.backup)
            decided.append(Launch(batch, indices, work.attempt, work.backup))
        return decided

    def tick(self, now: float) -> tuple[list[int], list[Charge]]:
        """Batches to kill now, and the failures charged for it.

        Killed: a batch over task_timeout; a batch left with nothing of its own to do (a backup
        race was decided, or it moved on to elements handed to other batches); every batch once
        the job stops.
        """
        deadline = self.rules.deadline_at
        if self.stop is None and deadline is not None and now >= deadline:
            self._stop("deadline")
        if self.stop is not None:
            kills = list(self._batches)
            self._batches.clear()
            return kills, []
        self._check_quorum()  # elements also become final through losses and timeouts
        if self.stop is not None:
            return self.tick(now)
        kills, charges = self._timeouts(now)
        self._handle_stragglers(now)
        for batch, live in list(self._batches.items()):
            if self._redundant(live):
                del self._batches[batch]
                kills.append(batch)
        return kills, charges

    def take_stragglers(self) -> list[int]:
        """Batches declared stragglers since the last call (so the loop can tell slow nodes)."""
        batches, self._new_stragglers = self._new_stragglers, []
        return batches

    def next_check(self, now: float) -> float:
        """Seconds until tick() could decide something new (the loop's longest wait)."""
        times = [1.0]
        if self.rules.deadline_at is not None:
            times.append(self.rules.deadline_at - now)
        if self.rules.task_timeout_s is not None:
            for batch in self._batches.values():
                if batch.running:
                    times.append(batch.running[1] + self.rules.task_timeout_s - now)
        return max(0.0, min(times))

    # -------------------------------------------------------------------- events

    def on_running(self, batch: int, position: int, started_at: float) -> None:
        """The element at ``position`` of ``batch`` entered fn at ``started_at``."""
        live = self._batches.get(batch)
        if live is not None:
            live.running = (position, started_at)

    def on_reported(
        self,
        batch: int,
        first: int,
        count: int,
        errors: dict[int, ElementError],
        seconds: float,
        now: float,
    ) -> list[range]:
        """Positions ``first .. first + count`` of ``batch`` finished in ``seconds`` of fn time.

        Returns the ranges of elements whose values are accepted (first finisher wins);
        positions in ``errors`` failed.
        """
        live = self._batches.get(batch)
        if live is None or count == 0:
            return []
        live.reported = first + count
        self.sizer.observe(count, seconds)
        self._sample_duration(seconds / count)
        accepted = []
        for part in self._owned_parts(live, first, first + count, errors):
            part_indices = live.indices[part.start:part.stop]
            fresh = self._accept(part_indices)
            accepted.extend(fresh)
        for position, error in errors.items():
            if position < live.end:
                self._attempt_failed(live.indices[position], live.attempt, error)
        if live.reported >= len(live.indices):  # done; a batch that only finished what it owns
            del self._batches[batch]  # still runs handed-off elements: tick() kills it
        self._check_quorum()
        return accepted

    def on_lost(self, batch: int, error: ElementError) -> Charge | None:
        """The batch's stream broke before every element it owns reported (worker died)."""
        live = self._batches.pop(batch, None)
        if live is None:
            return None
        unreported = live.indices[live.reported:live.end]
        unreported = self._trim_final(unreported)
        if not unreported:
            return None
        if len(unreported) > 1:  # not charged: which element crashed is not known yet
            self.batches_split += 1
            if live.running and live.indices[live.running[0]] == unreported[0]:
                # the element last seen in fn is the likely culprit: run it alone first
                self._requeue(unreported[1:], live.attempt + 1, whole=False)
                self._requeue(unreported[:1], live.attempt + 1, whole=True)
            else:
                half = len(unreported) // 2
                self._requeue(unreported[half:], live.attempt + 1, whole=True)
                self._requeue(unreported[:half], live.attempt + 1, whole=True)
            return None
        index = unreported[0]
        started = live.running[1] if live.running else None
        self._attempt_failed(index, live.attempt, error)
        return Charge(batch, index, live.attempt, started, "system", error.message)

    # ------------------------------------------------------------------- helpers

    def _owned_parts(self, live: _Batch, start: int, stop: int, errors) -> list[range]:
        """Positions in [start, stop) still owned by the batch and without an error."""
        stop = min(stop, live.end)
        parts, begin = [], start
        for position in sorted(p for p in errors if start <= p < stop):
            if begin < position:
                parts.append(range(begin, position))
            begin = position + 1
        if begin < stop:
            parts.append(range(begin, stop))
        return parts

    def _accept(self, indices: range) -> list[range]:
        """Mark open elements of ``indices`` done; return the runs that were open."""
        if not indices:
            return []
        segment = self.state[indices.start:indices.stop]
        if segment.count(_OPEN) == len(indices):
            self.state[indices.start:indices.stop] = bytes([_DONE]) * len(indices)
            self.final += len(indices)
            return [indices]
        runs, begin = [], None
        for offset, value in enumerate(segment):
            if value == _OPEN:
                self.state[indices.start + offset] = _DONE
                self.final += 1
                begin = offset if begin is None else begin
            elif begin is not None:
                runs.append(indices[begin:offset])
                begin = None
        if begin is not None:
            runs.append(indices[begin:])
        return runs

    def _attempt_failed(self, index: int, attempt: int, error: ElementError) -> None:
        self.failed_attempts += 1
        if self.state[index] != _OPEN:
            self._check_budget()
            return
        failed = self._failed_count.get(index, 0) + 1
        self._failed_count[index] = failed
        self._last_error[index] = error
        if error.retryable and failed <= self.rules.task_retries:
            self.retries += 1
            self._requeue(range(index, index + 1), attempt + 1, whole=True)
        else:
            fns_fault = error.kind == "error" or (error.kind == "output" and not error.retryable)
            reason = "error" if fns_fault else "system"
            failure = TaskFailure(index, error.exc_type, error.message, error.traceback, failed,
                                  reason, error.exception)
            self._finalize(index, _FAILED, failure)
            self.first_failure = self.first_failure or failure
            if self.rules.errors == "raise":
                self._stop("raise")
        self._check_budget()

    def _finalize(self, index: int, state: int, failure: TaskFailure) -> None:
        self.state[index] = state
        self.final += 1
        self.failures[index] = failure

    def _timeouts(self, now: float) -> tuple[list[int], list[Charge]]:
        limit = self.rules.task_timeout_s
        if limit is None:
            return [], []
        kills, charges = [], []
        for batch, live in list(self._batches.items()):
            if not live.running or now - live.running[1] <= limit:
                continue
            position, started = live.running
            index = live.indices[position]
            kills.append(batch)
            del self._batches[batch]
            rest = self._trim_final(live.indices[position + 1:live.end])
            if rest:
                self._requeue(rest, live.attempt + 1, whole=False)
            if self.state[index] == _OPEN:
                self.timeouts += 1
                error = ElementError(
                    "TimeoutError", f"the attempt ran longer than task_timeout={limit} s",
                    "", "timeout", retryable=True)
                charges.append(Charge(batch, index, live.attempt, started, "timeout",
                                      error.message))
                self._attempt_failed(index, live.attempt, error)
        return kills, charges

    def _handle_stragglers(self, now: float) -> None:
        """A straggler hands the elements queued behind it to new batches; it may get a backup."""
        median = self._median_duration()
        if median is None:
            return
        threshold = max(BACKUP_MIN_S, BACKUP_SLOWDOWN * median)
        backups_allowed = (self.rules.backups
                           and self.final >= BACKUP_AFTER_DONE * self.elements)
        if backups_allowed and not self._pending and len(self._batches) < self.rules.max_workers:
            threshold = max(BACKUP_MIN_S, TAIL_SLOWDOWN * median)  # the tail: slots are idle
        budget = max(1, int(BACKUP_SHARE * self.elements))
        for batch, live in list(self._batches.items()):
            if not live.running or now - live.running[1] <= threshold:
                continue
            if not live.straggling:
                live.straggling = True
                self._new_stragglers.append(batch)
            position, _ = live.running
            rest = self._trim_final(live.indices[position + 1:live.end])
            live.owned = position + 1
            if rest:
                self._requeue(rest, live.attempt + 1, whole=False)
            index = live.indices[position]
            if (backups_allowed and not live.backup and self.backups_launched < budget
                    and index not in self._backed_up and self.state[index] == _OPEN):
                self._backed_up.add(index)
                self.backups_launched += 1
                self._pending.appendleft(_Work(range(index, index + 1), live.attempt + 1,
                                               whole=True, backup=True))

    def _requeue(self, indices: range, attempt: int, whole: bool) -> None:
        """Queue elements again: whole pieces (retries, halves) first, re-cuttable ones last."""
        if whole:
            self._pending.appendleft(_Work(indices, attempt, whole=True))
        else:
            self._undispatched += len(indices)
            self._pending.append(_Work(indices, attempt, whole=False))

    def _redundant(self, live: _Batch) -> bool:
        if live.running and live.running[0] >= live.end:
            return True
        return all(self.state[index] != _OPEN for index in live.indices[live.reported:live.end])

    def _trim_final(self, indices: range) -> range:
        """``indices`` without final elements at either end (final ones inside stay: rare)."""
        start, stop = indices.start, indices.stop
        while start < stop and self.state[start] != _OPEN:
            start += 1
        while stop > start and self.state[stop - 1] != _OPEN:
            stop -= 1
        return range(start, stop)

    def _sample_duration(self, seconds: float) -> None:
        bisect.insort(self._durations, seconds)
        if len(self._durations) > 2001:  # keep the sample small: drop both extremes
            del self._durations[0], self._durations[-1]

    def _median_duration(self) -> float | None:
        if not self._durations:
            return None
        return self._durations[len(self._durations) // 2]

    def _check_quorum(self) -> None:
        if self.stop is None and self.rules.quorum < 1.0:
            if self.final >= math.ceil(self.rules.quorum * self.elements):
                self._stop("quorum")

    def _check_budget(self) -> None:
        if self.stop is None and self.failed_attempts > self.rules.max_failures:
            self._stop("budget")

    def _stop(self, reason: str) -> None:
        """Stop the job; open elements become TaskFailures naming why (deadline, quorum...)."""
        self.stop = reason
        messages = {
            "deadline": "the job's deadline passed before this task finished",
            "quorum": "the job's quorum was reached before this task finished",
            "budget": "the job's total failure budget was exceeded before this task finished",
            "raise": "the job stopped at the first failure (errors='raise')",
        }
        for index, value in enumerate(self.state):
            if value == _OPEN:
                self._finalize(index, _CANCELLED, TaskFailure(
                    index, "Cancelled", messages[reason], "", self._failed_count.get(index, 0),
                    reason if reason in ("deadline", "quorum") else "cancelled"))


@dataclass
class SlowNodes:
    """Which nodes get no new work: those with SLOW_NODE_STRIKES stragglers, at most half of
    the ``nodes`` and never the last one."""

    nodes: int
    strikes: dict[str, int] = field(default_factory=dict)
    avoided: set[str] = field(default_factory=set)

    def on_straggler(self, node: str) -> bool:
        """A straggler ran on ``node``; returns whether the node is avoided from now on."""
        if not node or node in self.avoided:
            return False
        self.strikes[node] = self.strikes.get(node, 0) + 1
        if self.strikes[node] >= SLOW_NODE_STRIKES and len(self.avoided) < self.nodes // 2:
            self.avoided.add(node)
            return True
        return False
