"""The records that cross a boundary of the driver loop, in one place every side imports.

    policy ──Launch──▶ loop ──▶ backend (Ray or the simulator) ──▶ worker
    worker ──Progress (ElementError per failed element)──▶ backend ──▶ loop ──▶ policy
    backend ──BatchLost──▶ loop;  policy ──Stopped (Ended)──▶ loop ──▶ report
    loop ──Running, HandedOff, Reported, Lost (the events)──▶ policy
    policy ──counts──▶ Counts of its own, which the JobReport reads

Plain data only: no behaviour, and nothing here imports the modules that use them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import NamedTuple

from gpar.outcomes import EndedOutcome, ErrorKind


class Launch(NamedTuple):
    """Decision: run elements ``indices`` as batch ``batch``; the worker gives back the
    elements queued behind one that has run ``handoff_after_s``. A named tuple: one is made
    for each batch, often for each element, and a frozen dataclass takes three times as long."""

    batch: int
    indices: range
    attempt: int
    backup: bool
    handoff_after_s: float


@dataclass(frozen=True)
class ElementError:
    """Why one element has no value (``kind``). ``exception``: the exception itself, for the
    driver to raise (an EnvironmentMismatch), else None."""

    exc_type: str
    message: str
    traceback: str
    kind: ErrorKind
    retryable: bool
    exception: BaseException | None = None


@dataclass(frozen=True)
class CallerContext:
    """A script's place, for workers that outlive it (the local cluster's server): its
    sys.path, working directory and environment variables, which each batch adopts, so fn
    runs as in the script; ``session`` tells one script run from the next."""

    session: str
    sys_path: tuple[str, ...]
    cwd: str
    environ: dict[str, str]


@dataclass(frozen=True)
class Progress:
    """A batch's news: elements ``done_from .. done_from + len(finished)`` finished since its
    last message, and what it does now."""

    done_from: int
    values: bytes  # the pickled list of values, None where ``errors`` holds the position
    errors: dict[int, ElementError]
    finished: array  # of doubles: wall-clock time each element finished
    running: InFn | None  # the element in fn;
    # None: none is (with output=, the last tables are being written), or the batch is done
    end: int  # positions from here on were handed back: this batch never starts them
    elements_started: float  # when the first element started, the environment restored
    node_id: str
    pid: int

    @property
    def last(self) -> bool:
        """The batch's last message: every element it kept has reported."""
        return self.done_from + len(self.finished) >= self.end


@dataclass(frozen=True)
class BatchLost:
    """A batch's stream broke before its last message: its worker died or its node was lost.

    ``at``: where the worker's note (notes.py) says it was when it died: the position of the
    element in fn, or ``between_elements(n)`` when its first n elements had finished and none
    was in fn; None
    when the note could not be read (its node was gone)."""

    exc_type: str
    message: str
    at: int | None = None


def between_elements(finished: int) -> int:
    """A worker note's ``where`` (notes.py, BatchLost.at) when the batch's first ``finished``
    elements are done and none is in fn: ``~finished``, below zero, apart from a position."""
    return ~finished


def finished_before(where: int) -> int:
    """The elements done by a ``where`` below zero (between_elements)."""
    return ~where


@dataclass(frozen=True)
class Ended:
    """An attempt that ended without its worker's report, and how (``outcome``)."""

    index: int
    attempt: int
    started_at: float | None
    outcome: EndedOutcome
    message: str


@dataclass(frozen=True)
class Stopped:
    """A batch that ended by a decision (killed) or was lost. ``ended``: the attempt in fn
    then, as it ended; None when none was. ``unstarted``: elements it owned that never
    reported, other than that one: not seen starting, or (output=) finished but not yet
    written. Charged nothing; queued again unless they were final already. ``ran``: elements
    of a lost batch its worker's note says finished in fn, their values lost with it: not
    charged, queued again as new attempts."""

    batch: int
    ended: Ended | None
    unstarted: tuple[range, ...]
    killed: bool
    ran: tuple[range, ...] = ()


@dataclass(kw_only=True)
class Counts:
    """What a job's policy counts as it decides, in counts of its own: the job's JobReport reads
    them (its snapshots copy them)."""

    batches: int = 0  # batches launched
    batches_lost: int = 0  # lost batches re-run in halves: no element was known to be in fn
    retries: int = 0
    backups: int = 0
    timeouts: int = 0
    preemptions: int = 0
    failed_attempts: int = 0


# The events: what the loop heard, as the policy takes it. Named tuples, as Launch is: one or
# two are made for each batch, and a frozen dataclass takes two and a half times as long.


class InFn(NamedTuple):
    """The element of a batch in fn: its position in the batch, and since when (wall clock;
    None where no one knows, as for the element a dead worker's note names)."""

    position: int
    since: float | None


class Running(NamedTuple):
    """Batch ``batch``'s element ``running`` is in fn; None: none is (with output=, its
    worker writes the last tables)."""

    batch: int
    running: InFn | None


class HandedOff(NamedTuple):
    """The worker of ``batch`` gave back its positions from ``end`` on: it never starts them."""

    batch: int
    end: int


class Reported(NamedTuple):
    """Positions ``first .. first + count`` of ``batch`` finished in ``seconds`` of fn time;
    those in ``errors`` failed."""

    batch: int
    first: int
    count: int
    errors: dict[int, ElementError]
    seconds: float


class Lost(NamedTuple):
    """The batch's stream broke before every element it owns reported (its worker died).
    ``at``: where its worker's note says it was (records.BatchLost); None: unread."""

    batch: int
    error: ElementError
    at: int | None = None
