"""Scheduling policy: every decision of a job as a pure state machine, with the clock passed in.

Events go in (``on_*``), decisions come out (``launches``, ``tick``); no Ray, no I/O, so tests
drive it with a fake clock and the simulator (gpar/simulator.py) drives it at scale. The loop in
gpar/loop.py turns decisions into backend calls and backend news into events. An element of xs
is the unit of every rule, however it is batched.

Rules (DESIGN §3):

* **Per-element budget**: a failed attempt is retried while the element has failed at most
  ``task_retries`` times and the failure is retryable (system failures always; an exception
  from fn only if its type is in ``retry_on``). A retry runs alone.
* **Total budget**: every failed attempt counts (retried or not, timeouts, attempts lost with
  their batch); when more than ``max_failures`` have failed the job stops: ``stop == "budget"``.
* **Deadline**: at ``deadline_at`` the job stops; what has not finished is marked "deadline".
* **task_timeout**: an element whose attempt has run longer is killed with its batch, charged a
  retryable failure; the batch's elements not yet started are queued again, uncharged.
* **Quorum**: once ``ceil(quorum * elements)`` elements are final the job stops; the rest are
  marked "quorum".
* **Hand-off**: a batch of several elements hands the elements queued behind one that has run
  longer than its launch's ``handoff_after_s`` back to the queue. The worker decides it, so an
  element given away is never started by that batch (worker.py).
* **Stragglers** run more than BACKUP_SLOWDOWN times the median element time (and at least
  BACKUP_MIN_S); with no element finished yet, nothing is a straggler.
* **Preemption** (no starvation): while elements wait (in the queue, or parked) and every slot
  is busy, a straggling attempt is killed and its element parked; parked elements start only
  when the queue is empty. Not charged to any budget. Each time an element is preempted, its
  next attempt may run PREEMPT_BACKOFF times longer before it can be preempted again: an
  element that always hangs is preempted about log2(job time / straggler time) times in all,
  never in a loop, and what waits behind it is never stuck for good. A straggling backup is
  simply cancelled (its element has its first attempt still, or a retry queued). A batch
  whose elements before the straggler finished but are not yet written (output=) gets
  WRITING_PATIENCE times the patience, so its worker can report them rather than lose them.
* **Backups** (cubed's ``should_launch_backup``): once at least BACKUP_AFTER_DONE of the elements
  are final and nothing waits in the queue, a straggler gets a second attempt; the first to
  finish wins and the others are cancelled. A backup that straggles gets one too. At most
  BACKUP_SHARE of the elements are backed up. At the tail, when nothing is left to launch and
  a slot is idle, TAIL_SLOWDOWN times the median is straggling enough.
* **Slow nodes**: a node whose attempts were stragglers SLOW_NODE_STRIKES times, and at least
  SLOW_NODE_SHARE of them, gets no new work for the rest of the job (at most half the nodes,
  never the last): elements that straggle wherever they run are what backups are for, a node
  that is slow for everything is not. The loop forgets them if every batch in flight straggles
  while work waits (hangs look like slow nodes) or the nodes left are all avoided.
* **Lost batch** (worker died): reported elements are kept. The worker's note (worker.py) says
  where it was: the element in fn lost its attempt (charged, a system failure, retried alone);
  those before it finished, their values lost with the worker: queued again uncharged, as new
  attempts; those behind it never started: queued again uncharged, attempt number unchanged.
  With no element in fn (it died before the first, or between elements), what ran and what did
  not are re-run apart, or one part in two halves, uncharged; a lone element is charged, so a
  crash that repeats ends. With no note (its node was lost), the element last seen in fn is
  charged, the rest queued again uncharged; with none seen, the same halves.

Every attempt the policy ends or sees lost comes back as a ``Stopped`` record, so the report has
a row for each attempt, however it ended.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from gpar.records import Counts, ElementError, Ended, Launch, Stopped
from gpar.results import TaskFailure
from gpar.split import BatchSizer

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
#: second on the same node rarely is. bench/bench_stragglers.py's slow-node case measures it...
SLOW_NODE_STRIKES = 2
#: ...if they are also this share of its attempts: a node slow for everything straggles on
#: nearly all, while stragglers that fall at random (2 % of attempts in bench_simulator.py's
#: paper-scale job) put two on a quarter of 1,000 nodes, at a rate near 2 % there.
SLOW_NODE_SHARE = 0.5

#: Each preemption of an element lets its next attempt run this many times longer before it
#: can be preempted again: the work lost on one element is at most about twice its last run.
PREEMPT_BACKOFF = 2.0

#: A straggler's batch still writing the tables of elements finished before it (output=) may run
#: this many times its patience before preemption: a write lost with the batch is work done
#: again, and on a busy object store a file takes seconds (bench/bench_reduce.py (c)).
WRITING_PATIENCE = 8.0

#: Longest the loop waits for news before it asks again (Ctrl-C is handled between waits).
MAX_WAIT_S = 1.0

#: Shortest time between two scans of the running attempts for stragglers and timeouts: a scan
#: costs a few steps per straggler, and events come far more often on a large cluster.
SCAN_S = 0.05

_OPEN, _DONE, _FAILED, _CANCELLED = 0, 1, 2, 3
_DONE_BYTE = bytes([_DONE])
_SAMPLE = 2001  # per-element times kept for the median


def quorum_count(quorum: float, elements: int) -> int:
    """Elements that make a quorum: 29/35 of 35 is 29, rounded before ceil (the product is
    29.000000000000004)."""
    return math.ceil(round(quorum * elements, 9))


def default_max_failures(elements: int) -> int:
    """The total failure budget when none is given: 10, or 5 % of the elements if more."""
    return max(10, math.ceil(0.05 * elements))


@dataclass(frozen=True)
class Rules:
    """The knobs of one job. Times are on the policy's clock (seconds)."""

    max_workers: int
    task_retries: int = 3
    max_failures: int = 10
    deadline_at: float | None = None
    task_timeout_s: float | None = None
    quorum: float = 1.0
    backups: bool = True
    errors: str = "warn"


class _Work(NamedTuple):  # a tuple, as Launch is
    indices: range
    attempt: int
    whole: bool  # dispatch as one batch, never re-cut
    backup: bool = False


@dataclass(slots=True)
class _Batch:
    """A launched batch: which of its positions reported, which one is in fn, where it ends."""

    indices: range
    attempt: int
    backup: bool
    end: int  # positions [end, len) were handed back by the worker
    reported: int = 0  # positions [0, reported) have reported
    running: tuple[int, float] | None = None  # (position, started_at) of the element in fn
    straggling: bool = False


@dataclass
class Policy:
    """The state of one job; see the module docstring for the rules."""

    elements: int
    rules: Rules
    sizer: BatchSizer
    state: bytearray = field(init=False)
    failures: dict[int, TaskFailure] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)  # the job's JobReport, when it has one
    stop: str | None = None  # "quorum", "deadline", "budget", "raise", or None while running
    first_failure: TaskFailure | None = None  # the first element that failed for good
    final: int = 0

    def __post_init__(self):
        self.state = bytearray(self.elements)
        self._pending: deque[_Work] = deque([_Work(range(self.elements), 0, whole=False)])
        self._queued = self.elements  # elements in _pending
        self._undispatched = self.elements  # of which in re-cuttable work
        self._parked: deque[tuple[int, int]] = deque()  # preempted (element, next attempt)
        self._batches: dict[int, _Batch] = {}
        self._running: OrderedDict[int, None] = OrderedDict()  # batches by when fn last began
        self._next_batch = 0
        self._next_scan = -math.inf
        self._failed_count: dict[int, int] = {}  # element -> failed attempts so far
        self._last_attempt: dict[int, int] = {}  # element -> its latest attempt run alone
        self._preempted: dict[int, int] = {}  # element -> times preempted
        self._backed_up: set[int] = set()  # batches whose straggler got its backup
        self._contested: set[int] = set()  # batches running an element that has a backup
        self._new_stragglers: list[int] = []
        self._durations: list[float] = []  # sorted; [_low:] is the sample of per-element times
        self._low = 0
        # Seconds in fn after which an attempt straggles (at the tail: _tail_threshold), from
        # the median; None before any element finished. _check_after: after which tick() acts
        # on it, as a straggler at the tail or at task_timeout_s.
        self._threshold: float | None = None
        self._tail_threshold: float | None = None
        timeout = self.rules.task_timeout_s
        self._timeout = math.inf if timeout is None else timeout
        self._check_after = self._timeout

    # ----------------------------------------------------------------- decisions

    @property
    def finished(self) -> bool:
        return self.stop is not None or self.final == self.elements

    def launches(self, in_flight_limit: int) -> list[Launch]:
        """Batches to start now, while fewer than ``in_flight_limit`` are in flight."""
        decided = []
        while len(self._batches) < in_flight_limit and not self.finished:
            work = self._next_work()
            if work is None:
                break
            indices, attempt, backup = work
            indices = self._trim_final(indices)
            if not indices:
                continue
            batch = self._next_batch
            self._next_batch += 1
            self.counts.batches += 1
            self._batches[batch] = _Batch(indices, attempt, backup, len(indices))
            if backup:
                self._contested.add(batch)
            decided.append(Launch(batch, indices, attempt, backup,
                                  self._threshold or BACKUP_MIN_S))
        return decided

    def tick(self, now: float) -> list[Stopped]:
        """Batches ended now: over task_timeout, preempted, left with nothing of their own to
        do (a backup race was decided), or all of them once the job stops."""
        deadline = self.rules.deadline_at
        if self.stop is None and deadline is not None and now >= deadline:
            self._stop("deadline")
        self._check_quorum()  # elements also become final through losses and timeouts
        if self.stop is not None:
            return self._kill_all(_STOP_MESSAGES[self.stop])
        if self.final == self.elements:  # what still runs lost a race to a backup
            return self._kill_all(_LOST_RACE)
        if now < self._next_scan:
            return []
        self._next_scan = now + SCAN_S
        stopped = self._timeouts(now)
        stopped += self._handle_stragglers(now)
        stopped += self._redundant()
        return stopped + self.tick(now) if self.finished else stopped

    def take_stragglers(self) -> list[int]:
        """Batches declared stragglers since the last call (so the loop can tell slow nodes)."""
        batches, self._new_stragglers = self._new_stragglers, []
        return batches

    def stuck(self) -> bool:
        """Work waits (queued, parked, or launched and not started) and every batch that has
        started straggles. The walk stops at the first batch running at its pace: usually the
        first one."""
        waiting, started = bool(self._pending or self._parked), False
        for live in self._batches.values():
            if live.running is None:
                waiting = True
            elif not live.straggling:
                return False
            else:
                started = True
        return waiting and started

    def next_check(self, now: float) -> float:
        """Seconds until tick() could decide something new: the loop waits that long for news,
        at most MAX_WAIT_S.

        Called on every turn of the loop, so it compares instead of calling min() and max(),
        which take five times as long with two numbers.
        """
        wait = MAX_WAIT_S
        deadline = self.rules.deadline_at
        if deadline is not None and deadline - now < wait:
            wait = deadline - now
        if self._running:  # the attempt longest in fn is the first to straggle or time out
            due = self._batches[next(iter(self._running))].running[1] + self._check_after
            if due < self._next_scan:
                due = self._next_scan
            if due - now < wait:
                wait = due - now
        return wait if wait > 0.0 else 0.0

    # -------------------------------------------------------------------- events

    def on_running(self, batch: int, running: tuple[int, float] | None) -> None:
        """The element at position ``running[0]`` of ``batch`` entered fn at ``running[1]``;
        None: none is in fn (with output=, its worker writes the last tables)."""
        live = self._batches.get(batch)
        if live is None:
            return
        if running is None:
            live.running = None
            self._running.pop(batch, None)
            return
        if live.running is None or live.running[0] != running[0]:
            live.straggling = False
        live.running = running
        self._running[batch] = None
        self._running.move_to_end(batch)

    def on_handed_off(self, batch: int, end: int) -> None:
        """The worker of ``batch`` gave back its positions from ``end`` on: queue them again."""
        live = self._batches.get(batch)
        if live is None or end >= live.end:
            return
        rest = self._trim_final(live.indices[end:live.end])
        live.end = end
        if rest:
            self._enqueue(_Work(rest, live.attempt, whole=False))

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
        if not errors:  # the usual report: accept what the batch still owns
            accepted = self._accept(live.indices[first:min(first + count, live.end)])
        else:
            accepted = []
            for part in self._owned_parts(live, first, first + count, errors):
                accepted.extend(self._accept(live.indices[part.start:part.stop]))
            for position, error in errors.items():
                if position < live.end:
                    self._attempt_failed(live.indices[position], live.attempt, error)
        if live.reported >= live.end:
            self._forget(batch)
        self._check_quorum()
        return accepted

    def on_lost(self, batch: int, error: ElementError, at: int | None = None) -> Stopped | None:
        """The batch's stream broke before every element it owns reported (worker died).
        ``at``: where its worker's note says it was (records.BatchLost); None: unread."""
        live = self._forget(batch)
        if live is None or live.reported >= live.end:
            return None
        if at is None or 0 <= at < live.reported:  # no note, or not this batch's
            return self._lost_unread(batch, live, error)
        if 0 <= at < live.end:  # the element in fn killed its worker
            started = live.running[1] if live.running and live.running[0] == at else None
            live.running = (at, started)
            ran = live.indices[live.reported:at]
            self._rerun(ran, live.attempt)
            behind = self._requeue(live.indices[at + 1:live.end], live.attempt)
            return self._charge_lost(batch, live, error, behind, (ran,))
        done = live.end if at >= 0 else min(max(~at, live.reported), live.end)
        return self._lost_outside_fn(batch, live, error, done)

    def _lost_unread(self, batch: int, live: _Batch, error: ElementError) -> Stopped:
        """No note: charge the element last seen in fn (the others were not seen starting);
        with none seen, split the batch in halves, uncharged, or charge a lone element."""
        error = dataclasses.replace(error, message=error.message + _UNREAD)
        if live.running is None:
            open_ones = self._trim_final(live.indices[live.reported:live.end])
            if len(open_ones) != 1:
                self._split(open_ones, live.attempt)
                return Stopped(batch, None, (live.indices[live.reported:live.end],),
                               killed=False)
            live.running = (live.indices.index(open_ones[0]), None)
        return self._charge_lost(batch, live, error, self._requeue_unstarted(live))

    def _lost_outside_fn(self, batch: int, live: _Batch, error: ElementError,
                         done: int) -> Stopped:
        """The worker died with no element in fn, those before position ``done`` finished:
        which part killed it is not known. Re-run what ran and what did not apart, or a
        single part in halves, uncharged; a lone element is charged (a crash may repeat)."""
        ran = live.indices[live.reported:done]
        ran_open, rest = self._trim_final(ran), self._trim_final(live.indices[done:live.end])
        if len(ran_open) + len(rest) == 1:
            index = (ran_open or rest)[0]
            live.running = (live.indices.index(index), None)
            others = (range(ran.start, index), range(index + 1, ran.stop)) if index in ran \
                else (ran,)
            others = tuple(filter(None, others))
            return self._charge_lost(batch, live, error, (), others)
        attempt = self._rerun_attempt(ran_open, live.attempt) if ran_open else live.attempt
        if ran_open and rest:
            self.counts.batches_lost += 1
            self._enqueue(_Work(rest, live.attempt, whole=True), front=True)
            self._enqueue(_Work(ran_open, attempt, whole=True), front=True)
        else:
            self._split(ran_open, attempt)
            self._split(rest, live.attempt)
        return Stopped(batch, None, (live.indices[done:live.end],), killed=False, ran=(ran,))

    def _charge_lost(self, batch: int, live: _Batch, error: ElementError,
                     unstarted: tuple[range, ...], ran: tuple[range, ...] = ()) -> Stopped:
        """The lost attempt of the element at ``live.running``: charged, retried alone."""
        position, started = live.running
        index = live.indices[position]
        self._attempt_failed(index, live.attempt, error)  # a retry if it is still open
        ended = Ended(index, live.attempt, started, "system", error.message)
        return Stopped(batch, ended, unstarted, killed=False, ran=ran)

    def _split(self, indices: range, attempt: int) -> None:
        """Queue several elements lost together in two halves, first: a crash that repeats
        is found in one of them."""
        if len(indices) > 1:
            self.counts.batches_lost += 1
            half = len(indices) // 2
            self._enqueue(_Work(indices[half:], attempt, whole=True), front=True)
            self._enqueue(_Work(indices[:half], attempt, whole=True), front=True)

    def _rerun(self, ran: range, attempt: int) -> None:
        """Queue again, uncharged, elements that finished as ``attempt`` in a lost batch."""
        ran = self._trim_final(ran)
        if ran:
            self._enqueue(_Work(ran, self._rerun_attempt(ran, attempt), whole=False),
                          front=True)

    def _requeue(self, indices: range, attempt: int) -> tuple[range, ...]:
        """Queue again, uncharged, elements never started; returns them if any is open."""
        indices = self._trim_final(indices)
        if indices:
            self._enqueue(_Work(indices, attempt, whole=False))
        return (indices,) if indices else ()

    def _rerun_attempt(self, indices: range, attempt: int) -> int:
        """The attempt number of a re-run of ``indices``, which ran as ``attempt``: past
        every attempt any of them has had (backups)."""
        last = self._last_attempt
        rerun = max([attempt, *(last[i] for i in indices if i in last)]) + 1
        for index in indices:
            if index in last:
                last[index] = rerun
        return rerun

    # ------------------------------------------------------------------- helpers

    def _next_work(self) -> tuple[range, int, bool] | None:
        """The next work to launch, as (indices, attempt, backup): the queue first, in order;
        parked elements once it is empty. Re-cuttable work is cut to the size the BatchSizer
        asks for."""
        if self._pending:
            work = self._pending.popleft()
            indices = work.indices
            if not work.whole:
                size = self.sizer.next_size(self._undispatched)
                if size < len(indices):
                    self._pending.appendleft(_Work(indices[size:], work.attempt, whole=False))
                    indices = indices[:size]
                self._undispatched -= len(indices)
            self._queued -= len(indices)
            return indices, work.attempt, work.backup
        if self._parked:
            index, attempt = self._parked.popleft()
            return range(index, index + 1), attempt, False
        return None

    def _enqueue(self, work: _Work, front: bool = False) -> None:
        """Queue work: retries and halves go first, elements given back go last."""
        self._queued += len(work.indices)
        if not work.whole:
            self._undispatched += len(work.indices)
        if front:
            self._pending.appendleft(work)
        else:
            self._pending.append(work)

    def _forget(self, batch: int) -> _Batch | None:
        self._running.pop(batch, None)
        self._contested.discard(batch)
        return self._batches.pop(batch, None)

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
        start, stop = indices.start, indices.stop
        if self.state.count(_OPEN, start, stop) == len(indices):
            self.state[start:stop] = _DONE_BYTE * len(indices)
            self.final += len(indices)
            return [indices]
        segment = self.state[start:stop]
        runs, begin = [], None
        for offset, value in enumerate(segment):
            if value == _OPEN:
                self.state[start + offset] = _DONE
                self.final += 1
                begin = offset if begin is None else begin
            elif begin is not None:
                runs.append(indices[begin:offset])
                begin = None
        if begin is not None:
            runs.append(indices[begin:])
        return runs

    def _next_attempt(self, index: int, after: int) -> int:
        """The number of the element's next attempt run alone: past every one it has had."""
        attempt = max(after, self._last_attempt.get(index, after)) + 1
        self._last_attempt[index] = attempt
        return attempt

    def _attempt_failed(self, index: int, attempt: int, error: ElementError) -> None:
        self.counts.failed_attempts += 1
        if self.state[index] != _OPEN:
            self._check_budget()
            return
        failed = self._failed_count.get(index, 0) + 1
        self._failed_count[index] = failed
        if error.retryable and failed <= self.rules.task_retries:
            self.counts.retries += 1
            retry = _Work(range(index, index + 1), self._next_attempt(index, attempt), True)
            self._enqueue(retry, front=True)
        else:
            fns_fault = (error.kind in ("error", "input")
                         or (error.kind == "output" and not error.retryable))
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

    def _timeouts(self, now: float) -> list[Stopped]:
        limit = self.rules.task_timeout_s
        if limit is None:
            return []
        stopped = []
        for batch, live in self._running_longer_than(now, limit):
            position, started = live.running
            index = live.indices[position]
            rest = self._kill(batch, live)
            if self.state[index] != _OPEN:
                stopped.append(Stopped(batch, self._cancelled(live, _LOST_RACE), rest, True))
                continue
            self.counts.timeouts += 1
            error = ElementError(
                "TimeoutError", f"the attempt ran longer than task_timeout={limit} s",
                "", "timeout", retryable=True)
            stopped.append(Stopped(batch, Ended(index, live.attempt, started, "timeout",
                                                error.message), rest, True))
            self._attempt_failed(index, live.attempt, error)
        return stopped

    def _handle_stragglers(self, now: float) -> list[Stopped]:
        """Mark stragglers; preempt those holding a slot work waits for; back up the rest."""
        threshold = self._threshold
        if threshold is None:
            return []
        backups_allowed = (self.rules.backups and not self._pending  # waiting work goes first
                           and self.final >= BACKUP_AFTER_DONE * self.elements)
        if backups_allowed and len(self._batches) < self.rules.max_workers:
            threshold = self._tail_threshold  # the tail: slots are idle
        waiting = self._queued + len(self._parked)
        may_preempt = waiting if len(self._batches) >= self.rules.max_workers else 0
        budget = max(1, int(BACKUP_SHARE * self.elements))
        stopped = []
        for batch, live in self._running_longer_than(now, threshold):
            position, started = live.running
            index = live.indices[position]
            if self.state[index] != _OPEN:
                continue
            if not live.straggling:
                live.straggling = True
                self._new_stragglers.append(batch)
            patience = threshold * PREEMPT_BACKOFF ** self._preempted.get(index, 0)
            if position > live.reported:  # its worker is writing what finished before it
                patience *= WRITING_PATIENCE
            if may_preempt > 0 and (live.backup or now - started > patience):
                may_preempt -= 1
                stopped.append(self._preempt(batch, live))
            elif (backups_allowed and not self._pending and self.counts.backups < budget
                    and batch not in self._backed_up):
                self._backed_up.add(batch)
                self._contested.add(batch)
                self.counts.backups += 1
                attempt = self._next_attempt(index, live.attempt)
                self._enqueue(_Work(range(index, index + 1), attempt, whole=True, backup=True),
                              front=True)
        return stopped

    def _preempt(self, batch: int, live: _Batch) -> Stopped:
        """Kill a straggling attempt so waiting work gets its slot; park its element, unless
        the attempt was a backup (its element has another attempt, or a retry, already)."""
        position, started = live.running
        index = live.indices[position]
        rest = self._kill(batch, live)
        self.counts.preemptions += 1
        if not live.backup:
            self._preempted[index] = self._preempted.get(index, 0) + 1
            self._parked.append((index, self._next_attempt(index, live.attempt)))
        ended = Ended(index, live.attempt, started, "preempted",
                      "preempted: it straggled while other tasks waited for a slot")
        return Stopped(batch, ended, rest, killed=True)

    def _kill(self, batch: int, live: _Batch) -> tuple[range, ...]:
        """Forget a batch being killed; queue again, uncharged, what it had not started."""
        self._forget(batch)
        return self._requeue_unstarted(live)

    def _requeue_unstarted(self, live: _Batch) -> tuple[range, ...]:
        """Queue again, uncharged, the elements of ``live`` that never reported other than the
        one in fn; returns them."""
        rest = tuple(filter(None, map(self._trim_final, self._unstarted(live))))
        for indices in rest:
            self._enqueue(_Work(indices, live.attempt, whole=False))
        return rest

    def _redundant(self) -> list[Stopped]:
        """Batches whose every unreported element another attempt finished: the race losers."""
        stopped = []
        for batch in list(self._contested):
            live = self._batches[batch]
            if all(self.state[i] != _OPEN for i in live.indices[live.reported:live.end]):
                self._forget(batch)
                ended = self._cancelled(live, _LOST_RACE)
                stopped.append(Stopped(batch, ended, self._unstarted(live), killed=True))
        return stopped

    def _kill_all(self, message: str) -> list[Stopped]:
        """The job is over: every batch in flight is killed, its attempt in fn cancelled."""
        stopped = [Stopped(batch, self._cancelled(live, message), self._unstarted(live),
                           killed=True)
                   for batch, live in self._batches.items()]
        self._batches.clear()
        self._running.clear()
        self._contested.clear()
        return stopped

    def _unstarted(self, live: _Batch) -> tuple[range, ...]:
        """The elements a batch owns that never reported, other than the one in fn: before it,
        finished but not yet written (output=); behind it, not seen starting."""
        if live.running is None:
            return (live.indices[live.reported:live.end],)
        position = live.running[0]
        return (live.indices[live.reported:position],
                live.indices[max(position + 1, live.reported):live.end])

    def _cancelled(self, live: _Batch, message: str) -> Ended | None:
        if live.running is None:
            return None
        position, started = live.running
        return Ended(live.indices[position], live.attempt, started, "cancelled", message)

    def _running_longer_than(self, now: float, limit: float) -> list[tuple[int, _Batch]]:
        """Batches whose element in fn began more than ``limit`` ago; oldest first.

        ``_running`` is in the order the starts were reported, which is start order up to the
        delay of a progress message, so the walk stops at the first that is young enough.
        """
        found = []
        for batch in self._running:
            live = self._batches[batch]
            if now - live.running[1] <= limit:
                break
            found.append((batch, live))
        return found

    def _trim_final(self, indices: range) -> range:
        """``indices`` without final elements at either end (final ones inside stay: rare)."""
        start, stop = indices.start, indices.stop
        while start < stop and self.state[start] != _OPEN:
            start += 1
        while stop > start and self.state[stop - 1] != _OPEN:
            stop -= 1
        return range(start, stop)

    def _sample_duration(self, seconds: float) -> None:
        """Add to the sample of per-element times; set the thresholds from its median.

        The sample is kept small by dropping both extremes. The smallest is dropped by moving
        ``_low`` on, and the dropped ones are cut off once as many as the sample: shifting the
        sample down for each took as long as the rest of a report.
        """
        durations = self._durations
        bisect.insort(durations, seconds, self._low)
        if len(durations) - self._low > _SAMPLE:
            durations.pop()
            self._low += 1
            if self._low > _SAMPLE:
                del durations[:self._low]
                self._low = 0
        median = durations[(self._low + len(durations)) // 2]
        self._threshold = max(BACKUP_MIN_S, BACKUP_SLOWDOWN * median)
        self._tail_threshold = max(BACKUP_MIN_S, TAIL_SLOWDOWN * median)
        self._check_after = min(self._tail_threshold, self._timeout)

    def _check_quorum(self) -> None:
        if self.stop is None and self.rules.quorum < 1.0:
            if self.final >= quorum_count(self.rules.quorum, self.elements):
                self._stop("quorum")

    def _check_budget(self) -> None:
        if self.stop is None and self.counts.failed_attempts > self.rules.max_failures:
            self._stop("budget")

    def _stop(self, reason: str) -> None:
        """Stop the job; open elements become TaskFailures naming why (deadline, quorum...)."""
        self.stop = reason
        for index, value in enumerate(self.state):
            if value == _OPEN:
                self._finalize(index, _CANCELLED, TaskFailure(
                    index, "Cancelled", _STOP_MESSAGES[reason],
                    "", self._failed_count.get(index, 0),
                    reason if reason in ("deadline", "quorum") else "cancelled"))


_LOST_RACE = "another attempt of this task finished first"
_UNREAD = ("; which element was in fn is not known (its node could not be asked): charged "
           "to the one last seen in fn")
_STOP_MESSAGES = {
    "deadline": "the job's deadline passed before this task finished",
    "quorum": "the job's quorum was reached before this task finished",
    "budget": "the job's total failure budget was exceeded before this task finished",
    "raise": "the job stopped at the first failure (errors='raise')",
}


@dataclass
class SlowNodes:
    """Which nodes get no new work: those with SLOW_NODE_STRIKES stragglers making at least
    SLOW_NODE_SHARE of their attempts, at most half of the ``nodes`` and never the last one."""

    nodes: int
    strikes: dict[str, int] = field(default_factory=dict)
    avoided: set[str] = field(default_factory=set)

    def on_straggler(self, node: str, finished_there: int) -> bool:
        """A straggler ran on ``node``, where ``finished_there`` element attempts have finished;
        returns whether the node is avoided from now on."""
        if not node or node in self.avoided:
            return False
        strikes = self.strikes[node] = self.strikes.get(node, 0) + 1
        slow = (strikes >= SLOW_NODE_STRIKES
                and strikes >= SLOW_NODE_SHARE * (strikes + finished_there))
        if slow and len(self.avoided) < self.nodes // 2:
            self.avoided.add(node)
            return True
        return False
