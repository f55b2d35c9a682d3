"""Run one batch of elements on a worker and stream each element's outcome to the driver.

    driver ──(environment, first index, items)──▶ run_batch: a Ray streaming generator
                                                    │ adopts the script's context
                                                    │ (scriptcontext.py), starts
                                                    ▼
                          element thread (elements.py): fn(item) for each item, in order
    driver ◀── Progress, every FLUSH_S and at the end ── run_batch snapshots what it finished

run_batch is the task's main thread: between messages it writes held output tables
(heldtables.py), hands elements behind a long one back, and answers the blocking calls of a
nested apply in fn (mainthread.py). A batch of tiny elements sends ~1/FLUSH_S messages a
second instead of one per element (a streamed yield costs ~0.2 ms here, a thousand times a
trivial fn call).

A call's large globals stay in Ray's object store while anything in a worker refers to them,
and what does is left in reference cycles (restored globals: fn -> globals -> fn; Ray's own
objects for the task). An idle worker may never run the full collection that frees them: each
call kept its environment pinned (tests/test_scripts.py). So a worker that ran a batch whose
call shipped buffers out of band runs a full collection once it has been idle IDLE_COLLECT_S:
not after every batch, as one took ~40 ms in a worker with pandas and statsmodels loaded. It
drops the call's template of plain globals (plaindata.py) and file of small buffers
(batchcopies.py) first: kept for the call's next batch, not for good.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gpar import batchcopies, envcache, mainthread, plaindata, scriptcontext
from gpar.elements import FINISHED, BatchRun
from gpar.records import Progress

if TYPE_CHECKING:
    from envpack import ImageCheck

#: Seconds between progress messages of a running batch: the delay with which the driver learns
#: of a finished element, and the grain of per-element timing in a batch of tiny elements. Set
#: against a streamed yield's ~0.2 ms; bench/bench_apply.py (a) measures what the messages
#: cost per trivial item, bench/bench_stragglers.py how soon the policy sees a straggler.
FLUSH_S = 0.1

#: Seconds a worker waits idle, after a batch whose call shipped buffers out of band, before
#: its full garbage collection (see the module docstring). Found with bench/bench_apply.py
#: (d): a collection after every batch took it from 0.10-0.30 to 0.71 of the hand-written time.
IDLE_COLLECT_S = 1.0

#: The full collection armed by the last batch; a batch that starts first disarms it.
_idle_collection: threading.Timer | None = None


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
    _collect_when_idle(False)
    node_id = _node_id()
    stream, placed, context = environment
    buffers = envcache.resolve(placed)
    scriptcontext.adopt(context, image)
    identity = tuple((ref.binary(), position) for ref, position in placed)  # ids never reused
    run = BatchRun(stream, buffers, items, count, sink, image, note, identity)
    with mainthread.serving(run.calls):
        run.thread.start()
        reported = 0
        next_flush = time.monotonic() + FLUSH_S
        finished = announced = False
        while not finished:
            try:
                request = run.calls.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                request = None
            finished = request is FINISHED
            if request is not None and not finished:
                mainthread.answer(request)
            if finished or time.monotonic() >= next_flush:
                if run.output is not None and (finished or run.output.due(run)):
                    run.output.write(run)
                restored = run.restored  # read first: elements_started is final once it is set
                handed_off = handoff_after_s is not None and run.hand_off(handoff_after_s)
                message, reported = run.snapshot(reported, node_id)
                first_news = not announced and restored  # "element 0 is in fn now"
                if message.finished or finished or first_news or handed_off:
                    yield message
                    announced = True
                next_flush = time.monotonic() + FLUSH_S
    _collect_when_idle(bool(run.buffers))


def warm() -> Iterator[int]:
    """A task that only readies a worker process: the modules every batch imports (this one
    and, for output= batches, pyarrow). The local cluster warms each CPU so at its start;
    a cancel replaces each worker it killed so (raytasks.py)."""
    with contextlib.suppress(ImportError):  # workers without pyarrow write no output=
        import reduce_sql.parts  # noqa: F401

    yield os.getpid()


def _collect_when_idle(arm: bool) -> None:
    """Disarm the pending idle collection; with ``arm``, set a new one."""
    global _idle_collection
    if _idle_collection is not None:
        _idle_collection.cancel()
        _idle_collection = None
    if arm:
        _idle_collection = threading.Timer(IDLE_COLLECT_S, _idle)
        _idle_collection.daemon = True
        _idle_collection.start()


def _idle() -> None:
    """What an idle worker lets go: the last call's template and copies, then the cycles."""
    plaindata.forget()
    batchcopies.forget()
    gc.collect()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
