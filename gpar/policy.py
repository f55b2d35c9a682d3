"""Scheduling policy: every decision of a job as a pure state machine, with the clock passed in.

Events go in (``on_running(Running)``, ``on_handed_off(HandedOff)``, ``on_reported(Reported)``,
``on_lost(Lost)``: records of gpar/records.py), decisions come out (``launches``, ``tick``); no
Ray, no I/O, so tests drive it with a fake clock and the simulator (gpar/simulator.py) drives
it at scale. The loop in gpar/loop.py turns decisions into backend calls and backend news into
events. An element of xs is the unit of every rule, however it is batched.

The Policy composes its parts, each a module of its own: the element ledger (which elements
are final, their attempts: gpar/ledger.py), the work queue (gpar/workqueue.py), the batches in
flight (gpar/inflight.py), the sample of element times (gpar/durations.py) and the straggler
rules and their constants (gpar/stragglers.py). What stays here is what each event does: the
rules.

Rules (README's "What apply guarantees"):

* **Per-element budget**: a failed attempt is retried while the element has failed at most
  ``task_retries`` times and the failure is retryable (system failures always; an exception
  from fn only if its type is in ``retry_on``). A retry runs alone.
* **Total budget**: every failed attempt counts (retried or not, timeouts, attempts lost with
  their batch); when more than ``max_failures`` have failed the job stops: ``stop == "budget"``.
  With ``errors="raise"`` the first element that fails for good stops it: ``stop == "raise"``.
* **Deadline**: at ``deadline_at`` the job stops; what has not finished is marked "deadline".
* **task_timeout**: an element whose attempt has run longer is killed with its batch, charged a
  retryable failure; the batch's elements not yet started are queued again, uncharged.
* **Quorum**: once ``ceil(quorum * elements)`` elements are final the job stops; the rest are
  marked "quorum".
* **Hand-off**: a batch of several elements hands the elements queued behind one that has run
  longer than its launch's ``handoff_after_s`` back to the queue. The worker decides it, so an
  element given away is never started by that batch (elements.py).
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
* **Lost batch** (worker died): reported elements are kept. The worker's note (notes.py) says
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

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gpar.durations import DurationSample
from gpar.inflight import Batch, InFlight
from gpar.ledger import Ledger
from gpar.options import ErrorsMode
from gpar.outcomes import CUT_OFF, StopReason, failure_reason
from gpar.records import (
    Counts,
    ElementError,
    Ended,
    HandedOff,
    InFn,
    Launch,
    Lost,
    Reported,
    Running,
    Stopped,
    finished_before,
)
from gpar.results import TaskFailure
from gpar.split import BatchSizer
from gpar.stragglers import BACKUP_MIN_S, Stragglers
from gpar.workqueue import Work, WorkQueue

#: Longest the loop waits for news before it asks again. Not tuned: Ctrl-C is handled between
#: waits, and a second is as long as a user should wait for it.
MAX_WAIT_S = 1.0

#: Shortest time between two scans of the running attempts for stragglers and timeouts: a scan
#: costs a few steps per straggler, and events come far more often on a large cluster. Not
#: tuned: short against BACKUP_MIN_S, so a straggler is seen late by a tenth at most; the scans'
#: CPU is in bench/bench_simulator.py's policy figure.
SCAN_S = 0.05


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
    errors: ErrorsMode = "warn"


class JobEnd(NamedTuple):
    """How the policy ended a job: what its caller turns into an exception or warnings."""

    stop: StopReason | None  # None: every element became final
    first_failure: TaskFailure | None  # the first element that failed for good
    failed_attempts: int
    max_failures: int
    failures: list[TaskFailure]  # every element without a value, in input order


class Policy:
    """The state of one job; see the module docstring for the rules."""

    def __init__(self, elements: int, rules: Rules, sizer: BatchSizer,
                 input_ended: bool = True):
        self.elements, self.rules, self.sizer = elements, rules, sizer
        # False while more input may come (imap of an iterator): extend(), then end_input()
        self.input_ended = input_ended
        # True while the caller holds new launches back (imap: its unread results are at
        # the bound); stragglers are then handled as if work waited for their slots
        self.held_back = False
        self.counts = Counts()  # its own: the job's report reads them (JobReport.counts)
        self.stop: StopReason | None = None  # None while the job runs
        self.first_failure: TaskFailure | None = None  # the first element that failed for good
        self.ledger = Ledger(elements)
        self.queue = WorkQueue(elements, sizer)
        self.durations = DurationSample()
        self.stragglers = Stragglers(elements, slots=rules.max_workers, backups=rules.backups,
                                     task_timeout_s=rules.task_timeout_s)
        self.flight = InFlight()
        self._new_stragglers: list[int] = []
        # elements final that stop the job for quorum; None: quorum is 1, every element
        self._quorum_at = (quorum_count(rules.quorum, elements) if rules.quorum < 1.0
                           else None)
        self._next_scan = -math.inf

    # ----------------------------------------------------------------- decisions

    @property
    def over(self) -> bool:
        """The job is over: it stopped, or every element is final and no more will come."""
        return self.stop is not None or (self.input_ended
                                         and self.ledger.final_count == self.elements)

    def extend(self, count: int) -> None:
        """``count`` more elements were read from the input, queued after the rest."""
        before, self.elements = self.elements, self.elements + count
        self.ledger.extend(count)
        self.queue.extend_input(range(before, self.elements))
        self.stragglers.grow(before, self.elements)

    def end_input(self, max_failures: int | None = None) -> None:
        """No more input will come; ``max_failures``: the total budget now that the number
        of elements is known (a default that scales with it)."""
        self.input_ended = True
        if max_failures is not None:
            self.rules = dataclasses.replace(self.rules, max_failures=max_failures)

    def cancel(self) -> None:
        """The caller cancelled the job: it stops as at a deadline (the next tick kills what
        runs), unless it has already stopped."""
        if self.stop is None:
            self._stop("cancelled")

    def end(self) -> JobEnd:
        """How the job ended (once ``over``)."""
        return JobEnd(self.stop, self.first_failure, self.counts.failed_attempts,
                      self.rules.max_failures, self.ledger.failed())

    def launches(self, in_flight_limit: int,
                 most_elements: int | None = None) -> Sequence[Launch]:
        """Batches to start now, while fewer than ``in_flight_limit`` are in flight, and
        ``most_elements`` in all (imap's bound on what it holds unread)."""
        batches = self.flight.batches
        if len(batches) >= in_flight_limit or self.over:  # usual: every slot busy; no new list
            return ()
        decided: list[Launch] = []
        left = most_elements
        while len(batches) < in_flight_limit and (left is None or left > 0):
            work = self.queue.pop(left)
            if work is None:
                break
            launched = self._launch(work, decided)
            if left is not None:
                left -= launched
        return decided

    def launch_alone(self, index: int, parked_only: bool = False) -> Sequence[Launch]:
        """Element ``index`` as a batch of its own, if it waits (``parked_only``: if it was
        parked): what an ordered stream waits for runs even while the caller holds launches
        back (held_back), and is not left parked behind the rest."""
        if self.over or not self.ledger.is_open(index):
            return ()
        work = self.queue.take(index, parked_only)
        decided: list[Launch] = []
        if work is not None:
            self._launch(work, decided)
        return decided

    def _launch(self, work: tuple[range, int, bool], decided: list[Launch]) -> int:
        """Launch ``work``'s open elements, if any; returns how many."""
        indices, attempt, backup = work
        indices = self.ledger.trim(indices)
        if indices:
            batch = self.flight.launch(indices, attempt, backup)
            handoff_after_s = self.stragglers.threshold or BACKUP_MIN_S
            decided.append(Launch(batch, indices, attempt, backup, handoff_after_s))
            self.counts.batches += 1
        return len(indices)

    def tick(self, now: float) -> Sequence[Stopped]:
        """Batches ended now: over task_timeout, preempted, left with nothing of their own to
        do (a backup race was decided), or all of them once the job stops."""
        deadline = self.rules.deadline_at
        if self.stop is None and deadline is not None and now >= deadline:
            self._stop("deadline")
        self._check_quorum()  # elements also become final through losses and timeouts
        if self.stop is not None:
            return self._kill_all(_STOP_MESSAGES[self.stop])
        if self.over:  # what still runs lost a race to a backup
            return self._kill_all(_LOST_RACE)
        if now < self._next_scan:  # the usual answer, on every turn of the loop: no new list
            return ()
        self._next_scan = now + SCAN_S
        stopped = self._timeouts(now)
        stopped += self._handle_stragglers(now)
        stopped += self._redundant()
        if self.over:
            stopped += self.tick(now)
        return stopped

    def take_stragglers(self) -> Sequence[int]:
        """Batches declared stragglers since the last call (so the loop can tell slow nodes).
        Called on every turn of the loop, and usually there are none: then no new list."""
        batches = self._new_stragglers
        if not batches:
            return ()
        self._new_stragglers = []
        return batches

    def stuck(self) -> bool:
        """Work waits (queued, parked, or launched and not started) and every batch that has
        started straggles: the avoided nodes are needed."""
        return self.flight.all_started_straggle(waiting=bool(self.queue))

    def next_check(self, now: float) -> float:
        """Seconds until tick() could decide something new: the loop waits that long for news,
        at most MAX_WAIT_S.

        Called on every turn of the loop: comparisons, not min() and max() (see
        split.BatchSizer.next_size).
        """
        wait = MAX_WAIT_S
        deadline = self.rules.deadline_at
        if deadline is not None and deadline - now < wait:
            wait = deadline - now
        since = self.flight.first_in_fn_since()  # the first to straggle or time out
        if since is not None:
            due = since + self.stragglers.check_after
            if due < self._next_scan:
                due = self._next_scan
            if due - now < wait:
                wait = due - now
        return wait if wait > 0.0 else 0.0

    # -------------------------------------------------------------------- events

    def on_running(self, event: Running) -> None:
        self.flight.on_running(event)

    def on_handed_off(self, event: HandedOff) -> None:
        """Queue the positions given back again, uncharged."""
        batch, end = event
        live = self.flight.batches.get(batch)
        if live is None or end >= live.end:
            return
        rest = self.ledger.trim(live.indices[end:live.end])
        live.end = end
        if rest:
            self.queue.push(Work(rest, live.attempt, whole=False))

    def on_reported(self, event: Reported) -> list[range]:
        """Returns the ranges of elements whose values are accepted (first finisher wins)."""
        batch, first, count, errors, seconds = event
        live = self.flight.batches.get(batch)
        if live is None or count == 0:
            return []
        live.reported = first + count
        self.sizer.observe(count, seconds)
        self.stragglers.on_median(self.durations.add(seconds / count))
        if not errors:  # the usual report: accept what the batch still owns
            stop = first + count
            accepted = self.ledger.accept(live.indices[first:stop if stop < live.end
                                                       else live.end])
        else:
            accepted = []
            for part in live.parts_without(errors, first, first + count):
                accepted.extend(self.ledger.accept(live.indices[part.start:part.stop]))
            for position, error in errors.items():
                if position < live.end:
                    self._attempt_failed(live.indices[position], live.attempt, error)
        if live.reported >= live.end:
            self.flight.forget(batch)
        self._check_quorum()
        return accepted

    def on_lost(self, event: Lost) -> Stopped | None:
        """What the lost batch's attempt in fn became, if any; see "Lost batch" above."""
        batch, error, at = event
        live = self.flight.forget(batch)
        if live is None or live.reported >= live.end:
            return None
        if at is None or 0 <= at < live.reported:  # no note, or not this batch's
            return self._lost_unread(batch, live, error)
        if 0 <= at < live.end:  # the element in fn killed its worker
            started = (live.running.since if live.running and live.running.position == at
                       else None)
            live.running = InFn(at, started)
            ran = live.indices[live.reported:at]
            self._rerun(ran, live.attempt)
            behind = self._requeue(live.indices[at + 1:live.end], live.attempt)
            return self._charge_lost(batch, live, error, behind, (ran,))
        done = live.end if at >= 0 else min(max(finished_before(at), live.reported), live.end)
        return self._lost_outside_fn(batch, live, error, done)

    # ------------------------------------------------------------ lost batches

    def _lost_unread(self, batch: int, live: Batch, error: ElementError) -> Stopped:
        """No note: charge the element last seen in fn (the others were not seen starting);
        with none seen, split the batch in halves, uncharged, or charge a lone element."""
        error = dataclasses.replace(error, message=error.message + _UNREAD)
        if live.running is None:
            open_ones = self.ledger.trim(live.indices[live.reported:live.end])
            if len(open_ones) != 1:
                self._split(open_ones, live.attempt)
                return Stopped(batch, None, (live.indices[live.reported:live.end],),
                               killed=False)
            live.running = InFn(live.indices.index(open_ones[0]), None)
        return self._charge_lost(batch, live, error, self._requeue_unstarted(live))

    def _lost_outside_fn(self, batch: int, live: Batch, error: ElementError,
                         done: int) -> Stopped:
        """The worker died with no element in fn, those before position ``done`` finished:
        which part killed it is not known. Re-run what ran and what did not apart, or a
        single part in halves, uncharged; a lone element is charged (a crash may repeat)."""
        ran = live.indices[live.reported:done]
        ran_open = self.ledger.trim(ran)
        rest = self.ledger.trim(live.indices[done:live.end])
        if len(ran_open) + len(rest) == 1:
            index = (ran_open or rest)[0]
            live.running = InFn(live.indices.index(index), None)
            others = (range(ran.start, index), range(index + 1, ran.stop)) if index in ran \
                else (ran,)
            others = tuple(filter(None, others))
            return self._charge_lost(batch, live, error, (), others)
        attempt = (self.ledger.rerun_attempt(ran_open, live.attempt) if ran_open
                   else live.attempt)
        if ran_open and rest:
            self.counts.batches_lost += 1
            self.queue.push(Work(rest, live.attempt, whole=True), front=True)
            self.queue.push(Work(ran_open, attempt, whole=True), front=True)
        else:
            self._split(ran_open, attempt)
            self._split(rest, live.attempt)
        return Stopped(batch, None, (live.indices[done:live.end],), killed=False, ran=(ran,))

    def _charge_lost(self, batch: int, live: Batch, error: ElementError,
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
            self.queue.push(Work(indices[half:], attempt, whole=True), front=True)
            self.queue.push(Work(indices[:half], attempt, whole=True), front=True)

    def _rerun(self, ran: range, attempt: int) -> None:
        """Queue again, uncharged, elements that finished as ``attempt`` in a lost batch."""
        ran = self.ledger.trim(ran)
        if ran:
            self.queue.push(Work(ran, self.ledger.rerun_attempt(ran, attempt), whole=False),
                            front=True)

    def _requeue(self, indices: range, attempt: int) -> tuple[range, ...]:
        """Queue again, uncharged, elements never started; returns them if any is open."""
        indices = self.ledger.trim(indices)
        if indices:
            self.queue.push(Work(indices, attempt, whole=False))
        return (indices,) if indices else ()

    # ----------------------------------------------------------- failures, stops

    def _attempt_failed(self, index: int, attempt: int, error: ElementError) -> None:
        """Charge a failed attempt: retry its element alone, or fail it for good."""
        self.counts.failed_attempts += 1
        if self.ledger.is_open(index):
            failed = self.ledger.charge(index)
            if error.retryable and failed <= self.rules.task_retries:
                self.counts.retries += 1
                retry = Work(range(index, index + 1),
                             self.ledger.next_attempt(index, attempt), whole=True)
                self.queue.push(retry, front=True)
            else:
                self._fail(index, error, failed)
        self._check_budget()

    def _fail(self, index: int, error: ElementError, attempts: int) -> None:
        failure = TaskFailure(index, error.exc_type, error.message, error.traceback, attempts,
                              failure_reason(error.kind, error.retryable), error.exception)
        self.ledger.fail(failure)
        self.first_failure = self.first_failure or failure
        if self.rules.errors == "raise":
            self._stop("raise")

    def _check_quorum(self) -> None:
        quorum_at = self._quorum_at
        if quorum_at is not None and self.ledger.final_count >= quorum_at and self.stop is None:
            self._stop("quorum")

    def _check_budget(self) -> None:
        if self.stop is None and self.counts.failed_attempts > self.rules.max_failures:
            self._stop("budget")

    def _stop(self, reason: StopReason) -> None:
        """Stop the job; open elements become TaskFailures naming why (deadline, quorum...)."""
        self.stop = reason
        message = _STOP_MESSAGES[reason]
        slot_reason = CUT_OFF[reason]
        self.ledger.cancel_open(lambda index, attempts: TaskFailure(
            index, "Cancelled", message, "", attempts, slot_reason))

    # ------------------------------------------------------- timeouts, stragglers

    def _timeouts(self, now: float) -> list[Stopped]:
        limit = self.rules.task_timeout_s
        if limit is None:
            return []
        stopped = []
        for batch, live in self.flight.in_fn_longer_than(now, limit):
            position, started = live.running
            index = live.indices[position]
            rest = self._kill(batch, live)
            if not self.ledger.is_open(index):
                stopped.append(Stopped(batch, live.cancelled(_LOST_RACE), rest, True))
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
        stragglers, queue = self.stragglers, self.queue
        in_flight = self.rules.max_workers if self.held_back else len(self.flight)
        scan = stragglers.scan(final=self.ledger.final_count, queued=queue.has_queued,
                               waiting=queue.waiting, in_flight=in_flight)
        if scan is None:
            return []
        may_preempt = scan.may_preempt
        stopped = []
        for batch, live in self.flight.in_fn_longer_than(now, scan.threshold):
            position, started = live.running
            index = live.indices[position]
            if not self.ledger.is_open(index):
                continue
            if not live.straggling:
                live.straggling = True
                self._new_stragglers.append(batch)
            writing = position > live.reported  # its worker writes what finished before it
            if may_preempt > 0 and stragglers.should_preempt(
                    index, live.backup, now - started, scan.threshold, writing):
                may_preempt -= 1
                stopped.append(self._preempt(batch, live))
            elif scan.backups and not queue.has_queued and stragglers.take_backup(batch):
                self._back_up(batch, live, index)  # queued: one backup per scan
        return stopped

    def _back_up(self, batch: int, live: Batch, index: int) -> None:
        """Queue a second attempt of the straggling element ``index``, first."""
        self.flight.contested.add(batch)
        self.counts.backups += 1
        attempt = self.ledger.next_attempt(index, live.attempt)
        self.queue.push(Work(range(index, index + 1), attempt, whole=True, backup=True),
                        front=True)

    def _preempt(self, batch: int, live: Batch) -> Stopped:
        """Kill a straggling attempt so waiting work gets its slot; park its element, unless
        the attempt was a backup (its element has another attempt, or a retry, already)."""
        position, started = live.running
        index = live.indices[position]
        rest = self._kill(batch, live)
        self.counts.preemptions += 1
        if not live.backup:
            self.stragglers.preempted(index)
            self.queue.park(index, self.ledger.next_attempt(index, live.attempt))
        ended = Ended(index, live.attempt, started, "preempted",
                      "preempted: it straggled while other tasks waited for a slot")
        return Stopped(batch, ended, rest, killed=True)

    def _redundant(self) -> list[Stopped]:
        """Batches whose every unreported element another attempt finished: the race losers."""
        stopped = []
        for batch in list(self.flight.contested):
            live = self.flight.batches[batch]
            if self.ledger.all_final(live.indices[live.reported:live.end]):
                self.flight.forget(batch)
                ended = live.cancelled(_LOST_RACE)
                stopped.append(Stopped(batch, ended, live.unstarted(), killed=True))
        return stopped

    # ------------------------------------------------------------ killing batches

    def _kill(self, batch: int, live: Batch) -> tuple[range, ...]:
        """Forget a batch being killed; queue again, uncharged, what it had not started."""
        self.flight.forget(batch)
        return self._requeue_unstarted(live)

    def _requeue_unstarted(self, live: Batch) -> tuple[range, ...]:
        """Queue again, uncharged, the elements of ``live`` that never reported other than the
        one in fn; returns them."""
        rest = tuple(filter(None, map(self.ledger.trim, live.unstarted())))
        for indices in rest:
            self.queue.push(Work(indices, live.attempt, whole=False))
        return rest

    def _kill_all(self, message: str) -> list[Stopped]:
        """The job is over: every batch in flight is killed, its attempt in fn cancelled."""
        return [Stopped(batch, live.cancelled(message), live.unstarted(), killed=True)
                for batch, live in self.flight.clear().items()]


_LOST_RACE = "another attempt of this task finished first"
_UNREAD = ("; which element was in fn is not known (its node could not be asked): charged "
           "to the one last seen in fn")
_STOP_MESSAGES: dict[StopReason, str] = {
    "deadline": "the job's deadline passed before this task finished",
    "quorum": "the job's quorum was reached before this task finished",
    "budget": "the job's total failure budget was exceeded before this task finished",
    "raise": "the job stopped at the first failure (errors='raise')",
    "cancelled": "the job was cancelled before this task finished",
}
