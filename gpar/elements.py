"""A batch's element thread: fn over the batch's elements, in order, on a worker.

fn runs in its own thread so the batch reports on a clock rather than on fn's schedule
(worker.run_batch snapshots this thread's state every FLUSH_S): while an element hangs, the
driver still learns which element is running and since when.

A batch hands back the elements queued behind one that has run longer than the driver's
``handoff_after_s``: the element thread takes each position before it starts it, a hand-off
takes the rest, so an element given back is never started here as well.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import queue
import threading
import time
from array import array
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from gpar import elementerrors, environment, notes, pickled
from gpar.heldtables import HeldTables
from gpar.records import ElementError, InFn, Progress, between_elements
from gpar.values import pickle_values

if TYPE_CHECKING:
    from envpack import ImageCheck

#: What the element thread puts last on its batch's requests: it has ended.
FINISHED = object()


class BatchRun:
    """The element thread's state: appended to by it, read by run_batch's snapshots."""

    def __init__(self, stream: bytes, buffers: list[Any], items: bytes, count: int, sink: Any,
                 image: ImageCheck | None = None, note: tuple[int, int] | None = None,
                 identity: Hashable = None):
        self.stream, self.buffers, self.items, self.count = stream, buffers, items, count
        self.identity = identity  # what names the buffers' content for good, if known
        self.output = None if sink is None else HeldTables(sink)
        self.image = image
        self.note = notes.begin(*note) if note else notes.scratch()  # [2]: where fn is
        self.values: list[Any] = []
        self.errors: dict[int, ElementError] = {}
        self.finished = array("d")
        self.elements_started = time.time()  # set again once the environment is restored
        self.restored = False  # until then no element is in fn: say nothing about one
        self.end = count  # positions from here on are not this batch's to start
        # the positions no one has taken: the element thread takes each before it starts it
        # (popleft), a hand-off takes the rest (pop); a deque's pops are atomic, so each
        # position is taken once, without a lock per element (one cost 0.3 us here)
        self.untaken = collections.deque(range(count))
        self.calls: queue.SimpleQueue = queue.SimpleQueue()  # mainthread requests, then FINISHED
        self.thread = threading.Thread(target=self._run, name="gpar-elements", daemon=True)

    def _run(self) -> None:
        try:
            if not self._image_verified():
                return
            try:
                call = environment.restore(self.stream, self.buffers, self.identity)
                items, unloaded = pickled.loads(self.items)
            except BaseException as exc:
                self._fail_all(exc)
                return
            self.elements_started = time.time()
            self.restored = True
            self._run_elements(call, items, {position: elementerrors.input_error(failure)
                                             for position, failure in unloaded.items()})
        finally:  # whatever escapes, the batch ends: unreported elements count as lost
            self.calls.put(FINISHED)

    def _run_elements(self, call: environment.Call, items: Sequence[Any],
                      unloaded: dict[int, ElementError]) -> None:
        """fn on each item, in order, until a hand-off takes the rest; the ``unloaded`` items
        never reached this worker. Kept lean: it runs once per element (~0.3 us here, a bare
        loop 0.07)."""
        fn, args, kwargs, retry_on = call.fn, call.args, call.kwargs, call.retry_on
        if args or kwargs:  # else the usual call, fn(x), without unpacking two empties
            fn = functools.partial(_with_arguments, fn, args, kwargs)
        values, finished, clock, take = self.values, self.finished, time.time, self.untaken.popleft
        output, note = self.output, self.note
        while True:
            try:
                position = take()
            except IndexError:  # all taken: run, or handed off
                note[2] = between_elements(len(values))
                return
            item = items[position]
            if unloaded and position in unloaded:
                self.errors[position], value = unloaded[position], None
            else:
                note[2] = position
                try:
                    value = fn(item)
                except BaseException as exc:  # SystemExit too: it would end this thread
                    self.errors[position] = elementerrors.element_error(
                        exc, "error", isinstance(exc, retry_on))
                    value = None
            if output is None:
                values.append(value)
                finished.append(clock())
            else:
                values.append(None)  # its Part once written
                output.hold(self, position, value)

    def _image_verified(self) -> bool:
        """Check the worker has the caller's distributions; if not, fail every element with
        the EnvironmentMismatch text (retrying on the same cluster cannot help)."""
        if self.image is None:
            return True
        from envpack import EnvironmentMismatch, verify
        from gpar.errors import gpar_error

        try:
            verify(self.image)
        except EnvironmentMismatch as exc:
            # a GparError too, sent as it is, with the worker's traceback
            mismatch = gpar_error(exc).with_traceback(exc.__traceback__)
            error = elementerrors.element_error(mismatch, "environment", retryable=False)
            self._fail_every_element(dataclasses.replace(error, exception=mismatch))
            return False
        return True

    def _fail_all(self, exc: BaseException) -> None:
        error = elementerrors.element_error(exc, "environment", retryable=False)
        message = (
            f"the calling environment could not be restored on this worker: {error.message}. "
            "Is every module fn uses importable there?"
        )
        self._fail_every_element(
            ElementError(error.exc_type, message, error.traceback, error.kind, False))

    def _fail_every_element(self, error: ElementError) -> None:
        now = time.time()
        for position in range(self.count):
            self.errors[position] = error
            self.values.append(None)
            self.finished.append(now)

    def hand_off(self, after_s: float) -> bool:
        """Give back the elements no one has started if the one in fn has run ``after_s``;
        whether it did. It takes them from ``untaken``, so the element thread never starts
        one (that thread may have started the next element meanwhile: that one stays)."""
        done = len(self.finished)
        if not self.restored or done + 1 >= self.end:
            return False
        started = self.finished[done - 1] if done else self.elements_started
        if time.time() - started <= after_s:
            return False
        taken, take = [], self.untaken.pop
        while True:
            try:
                taken.append(take())
            except IndexError:
                break
        if not taken:
            return False
        self.end = taken[-1]  # the lowest: the element thread takes from the other end
        return True

    def snapshot(self, reported: int, node_id: str) -> tuple[Progress, int]:
        # values and errors are set before finished grows, or written moves
        done = len(self.finished) if self.output is None else self.output.written
        position, running = len(self.finished), None
        if position < self.end:  # the element in fn (with output=, none while the last are written)
            running = InFn(position,
                           self.finished[position - 1] if position else self.elements_started)
        # dict.copy() runs in C under the GIL: the element thread cannot insert mid-iteration
        errors = {p: e for p, e in self.errors.copy().items() if reported <= p < done}
        values, errors = pickle_values(self.values[reported:done], errors, reported)
        message = Progress(
            done_from=reported,
            values=values,
            errors=errors,
            finished=self.finished[reported:done],
            running=running,
            end=self.end,
            elements_started=self.elements_started,
            node_id=node_id,
            pid=os.getpid(),
        )
        return message, done


def _with_arguments(fn: Callable[..., Any], args: tuple, kwargs: dict, item: Any) -> Any:
    return fn(item, *args, **kwargs)
