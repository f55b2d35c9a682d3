"""A batch's element thread (gpar/elements.py) against its hand-off, without Ray: each element
runs here or is given back, never both, never neither."""

import random
import sys
import threading
import time

import cloudpickle

from gpar import environment, pickled
from gpar.elements import BatchRun

#: What the elements below record, and the gate the second one waits at: module globals, so
#: fn travels by reference and the batch runs the very functions and lists of this module.
RAN: list[int] = []
GATE = threading.Event()


def record(x):
    RAN.append(x)
    return x


def slow_second(x):
    RAN.append(x)
    if x == 1:
        GATE.wait(10)
    return x


def started_batch(fn, count):
    RAN.clear()
    captured = environment.capture(fn, (), {}, {"__name__": __name__}, mode="full", retry_on=())
    items, _ = pickled.dumps(list(range(count)), (cloudpickle.Pickler,), 5)
    run = BatchRun(captured.stream, [bytes(b.raw()) for b in captured.buffers], items,
                   count, None)
    run.thread.start()
    return run


def wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_the_elements_behind_a_long_one_are_given_back_and_never_started_here():
    GATE.clear()
    run = started_batch(slow_second, 50)
    wait_for(lambda: RAN == [0, 1])
    assert run.hand_off(0.0)
    GATE.set()
    run.thread.join(10)
    assert run.end == 2 and RAN == [0, 1] and run.values == [0, 1]
    message, _ = run.snapshot(0, "node")
    assert message.end == 2 and len(message.finished) == 2


def test_a_hand_off_racing_the_element_thread_splits_the_batch_exactly():
    """Hand-offs at random moments of a batch of tiny elements, the threads switching every
    few bytecodes: what ran is a prefix, what was given back the rest."""
    rng, ends = random.Random(0), []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            run = started_batch(record, 20_000)
            wait_for(lambda run=run: run.restored)
            time.sleep(rng.random() * 0.005)
            handed_off = run.hand_off(-1.0)
            run.thread.join(10)
            assert RAN == list(range(run.end))
            assert len(run.values) == len(run.finished) == run.end
            assert handed_off == (run.end < 20_000)
            ends.append(run.end)
    finally:
        sys.setswitchinterval(interval)
    assert sum(0 < end < 20_000 for end in ends) > 20  # the race was run, not avoided
