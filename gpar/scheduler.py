"""The driver loop: submits batches, turns their progress into results, owns every retry.

    run_job ─▶ ray.put(environment) once
            ─▶ loop: submit batches while fewer than max_workers are in flight (BatchSizer
               picks their sizes) ─▶ ray.wait on their streams ─▶ Progress messages
               ─▶ values placed in input order │ failures retried or recorded │ JobReport rows
            ◀─ values, with a TaskFailure in each failed slot

Ray's own retries are off (max_retries=0): every failure reaches this loop and is counted here.
A batch is a contiguous range of xs. A retried element runs alone; a batch that dies with several
elements unreported is split in two and re-run uncharged, so a crash is charged only to the one
element that caused it.
"""

from __future__ import annotations

import functools
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from gpar.environment import CapturedEnvironment
from gpar.errors import TaskError
from gpar.report import AttemptBlock, JobReport
from gpar.results import TaskFailure
from gpar.split import BatchSizer
from gpar.worker import ElementError, Progress, blocking_call, run_batch

#: Seconds ray.wait blocks before the loop looks around (Ctrl-C is handled between waits).
WAIT_S = 1.0


@dataclass(frozen=True)
class Options:
    """The scheduling knobs apply() validated."""

    max_workers: int
    task_retries: int
    errors: str
    progress: bool


@dataclass(frozen=True)
class _Work:
    """Elements waiting for dispatch. ``whole``: dispatch as one batch, never re-cut."""

    indices: range
    attempt: int
    whole: bool


@dataclass
class _Batch:
    """A batch in flight and what its stream has told so far."""

    indices: range
    attempt: int
    submitted: float
    reported: int = 0
    last_finished: float | None = None
    node: str = ""
    pid: int = 0
    running_since: float | None = None


def run_job(
    items: Sequence[Any], environment: CapturedEnvironment, options: Options, report: JobReport
) -> list[Any]:
    """Run fn over every element of ``items``; see the module docstring."""
    return _Job(items, environment, options, report).run()


class _Job:
    def __init__(self, items, environment, options, report):
        import ray

        self.ray = ray
        self.items = items
        self.options = options
        self.report = report
        self.values: list[Any] = [None] * len(items)
        self.pending: deque[_Work] = deque([_Work(range(len(items)), 0, whole=False)])
        self.undispatched = len(items)
        self.in_flight: dict[Any, _Batch] = {}
        self.sizer = BatchSizer(options.max_workers)
        self.remote = _remote_run_batch()
        buffers = [_as_array(buffer) for buffer in environment.buffers]
        self.environment_ref = ray.put((environment.stream, buffers))

    def run(self) -> list[Any]:
        from tqdm.auto import tqdm

        with tqdm(total=len(self.items), disable=not self.options.progress, unit="task",
                  file=sys.stderr, dynamic_ncols=True) as self.bar:
            try:
                while self.pending or self.in_flight:
                    self._submit_while_free()
                    ready, _ = blocking_call(self.ray.wait, list(self.in_flight),
                                             num_returns=1, timeout=WAIT_S)
                    for stream in ready:
                        self._read(stream)
            finally:
                self._cancel_in_flight()
        return self.values

    def _submit_while_free(self) -> None:
        while self.pending and len(self.in_flight) < self.options.max_workers:
            work = self.pending.popleft()
            indices = work.indices
            if not work.whole:
                size = self.sizer.next_size(self.undispatched)
                if size < len(indices):
                    self.pending.appendleft(_Work(indices[size:], work.attempt, whole=False))
                    indices = indices[:size]
                self.undispatched -= len(indices)
            chunk = self.items[indices.start:indices.stop]
            stream = self.remote.remote(self.environment_ref, chunk)
            self.in_flight[stream] = _Batch(indices, work.attempt, submitted=time.time())
            self.report.batches += 1

    def _read(self, stream: Any) -> None:
        batch = self.in_flight[stream]
        try:
            message = self.ray.get(next(stream))
        except StopIteration:
            self._batch_lost(stream, batch, "the batch ended without reporting every element")
        except self.ray.exceptions.RayError as exc:
            self._batch_lost(stream, batch, exc)
        else:
            self._take(batch, message)
            if batch.reported == len(batch.indices):
                del self.in_flight[stream]

    def _take(self, batch: _Batch, message: Progress) -> None:
        batch.node, batch.pid = message.node_id, message.pid
        batch.running_since = message.running[1] if message.running else None
        count = len(message.finished)
        if not count:
            return
        first = batch.indices[message.done_from]
        previous = batch.last_finished or message.elements_started
        self.sizer.observe(count, message.finished[-1] - previous)
        values, errors = _unpickle_values(message, count)
        self.values[first:first + count] = values
        outcomes = {position - message.done_from: error.kind for position, error in errors.items()}
        self.report.add_block(AttemptBlock(first, batch.attempt, batch.node, batch.pid,
                                           batch.submitted, previous, message.finished, outcomes))
        batch.reported += count
        batch.last_finished = message.finished[-1]
        self.bar.update(count - len(errors))
        for position, error in errors.items():
            self._element_failed(batch.indices[position], batch.attempt, error)

    def _element_failed(self, index: int, attempt: int, error: ElementError) -> None:
        failed_attempts = attempt + 1
        if error.retryable and failed_attempts <= self.options.task_retries:
            self.pending.appendleft(_Work(range(index, index + 1), failed_attempts, whole=True))
            return
        reason = "error" if error.kind == "error" else "system"
        failure = TaskFailure(index, error.exc_type, error.message, error.traceback,
                              failed_attempts, reason)
        self.values[index] = failure
        self.bar.update(1)
        if self.options.errors == "raise":
            raise TaskError(failure)

    def _batch_lost(self, stream: Any, batch: _Batch, cause: BaseException | str) -> None:
        """The batch's worker died (or its stream broke) before it reported every element."""
        del self.in_flight[stream]
        unreported = batch.indices[batch.reported:]
        if len(unreported) > 1:  # the culprit is unknown: halve and re-run, charging no one
            self.report.batches_lost += 1
            half = len(unreported) // 2
            self.pending.appendleft(_Work(unreported[half:], batch.attempt, whole=True))
            self.pending.appendleft(_Work(unreported[:half], batch.attempt, whole=True))
            return
        index = unreported[0]
        exc_type = type(cause).__qualname__ if isinstance(cause, BaseException) else "BatchLost"
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else exc_type
        now = time.time()
        started = batch.running_since or batch.last_finished or batch.submitted
        self.report.add_block(AttemptBlock(index, batch.attempt, batch.node, batch.pid,
                                           batch.submitted, started, [now], {0: "system"}))
        self._element_failed(index, batch.attempt,
                             ElementError(exc_type, message, "", "system", retryable=True))

    def _cancel_in_flight(self) -> None:
        for stream in self.in_flight:
            try:
                self.ray.cancel(stream, force=True)
            except Exception:  # already finished or its worker already gone: nothing to stop
                pass
        self.in_flight.clear()


def _unpickle_values(message: Progress, count: int) -> tuple[list[Any], dict[int, ElementError]]:
    """The message's values and errors; values the driver cannot unpickle become errors."""
    try:
        return cloudpickle.loads(message.values), message.errors
    except Exception as exc:
        error = ElementError(
            type(exc).__qualname__,
            f"fn's result could not be unpickled on the driver: {exc}. Return objects whose "
            "classes the driver can import (builtins, numpy, pandas, installed modules).",
            "", "result", retryable=False)
        positions = range(message.done_from, message.done_from + count)
        return [None] * count, {position: message.errors.get(position, error)
                                for position in positions}


@functools.cache
def _remote_run_batch() -> Any:
    """run_batch as a Ray streaming task, with Ray's retries off (this loop owns retries)."""
    import ray

    return ray.remote(num_returns="streaming", max_retries=0, retry_exceptions=False)(run_batch)


def _as_array(buffer: Any) -> Any:
    """A pickle buffer as a uint8 array, which Ray stores once and maps read-only on workers."""
    import numpy as np

    return np.frombuffer(buffer.raw(), dtype=np.uint8)
