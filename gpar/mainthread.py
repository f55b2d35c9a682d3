"""A nested apply's blocking Ray calls, made on the batch task's main thread.

Ray lends a blocked task's CPU to other tasks only when the task's main thread blocks (measured
with Ray 2.60: ray.wait in another thread keeps the CPU, and nested applies deadlock). fn runs
in the batch's element thread (elements.py), so a nested apply there hands its waits to the
task's main thread, which answers them between its progress messages (worker.run_batch).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

#: The running batch's requests for its main thread; None outside a batch.
_requests: queue.SimpleQueue | None = None


def blocking_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` (a blocking Ray call) on the task's main thread when fn runs in a batch."""
    requests = _requests
    if requests is None or threading.current_thread() is threading.main_thread():
        return func(*args, **kwargs)
    future: Future = Future()
    requests.put((future, func, args, kwargs))
    return future.result()


@contextlib.contextmanager
def serving(requests: queue.SimpleQueue) -> Iterator[None]:
    """While a batch runs: blocking_call from its element thread puts its calls in
    ``requests``, for the main thread to ``answer``."""
    global _requests
    _requests = requests
    try:
        yield
    finally:
        _requests = None


def answer(request: tuple[Future, Callable[..., Any], tuple, dict]) -> None:
    """Make a call blocking_call put, and hand its result or exception back."""
    future, func, args, kwargs = request
    try:
        future.set_result(func(*args, **kwargs))
    except BaseException as exc:
        future.set_exception(exc)
