"""A job you can hold: one apply() running in a thread of the caller's process.

    submit (the caller's thread): options checked, the call captured, the output's target
      found, the cluster connected (an embedded Ray starts in this thread), the image staged
      └─▶ the job's thread: claim the output, run the loop, commit
    Job.result() (the thread that waits): how the job ended, with apply's warnings and
      exceptions raised there, where a notebook shows them and filterwarnings applies

The loop is the only writer of the policy and the report. It holds ``Control.lock`` while it
changes them, so what another thread reads (progress, report, failures) is a copy taken
between two of its turns; as_completed() waits on it for elements to become final.
``cancel()`` sets a flag the loop reads on its next turn (within policy.MAX_WAIT_S). A job
still running when the process exits is cancelled then, so the exit neither hangs nor leaves
tasks running (cancel_all).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gpar.report import JobReport
from gpar.results import TaskFailure

Outcome = TypeVar("Outcome")

#: How long the exit of a process waits for its running jobs to cancel their tasks.
EXIT_WAIT_S = 30.0

#: A job still running after this long has its page's URL printed on stderr, once
#: (GPAR_JOB_PAGE=off: never).
ANNOUNCE_PAGE_AFTER_S = 5.0


@dataclass(frozen=True)
class JobProgress:
    """Elements of a job by state, at one moment."""

    total: int
    finished: int  # final with a value
    failed: int  # final without one (failed for good, or cancelled)
    running: int  # in fn now

    @property
    def waiting(self) -> int:
        return self.total - self.finished - self.failed - self.running


@dataclass
class Control:
    """What a job's thread shares with its Job: the loop's lock (a condition the loop
    notifies at each turn), the cancel flag, and the policy, report and values once the loop
    has made them."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    cancelled: threading.Event = field(default_factory=threading.Event)
    wakeup: threading.Event = field(default_factory=threading.Event)  # the loop waits on it
    # while it holds launches back with nothing running
    policy: Any = None
    report: JobReport | None = None
    loop: Any = None  # the JobLoop, once it runs: where its batches run (jobpage.py)
    page: Callable[[], str] | None = None  # the job's page's URL, made when first asked
    tasks: Any = None  # the cluster the job runs on (seam.Tasks), told of the page
    values: list[Any] | None = None
    numbers: Any = None  # the element of xs each element of the run is (a resumed output)
    # imap: how many results, and how many bytes of them, may wait unread before launches
    # pause (None: no bound), how many were read, and the element an ordered stream waits for
    max_unread: int | None = None
    max_unread_bytes: int | None = None
    consumed: int = 0
    head: int | None = None
    held_back: bool = False  # the loop holds launches back for room (its policy's flag)
    # imap of an iterator: its input (feed.py), how many elements the loop asks to be read,
    # and whether a reader is reading them now
    feed: Any = None
    input_wanted: int = 0
    reading: bool = False
    _received_bytes: int = 0  # pickled bytes of the values received, and how many
    _received: int = 0

    def received(self, pickled_bytes: int, count: int) -> None:
        """The loop received ``count`` values in ``pickled_bytes``."""
        self._received_bytes += pickled_bytes
        self._received += count

    def room(self) -> int | None:
        """How many more elements may be launched before the results held unread (those in
        flight counted as held) reach the bound, counted and by their bytes, estimated from
        the mean pickled size of the values so far; None: no bound. One at least when
        nothing is held: a single value larger than the bound still comes, alone."""
        if self.max_unread is None or self.policy is None:
            return None
        policy = self.policy
        held = policy.ledger.final_count - self.consumed + policy.flight.unreported()
        room = self.max_unread - held
        if self._received and self.max_unread_bytes is not None:
            mean_bytes = self._received_bytes / self._received
            by_bytes = int(self.max_unread_bytes / mean_bytes) - held if mean_bytes else room
            room = room if room < by_bytes else by_bytes
        if held <= 0 and room < 1:
            return 1
        return room if room > 0 else 0

    def ask_input(self, want: int) -> None:
        """The loop wants ``want`` more elements read (under ``lock``); not while a reader
        reads: what it reads is not counted yet."""
        if not self.reading:
            self.input_wanted = want

    def awaits_input(self) -> bool:
        return bool(self.input_wanted or self.reading)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` (under ``lock``, held), reading the input the loop asks
        for meanwhile: an iterator is read only by the threads that wait for its job, as a
        for loop over it would be, so one bound to its thread (an sqlite3 cursor) works.
        False: ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            if self.input_wanted:
                self._read_input()
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.lock.wait(left)
        return True

    def _read_input(self) -> None:
        """Read what the loop asks for, outside ``lock`` (a slow source holds up neither the
        loop nor a reader of results). What the iteration raises cancels the job and reaches
        the thread that read."""
        want, self.input_wanted, self.reading = self.input_wanted, 0, True
        self.lock.release()
        try:
            chunk = self.feed.read(want)
        except BaseException:
            self.cancelled.set()
            raise
        finally:
            self.lock.acquire()
            self.reading = False
            self.wakeup.set()
        self.feed.add(self.policy, self.values, chunk, want)
        self.report.elements = self.policy.elements

    def finals(self, seen: int) -> list[tuple[int, Any]]:
        """(index in xs, value or TaskFailure) of the elements that became final after the
        first ``seen``; under ``lock``."""
        if self.policy is None or self.values is None:
            return []
        ledger, values, numbers = self.policy.ledger, self.values, self.numbers
        return [(index if numbers is None else numbers[index],
                 ledger.failures[index] if index in ledger.failures else values[index])
                for index in ledger.final_order[seen:]]


class Job(Generic[Outcome]):
    """A running gpar job (gpar.submit): wait for it, look at it, or cancel it, from any
    thread. ``work`` runs in the job's thread and returns its outcome; ``finish`` turns that
    into what result() returns, raising or warning in the waiting thread."""

    def __init__(self, elements: int, work: Callable[[Control], Outcome],
                 finish: Callable[[Outcome], Any], control: Control | None = None):
        self._elements, self._finish = elements, finish
        self._control = Control() if control is None else control
        self._done = threading.Event()
        self._outcome: Outcome | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="gpar-job",
                                        daemon=True)  # the exit cancels it: see cancel_all
        _running.add(self)
        job = weakref.ref(self)  # neither the control nor the timer keeps its job alive
        self._control.page = lambda: job().url
        self._announce = threading.Timer(ANNOUNCE_PAGE_AFTER_S, _announce_page, (job,))
        self._announce.daemon = True
        self._thread.start()
        if (os.environ.get("GPAR_JOB_PAGE", "").lower() not in ("off", "0", "no")
                and not _in_a_ray_worker()):
            self._announce.start()

    def _run(self, work: Callable[[Control], Outcome]) -> None:
        try:
            self._outcome = work(self._control)
        except BaseException as error:  # raised again by result(), in the waiting thread
            self._error = error
        finally:
            self._announce.cancel()
            with self._control.lock:
                self._done.set()
                self._control.lock.notify_all()
            _running.discard(self)

    @property
    def url(self) -> str:
        """The job's live page (progress, what runs, failures, Table 1, Figure 8, a cancel
        button), served by this process on 127.0.0.1 while it lives; the token in it is what
        lets a browser in."""
        from gpar import jobpage

        return jobpage.url_of(self)

    def done(self) -> bool:
        """The job has ended: result() returns (or raises) at once."""
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        """What apply returns, once the job has ended; raises what apply raises, and issues
        its warnings here. TimeoutError after ``timeout`` seconds (the job keeps running).
        Ctrl-C while waiting cancels the job."""
        return self._result(timeout)

    def _result(self, timeout: float | None) -> Any:
        """result(); apply calls it directly, so that ``finish``'s warnings point at the line
        that called apply or result() alike: four frames above the warning's."""
        try:
            with self._control.lock:
                ended = self._control.wait_for(self.done, timeout)
        except KeyboardInterrupt:
            self._cancel_and_wait()
            raise
        if not ended:
            raise TimeoutError(f"the job did not end within {timeout} s; it keeps running")
        if self._error is not None:
            raise self._error
        return self._finish(self._outcome)

    def as_completed(self) -> Iterator[tuple[int, Any]]:
        """Yield (index, value) as elements finish, a TaskFailure for one that failed or was
        cancelled; then raise or warn as result() does. The Job keeps every value for
        result()."""
        control, seen = self._control, 0
        while True:
            try:
                with control.lock:
                    control.wait_for(
                        lambda seen=seen: self.done() or (
                            control.policy is not None
                            and len(control.policy.ledger.final_order) > seen))
                    finals = control.finals(seen)
            except KeyboardInterrupt:
                self._cancel_and_wait()
                raise
            seen += len(finals)
            yield from finals
            if not finals and self.done():
                break
        self._result(None)

    def _cancel_and_wait(self) -> None:
        """Ctrl-C: cancel, and wait while the loop kills what runs (Ctrl-C again stops
        waiting)."""
        self.cancel()
        self._thread.join()

    def cancel(self) -> bool:
        """Stop the job: what runs is killed, nothing more starts, unfinished slots hold
        TaskFailure(reason="cancelled"). False if it had already ended."""
        self._control.cancelled.set()
        self._control.wakeup.set()
        return not self.done()

    @property
    def progress(self) -> JobProgress:
        with self._control.lock:
            policy = self._control.policy
            if policy is None:
                return JobProgress(self._elements, 0, 0, 0)
            failed = len(policy.ledger.failures)
            return JobProgress(policy.elements, policy.ledger.final_count - failed, failed,
                               policy.flight.in_fn)

    @property
    def report(self) -> JobReport:
        """A copy of the job's report as it stands: its attempts so far."""
        with self._control.lock:
            report = self._control.report
            if report is None:
                return JobReport(elements=self._elements)
            return report.snapshot()

    @property
    def failures(self) -> list[TaskFailure]:
        """The elements that have failed for good so far, in input order."""
        with self._control.lock:
            policy = self._control.policy
            failures = {} if policy is None else dict(policy.ledger.failures)
        return [failures[index] for index in sorted(failures)]

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        """A normal exit waits for the job; an exception cancels it."""
        if kind is not None:
            self.cancel()
        try:
            with self._control.lock:
                self._control.wait_for(self.done)
        except KeyboardInterrupt:
            self._cancel_and_wait()
            raise

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        progress = self.progress
        return (f"<gpar.Job {state}: {progress.finished} finished, {progress.failed} failed "
                f"of {progress.total}>")


def _announce_page(job: weakref.ref[Job]) -> None:
    """Print a running job's page on stderr (its Job's timer)."""
    running = job()
    if running is not None and not running.done():
        print(f"gpar: the job's page: {running.url}", file=sys.stderr, flush=True)


def _in_a_ray_worker() -> bool:
    """A job submitted inside fn: its page is not announced (a worker's stderr is Ray's log,
    and its process may lack the page's server)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray._private.worker.global_worker.mode == ray.WORKER_MODE


class JobStream:
    """imap's iterator over a running job: its results as they become final, in input order
    (``ordered``) or as (index, value) in the order they finished. gpar keeps a value no
    longer once it was yielded. Closing it, breaking out of the loop over it or dropping it
    cancels the job; at its end it raises or warns as apply would."""

    def __init__(self, job: Job, ordered: bool):
        self._job, self._ordered, self._control = job, ordered, job._control
        self._next = 0  # ordered: the next index to yield; else the next in final_order
        self._taken: deque[Any] = deque()  # taken from the job, not yet yielded
        self._ended = False
        if ordered:
            with job._control.lock:
                job._control.head = 0

    @property
    def job(self) -> Job:
        """The running job: its progress, report and failures."""
        return self._job

    def __iter__(self) -> JobStream:
        return self

    def __next__(self) -> Any:
        taken = self._taken
        if taken:  # the usual case, once per value: kept short
            control = self._control
            control.consumed += 1  # no longer held (only this thread adds to it)
            if control.held_back:  # the loop waits for room: there is some now
                control.wakeup.set()
            if control.input_wanted:  # read on while values are yielded, not only when
                self._wait_for(lambda: not control.input_wanted)  # waiting for them
            return taken.popleft()
        if self._ended:
            raise StopIteration
        self._wait_for(self._ready, then=self._take)
        if self._taken:
            return next(self)
        self._ended = True
        self._job._result(None)  # raises, or warns as apply does
        raise StopIteration

    def _wait_for(self, predicate: Callable[[], bool],
                  then: Callable[[], None] = lambda: None) -> None:
        """Wait until ``predicate()``, reading the input meanwhile, then call ``then`` under
        the lock still; Ctrl-C or an error of the input cancels the job."""
        control = self._control
        try:
            with control.lock:
                control.wait_for(predicate)
                then()
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        policy = self._job._control.policy
        if self._job.done():
            return True
        if policy is None:
            return False
        if self._ordered:
            return self._next < policy.elements and not policy.ledger.is_open(self._next)
        return self._next < len(policy.ledger.final_order)

    def _take(self) -> None:
        """Take what may be yielded now into ``_taken`` (under the lock, which it then holds
        once for all of them); none when the stream ends. Each counts as held until yielded."""
        control = self._job._control
        policy, values = control.policy, control.values
        if policy is None or values is None:
            return
        ledger, taken = policy.ledger, self._taken
        ends_at = _stream_ends_at(policy)
        while True:
            if self._ordered:
                index = self._next
                done_until = ledger.done_until(index)
                if done_until > index:  # the usual case: a run of values, taken at once
                    taken.extend(values[index:done_until])
                    values[index:done_until] = [None] * (done_until - index)
                    self._next = done_until
                    continue
                if index >= policy.elements or ledger.is_open(index):
                    break
            elif self._next < len(ledger.final_order):
                index = ledger.final_order[self._next]
            else:
                break
            value = ledger.failures.get(index, values[index])
            if isinstance(value, TaskFailure):
                if value.reason in ends_at:
                    break  # the end raises or warns
            else:  # failures stay: the end warns of them
                values[index] = None
            taken.append(value if self._ordered else (index, value))
            self._next += 1
        if self._ordered:
            control.head = self._next
        control.wakeup.set()  # what was read leaves room: the loop may launch again

    def close(self) -> None:
        """Stop: the job is cancelled, nothing more is launched."""
        self._taken.clear()
        if not self._ended:
            self._ended = True
            self._job.cancel()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> JobStream:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _stream_ends_at(policy: Any) -> tuple[str, ...]:
    """The reasons of the failures a stream ends at, rather than yields: once the job stopped
    at a failure (errors="raise", the budget), after the values before it; once an input of
    unknown length was cut (cancel, deadline), rather than yield what was read ahead."""
    if policy.stop == "raise":
        return ("error", "system", "cancelled")
    if policy.stop == "budget":
        return ("cancelled",)
    if policy.stop is not None and not policy.input_ended:
        return ("cancelled", "deadline")
    return ()


#: Jobs of this process still running (their threads hold them too).
_running: set[Job] = set()


def cancel_all() -> None:
    """Cancel every job of this process and wait for each to kill what it runs: at exit, and
    before gpar.shutdown() takes the cluster away."""
    jobs = list(_running)
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + EXIT_WAIT_S  # for all of them together
    for job in jobs:
        job._thread.join(max(0.0, deadline - time.monotonic()))


# At exit, before atexit's handlers: Ray's own (ray.shutdown) would otherwise run while a
# job's thread still waits on Ray, which then starts a new connection from that thread and
# may crash the exit. concurrent.futures stops its workers at this same point.
threading._register_atexit(cancel_all)  # type: ignore[attr-defined]
