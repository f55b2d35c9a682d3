"""Run one batch of elements on a worker and stream each element's outcome to the driver.

    driver ──(environment, first index, items)──▶ run_batch: a Ray streaming generator
                                                    │ starts
                                                    ▼
                                      element thread: fn(item) for each item, in order
    driver ◀── Progress, every FLUSH_S and at the end ── run_batch snapshots what it finished

fn runs in its own thread so the batch reports on a clock rather than on fn's schedule: while an
element hangs, the driver still learns which element is running and since when, and a batch of
tiny elements sends ~1/FLUSH_S messages a second instead of one per element (a streamed yield
costs ~0.2 ms here, a thousand times a trivial fn call).

A batch hands back the elements queued behind one that has run longer than the driver's
``handoff_after_s``: the batch's thread decides it and the element thread checks it, under one
lock, before it starts each element, so an element given back is never started here as well.

With output=, finished elements' tables are held and written together into one file (reduce_sql's
BatchWriter); an element counts as finished for the driver once its file is written. A file is
written when the batch ends, when it holds a file's worth of rows, when its oldest table has
waited HOLD_S, or when the element in fn has run WRITE_HELD_AFTER_S (well before the driver
could take it for a straggler and preempt the batch, losing what it held). An element that ran
WRITE_ALONE_AFTER_S is written in a file of its own. Only such elements can get a backup, so a
file never holds an element another attempt may win: the commit takes each file whole.

Ray lends a blocked task's CPU to other tasks only when the task's main thread blocks (measured
with Ray 2.60: ray.wait in another thread keeps the CPU, and nested applies deadlock). So a
nested apply in fn hands its waits to run_batch's thread through ``blocking_call``.

A call's large globals stay in Ray's object store while anything in a worker refers to them,
and what does is left in reference cycles (restored globals: fn -> globals -> fn; Ray's own
objects for the task). An idle worker may never run the full collection that frees them: each
call kept its environment pinned (tests/test_scripts.py). So a worker that ran a batch whose
call shipped buffers out of band runs a full collection once it has been idle IDLE_COLLECT_S:
not after every batch, as one took ~40 ms in a worker with pandas and statsmodels loaded.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import dataclasses
import functools
import gc
import importlib
import operator
import os
import pickle
import queue
import sys
import tempfile
import threading
import time
import traceback
from array import array
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import cloudpickle

from gpar import envcache, environment, notes, pickled
from gpar.records import CallerContext, ElementError, ErrorKind, Progress

if TYPE_CHECKING:
    from envpack import ImageCheck

#: Seconds between progress messages of a running batch: the delay with which the driver learns
#: of a finished element, and the grain of per-element timing in a batch of tiny elements. Set
#: against a streamed yield's ~0.2 ms; bench/bench_apply.py (a) measures what the messages
#: cost per trivial item, bench/bench_stragglers.py how soon the policy sees a straggler.
FLUSH_S = 0.1

#: With output=: an element in fn this long has the tables held before it written...
WRITE_HELD_AFTER_S = 0.1
#: ...and an element that ran this long is written alone. Below BACKUP_MIN_S
#: (gpar/stragglers.py), so no element that may get a backup shares a file with others
#: (tests/test_reduce_sql.py).
#: Both follow from the policy's patience, not from a benchmark; bench/bench_reduce.py (a)
#: measures the write they shape.
WRITE_ALONE_AFTER_S = 0.25

#: With output=: the longest a finished element's table waits to be written, so the driver's
#: quorum, deadline and progress see it soon whatever fn does next.
HOLD_S = 1.0


#: Seconds a worker waits idle, after a batch whose call shipped buffers out of band, before
#: its full garbage collection (see the module docstring). Found with bench/bench_apply.py
#: (d): a collection after every batch took it from 0.10-0.30 to 0.71 of the hand-written time.
IDLE_COLLECT_S = 1.0

#: Calls the element thread of the running batch wants made on the task's main thread.
_main_thread_calls: queue.SimpleQueue | None = None

#: The full collection armed by the last batch; a batch that starts first disarms it.
_idle_collection: threading.Timer | None = None


def blocking_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` (a blocking Ray call) on the task's main thread when fn runs in a batch."""
    calls = _main_thread_calls
    if calls is None or threading.current_thread() is threading.main_thread():
        return func(*args, **kwargs)
    future: Future = Future()
    calls.put((future, func, args, kwargs))
    return future.result()


def run_batch(environment: tuple[bytes, list[Any]], items: bytes, count: int,
              sink: Any = None, image: ImageCheck | None = None,
              handoff_after_s: float | None = None,
              note: tuple[int, int] | None = None) -> Iterator[Progress]:
    """Yield Progress messages while fn runs over the ``count`` pickled ``items``; see the
    module docstring.

    ``environment`` is the captured call: its stream, out-of-band buffers and the caller's
    context (a script's, for workers that outlive it; else None). The items are
    unpickled once the image is verified: an element whose class comes from a distribution the
    worker lacks must not fail before the mismatch can be reported. With a ``sink``
    (a reduce_sql Sink), each value is written there and its Part is reported instead.
    ``image`` is what this worker must have before fn runs (envpack). The elements behind one
    that has run ``handoff_after_s`` are handed back. ``note``: (job, batch), the batch's
    name in this worker's note of the element in fn (notes.py).
    """
    global _main_thread_calls
    _collect_when_idle(False)
    node_id = _node_id()
    stream, placed, context = environment
    buffers = envcache.resolve(placed)
    _adopt(context, image)
    identity = tuple((ref.binary(), position) for ref, position in placed)  # ids never reused
    run = _BatchRun(stream, buffers, items, count, sink, image, note, identity)
    _main_thread_calls = run.calls
    try:
        run.thread.start()
        reported = 0
        next_flush = time.monotonic() + FLUSH_S
        finished = announced = False
        while not finished:
            try:
                request = run.calls.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                request = None
            finished = request is _FINISHED
            if request is not None and not finished:
                _call(*request)
            if finished or time.monotonic() >= next_flush:
                if finished or run.should_write():
                    run.write_held()
                restored = run.restored  # read first: elements_started is final once it is set
                handed_off = handoff_after_s is not None and run.hand_off(handoff_after_s)
                message, reported = run.snapshot(reported, node_id)
                first_news = not announced and restored  # "element 0 is in fn now"
                if message.finished or finished or first_news or handed_off:
                    yield message
                    announced = True
                next_flush = time.monotonic() + FLUSH_S
    finally:
        _main_thread_calls = None
    _collect_when_idle(bool(run.buffers))


def warm() -> Iterator[int]:
    """A task that only readies a worker process: the modules every batch imports (this one
    and, for output= batches, pyarrow). The local cluster warms each CPU so at its start;
    a cancel replaces each worker it killed so (raytasks.py)."""
    with contextlib.suppress(ImportError):  # workers without pyarrow write no output=
        import reduce_sql.parts  # noqa: F401

    yield os.getpid()


#: The script context this process last adopted, and its own sys.path and environment
#: variables from before the first: each batch starts from those, not from the last script's.
_adopted: CallerContext | None = None
_own: tuple[list[str], dict[str, str]] | None = None


def adopted_context() -> CallerContext | None:
    """The script context this worker's batch runs in: a nested call's batches adopt it too."""
    return _adopted


def _adopt(context: CallerContext | None, image: ImageCheck | None) -> None:
    """Run this batch in the script's place: its sys.path first (after staged layers), its
    working directory, its environment variables (none of an earlier script's; Ray's RAY_*
    of this process kept).
    A batch of another script run first drops the local modules earlier ones loaded."""
    global _adopted, _own
    if context is None or context == _adopted:
        return
    from envpack import _boot
    from envpack.checks import forget_local_modules

    if _own is None:
        _own = (list(sys.path), dict(os.environ))
    if _adopted is None or _adopted.session != context.session:
        forget_local_modules(image.local_modules if image is not None else ())
    staged = _boot.staged_paths()
    sys.path[:] = [*staged, *(entry for entry in context.sys_path if entry not in staged),
                   *(entry for entry in _own[0] if entry not in context.sys_path
                     and entry not in staged)]
    importlib.invalidate_caches()
    with contextlib.suppress(OSError):
        os.chdir(context.cwd)
    environ = {**{name: value for name, value in _own[1].items() if name.startswith("RAY_")},
               **{name: value for name, value in context.environ.items()
                  if not name.startswith("RAY_")}}
    if environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)
        tempfile.tempdir = None  # found again from the script's TMPDIR
    _adopted = context


_FINISHED = object()


def _collect_when_idle(arm: bool) -> None:
    """Disarm the pending idle collection; with ``arm``, set a new one."""
    global _idle_collection
    if _idle_collection is not None:
        _idle_collection.cancel()
        _idle_collection = None
    if arm:
        _idle_collection = threading.Timer(IDLE_COLLECT_S, gc.collect)
        _idle_collection.daemon = True
        _idle_collection.start()


def _call(future: Future, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        future.set_result(func(*args, **kwargs))
    except BaseException as exc:
        future.set_exception(exc)


class _BatchRun:
    """The element thread's state: appended to by it, read by run_batch's snapshots."""

    def __init__(self, stream: bytes, buffers: list[Any], items: bytes, count: int, sink: Any,
                 image: ImageCheck | None = None, note: tuple[int, int] | None = None,
                 identity: Hashable = None):
        self.stream, self.buffers, self.items, self.count = stream, buffers, items, count
        self.identity = identity  # what names the buffers' content for good, if known
        self.writer = None if sink is None else sink.open()  # a reduce_sql BatchWriter
        self.image = image
        self.note = notes.begin(*note) if note else notes.scratch()  # [2]: where fn is
        self.values: list[Any] = []
        self.errors: dict[int, ElementError] = {}
        self.finished = array("d")
        self.written = 0  # positions [0, written) are final: their tables are in files
        self.elements_started = time.time()  # set again once the environment is restored
        self.restored = False  # until then no element is in fn: say nothing about one
        self.end = count  # positions from here on are not this batch's to start
        # the positions no one has taken: the element thread takes each before it starts it
        # (popleft), a hand-off takes the rest (pop); a deque's pops are atomic, so each
        # position is taken once, without a lock per element (one cost 0.3 us here)
        self.untaken = collections.deque(range(count))
        self.settling = threading.Lock()  # held to hold a table, and to take or settle them
        self.writing = threading.Lock()  # held while a file is written
        self.calls: queue.SimpleQueue = queue.SimpleQueue()  # requests, then _FINISHED
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
            self._run_elements(call, items, {position: _input_error(failure)
                                             for position, failure in unloaded.items()})
        finally:  # whatever escapes, the batch ends: unreported elements count as lost
            self.calls.put(_FINISHED)

    def _run_elements(self, call: environment.Call, items: Sequence[Any],
                      unloaded: dict[int, ElementError]) -> None:
        """fn on each item, in order, until a hand-off takes the rest; the ``unloaded`` items
        never reached this worker. Kept lean: it runs once per element (~0.3 us here, a bare
        loop 0.07)."""
        fn, args, kwargs, retry_on = call.fn, call.args, call.kwargs, call.retry_on
        if args or kwargs:  # else the usual call, fn(x), without unpacking two empties
            fn = functools.partial(_with_arguments, fn, args, kwargs)
        values, finished, clock, take = self.values, self.finished, time.time, self.untaken.popleft
        writer, note = self.writer, self.note
        while True:
            try:
                position = take()
            except IndexError:  # all taken: run, or handed off
                note[2] = ~len(values)
                return
            item = items[position]
            if unloaded and position in unloaded:
                self.errors[position], value = unloaded[position], None
            else:
                note[2] = position
                try:
                    value = fn(item)
                except BaseException as exc:  # SystemExit too: it would end this thread
                    self.errors[position] = _element_error(exc, "error",
                                                           isinstance(exc, retry_on))
                    value = None
            if writer is None:
                values.append(value)
                finished.append(clock())
            else:
                values.append(None)  # its Part once written
                self._hold(position, value)

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
            error = _element_error(mismatch, "environment", retryable=False)
            self._fail_every_element(dataclasses.replace(error, exception=mismatch))
            return False
        return True

    def _hold(self, position: int, value: Any) -> None:
        """Give fn's table to the writer (one that ran long to go in a file of its own) and
        count the element finished. The batch's main thread writes: this thread goes on with
        fn, so the time the driver sees an element in fn is the time it spent there."""
        from reduce_sql.errors import OutputTypeError

        table = None
        if position not in self.errors:
            try:
                table = self.writer.table_for(value)
            except OutputTypeError as exc:  # fn's to fix: retrying cannot help
                self.errors[position] = _element_error(exc, "output", retryable=False)
        started = self.finished[-1] if self.finished else self.elements_started
        with self.settling:
            if table is not None:
                alone = time.time() - started > WRITE_ALONE_AFTER_S
                self.writer.hold(position, table, alone)
            self.finished.append(time.time())

    def write_held(self) -> None:
        """Write the held tables; every element finished before is final then."""
        if self.writer is None:
            return
        with self.writing:  # one file at a time, in order
            with self.settling:
                held, done = self.writer.take(), len(self.finished)
            written = self.writer.write(held)
            with self.settling:
                for position, part in written:
                    if isinstance(part, Exception):  # storage may recover: a retry may write
                        self.errors[position] = _element_error(part, "output", retryable=True)
                    else:
                        self.values[position] = part
                self.written = done

    def should_write(self) -> bool:
        """Whether the batch's main thread should write the held tables now (see the module)."""
        if self.writer is None:
            return False
        writer, held_since = self.writer, self.writer.oldest_held
        if held_since is None:
            return self.written < len(self.finished)  # elements that failed: settle them
        in_fn_since = self.finished[-1] if self.finished else self.elements_started
        now = time.time()
        return (writer.full or writer.alone_held or now - held_since > HOLD_S
                or now - in_fn_since > WRITE_HELD_AFTER_S)

    def _fail_all(self, exc: BaseException) -> None:
        error = _element_error(exc, "environment", retryable=False)
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
        done = len(self.finished) if self.writer is None else self.written
        position, running = len(self.finished), None
        if position < self.end:  # the element in fn (with output=, none while the last are written)
            running = (position, self.finished[position - 1] if position else self.elements_started)
        # dict.copy() runs in C under the GIL: the element thread cannot insert mid-iteration
        errors = {p: e for p, e in self.errors.copy().items() if reported <= p < done}
        values, errors = _pickle_values(self.values[reported:done], errors, reported)
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


#: Values go back with pickle protocol 4: protocol 5 rebuilds a read-only array read-only, and
#: a value that is a view of a global or an argument is one (fn receives large arrays
#: read-only, environment.py); the caller gets ordinary writable arrays, as from a for loop.
VALUES_PROTOCOL = 4


def _with_arguments(fn: Callable[..., Any], args: tuple, kwargs: dict, item: Any) -> Any:
    return fn(item, *args, **kwargs)


def _keeping_byte_order(pickler: type[pickle.Pickler]) -> type[pickle.Pickler]:
    """``pickler``, but a numpy array of the other byte order comes back in it: protocol 4
    rebuilds one native ('>f8' became '<f8'), where a for loop keeps it. A dispatch table
    entry: looked up for arrays only, after pickle's own fast paths."""
    import numpy as np

    def reduce_array(array: Any) -> Any:
        if array.dtype.isnative:
            return array.__reduce_ex__(VALUES_PROTOCOL)
        native = array.astype(array.dtype.newbyteorder("="))
        return operator.methodcaller("astype", array.dtype), (native,)

    own = getattr(pickler, "dispatch_table", None)  # cloudpickle's; pickle's C class has none
    table = {**(own if isinstance(own, Mapping) else copyreg.dispatch_table),
             np.ndarray: reduce_array}
    return type(pickler.__name__, (pickler,), {"dispatch_table": table})


@functools.cache
def _value_picklers(numpy_loaded: bool) -> tuple[type[pickle.Pickler], ...]:
    """pickle's, then cloudpickle's (for what pickle refuses), each keeping the byte order of
    numpy's arrays once numpy is loaded (a worker may have none: no array to return then)."""
    picklers = (pickle.Pickler, cloudpickle.Pickler)
    return tuple(map(_keeping_byte_order, picklers)) if numpy_loaded else picklers


def _pickle_values(
    values: list[Any], errors: dict[int, ElementError], done_from: int
) -> tuple[bytes, dict[int, ElementError]]:
    """Pickle values apart from the message; one that cannot be pickled becomes its error.

    Plain pickle first: it runs at C speed, while cloudpickle calls back into Python for every
    object (~10 ms for 20,000 ints here); cloudpickle only for what pickle refuses (__main__
    classes, lambdas).
    """
    data, refused = pickled.dumps(values, _value_picklers("numpy" in sys.modules),
                                  VALUES_PROTOCOL)
    if not refused:
        return data, errors
    return data, {**errors, **{done_from + position: ElementError(
        failure.exc_type,
        f"fn returned a {failure.value_type} that cannot be pickled: {failure.message}",
        "", "result", True) for position, failure in refused.items()}}


def _input_error(failure: pickled.Failure) -> ElementError:
    """Why an element never reached fn: the caller's value, so retrying cannot help."""
    if failure.stage == "pickle":
        message = (f"the element, a {failure.value_type}, cannot be pickled to send it to a "
                   f"worker: {failure.message}. Pass elements that pickle: make files, locks "
                   "and connections inside fn from plain values")
    else:
        message = (f"the element could not be unpickled on the worker: {failure.message}. "
                   "Is the module its class comes from importable there?")
    return ElementError(failure.exc_type, message, "", "input", retryable=False)


def _element_error(exc: BaseException, kind: ErrorKind, retryable: bool) -> ElementError:
    """An exception as text: its class may not exist, or unpickle, on the driver."""
    kind_of = type(exc)
    exc_type = kind_of.__qualname__
    if kind_of.__module__ not in ("builtins", "__main__"):
        exc_type = f"{kind_of.__module__}.{exc_type}"
    try:
        message = str(exc)
    except Exception as str_error:
        message = f"<str() of the exception failed: {str_error!r}>"
    tb = "".join(traceback.format_exception(exc))
    return ElementError(exc_type, message, tb, kind, retryable)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
