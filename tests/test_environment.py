"""Capturing the calling environment, without Ray: a namespace that pickles by value."""

import textwrap
import threading

import cloudpickle
import numpy as np
import pytest

from gpar.environment import SHARED_MIN_BYTES, capture, restore
from gpar.errors import EnvironmentCaptureError


def main_namespace(source: str) -> dict:
    """Globals of code run as a script: its functions pickle by value, like __main__'s."""
    namespace = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace


def ship(namespace: dict, fn_name: str, mode: str = "full", args=(), kwargs=None):
    captured = capture(namespace[fn_name], args, kwargs or {}, namespace, mode=mode, retry_on=())
    buffers = [bytes(b.raw()) for b in captured.buffers]
    return restore(captured.stream, buffers), captured


SCRIPT = """
import numpy as np
SCALE = 3
table = np.arange(1_000_000, dtype=np.float64)
def helper(x):
    return x * SCALE
def by_lookup(x):
    return globals()["HIDDEN"] + eval("HIDDEN2") + helper(x)
HIDDEN = 100
HIDDEN2 = 1000
"""


def test_full_environment_resolves_names_reached_only_through_globals():
    call, _ = ship(main_namespace(SCRIPT), "by_lookup")
    assert call.fn(1) == 100 + 1000 + 3


def test_referenced_environment_ships_only_what_fn_names():
    call, _ = ship(main_namespace(SCRIPT), "by_lookup", mode="referenced")
    with pytest.raises(KeyError, match="HIDDEN"):
        call.fn(1)


def test_restored_globals_are_a_copy_not_the_callers():
    namespace = main_namespace(SCRIPT + "\nseen = []\ndef remember(x):\n    seen.append(x)\n")
    call, _ = ship(namespace, "remember")
    call.fn(1)
    assert namespace["seen"] == []


def test_large_arrays_travel_out_of_band():
    _, captured = ship(main_namespace(SCRIPT), "helper")
    assert len(captured.stream) < 100_000
    assert sum(b.raw().nbytes for b in captured.buffers) >= 8_000_000


def test_unpicklable_global_that_fn_does_not_reach_is_skipped_and_listed():
    namespace = main_namespace(SCRIPT)
    namespace["lock"] = threading.Lock()
    call, captured = ship(namespace, "helper")
    assert captured.skipped == {"lock": "_thread.lock"}
    assert call.fn(2) == 6


def test_unpicklable_global_that_fn_reaches_is_named_before_anything_runs():
    namespace = main_namespace("def uses_lock(x):\n    with lock:\n        return x\n")
    namespace["lock"] = threading.Lock()
    with pytest.raises(EnvironmentCaptureError, match=r"global 'lock' \(_thread.lock\)"):
        ship(namespace, "uses_lock")


def test_unpicklable_global_reached_through_a_helper_is_named(tmp_path):
    namespace = main_namespace(
        "def inner(x):\n    handle.write(str(x))\ndef outer(x):\n    return inner(x)\n"
    )
    namespace["handle"] = open(tmp_path / "log.txt", "w")  # a log file opened by the script
    try:
        with pytest.raises(EnvironmentCaptureError, match="'handle'"):
            ship(namespace, "outer", mode="referenced")
    finally:
        namespace["handle"].close()


def test_unpicklable_argument_is_named():
    namespace = main_namespace("def f(x, lock):\n    return x\n")
    with pytest.raises(EnvironmentCaptureError, match="keyword argument 'lock'"):
        ship(namespace, "f", kwargs={"lock": threading.Lock()})


def test_notebook_internals_are_never_shipped():
    namespace = main_namespace("def f(x):\n    return x\n")
    namespace.update({"In": ["x"], "Out": {1: 2}, "_": 3, "_i7": "code", "_7": 4, "keep": 5})
    call, _ = ship(namespace, "f")
    assert set(call.namespace) == {"f", "keep"}


def test_large_buffers_stay_shared_and_read_only_small_ones_become_the_batchs_own():
    namespace = main_namespace(f"import numpy as np\nbig = np.ones({SHARED_MIN_BYTES // 8})\n"
                               "small = np.ones(4)\ndef f(x):\n    return big[x] + small[x]\n")
    captured = capture(namespace["f"], (), {}, namespace, mode="full", retry_on=())
    stored = [np.frombuffer(b.raw(), dtype=np.uint8).copy() for b in captured.buffers]
    for array in stored:  # as Ray's object store maps them on a worker
        array.flags.writeable = False
    call = restore(captured.stream, stored)
    big, small = call.namespace["big"], call.namespace["small"]
    assert not big.flags.writeable and any(np.shares_memory(big, s) for s in stored)
    assert small.flags.writeable and not any(np.shares_memory(small, s) for s in stored)


def test_small_arrays_are_written_once_per_worker_and_each_batch_writes_its_own(monkeypatch):
    """Three batches of one call on one worker: the small arrays are copied into one file,
    once; a batch's write into its array reaches neither the next batch nor the stored
    buffer."""
    from gpar import batchcopies

    namespace = main_namespace("import numpy as np\nkept = [np.zeros(1_000) for _ in range(50)]\n"
                               "def f(x):\n    kept[0][0] += 1\n    return float(kept[0][0])\n")
    captured = capture(namespace["f"], (), {}, namespace, mode="full", retry_on=())
    stored = [np.frombuffer(b.raw(), dtype=np.uint8).copy() for b in captured.buffers]
    for array in stored:
        array.flags.writeable = False
    writes = []
    monkeypatch.setattr(batchcopies, "_written",
                        lambda views, real=batchcopies._written: writes.append(1) or real(views))
    identity = ("a call's buffers", len(stored))
    assert [restore(captured.stream, stored, identity).fn(0) for _ in range(3)] == [1.0] * 3
    assert len(writes) == 1
    assert not any(array.any() for array in stored)


def test_an_idle_worker_lets_go_of_the_last_calls_template_and_file(monkeypatch):
    """Kept for the call's next batch, not for good: the idle worker's collection drops them,
    and a file that could not be written leaves nothing kept (no stale descriptor)."""
    import os

    from gpar import batchcopies, plaindata, worker

    namespace = main_namespace("import numpy as np\nsmall = np.ones(10)\nROWS = list(range(2_000))"
                               "\ndef f(x):\n    return small[0] + len(ROWS)\n")
    captured = capture(namespace["f"], (), {}, namespace, mode="full", retry_on=())
    stored = [bytes(b.raw()) for b in captured.buffers]
    assert restore(captured.stream, stored).fn(0) == 2_001.0
    descriptor = batchcopies._kept[1]
    assert plaindata._kept is not None
    worker._idle()
    assert plaindata._kept is None and batchcopies._kept is None
    with pytest.raises(OSError):
        os.fstat(descriptor)

    restore(captured.stream, stored)  # kept again, then another call's file fails

    def full(views):
        raise OSError("no memory for the file")

    monkeypatch.setattr(batchcopies, "_written", full)
    with pytest.raises(OSError):
        batchcopies.private_views([memoryview(b"abc")], identity="another call")
    assert batchcopies._kept is None


def test_a_large_plain_global_is_each_batchs_own_copy_of_one_unpickled_template():
    """A list of 100,000 ints in the globals: each batch (a restore) gets a list of its own,
    whatever an earlier batch on the worker did to its copy, while what shares the list in
    the caller shares it in the batch; the second batch copies the template the first
    unpickled instead of unpickling it again (its items are the very same int objects)."""
    namespace = main_namespace("""
        ROWS = list(range(1_000_000, 1_100_000))
        LOOKUP = {"rows": ROWS, "scale": 2}
        KINDS = {str(n): n for n in range(2_000)}
        def grow(x):
            ROWS.append(x)
            KINDS["new"] = x
            return len(ROWS), LOOKUP["rows"] is ROWS, len(KINDS)
    """)
    captured = capture(namespace["grow"], (), {}, namespace, mode="full", retry_on=())
    assert len(captured.stream) < 10_000  # the list went to the template, not the stream
    stored = [bytes(buffer.raw()) for buffer in captured.buffers]
    first = restore(captured.stream, stored)
    assert first.fn(7) == (100_001, True, 2_001)
    second = restore(captured.stream, stored)
    assert second.fn(8) == (100_001, True, 2_001)
    assert second.namespace["ROWS"] is not first.namespace["ROWS"]
    assert second.namespace["ROWS"][5] is first.namespace["ROWS"][5]
    assert namespace["ROWS"][-1] == 1_099_999  # the caller's is untouched


def test_a_plain_global_named_twice_stays_one_object():
    namespace = main_namespace("""
        A = list(range(5_000))
        B = A
        def f(x):
            return A is B
    """)
    call, _ = ship(namespace, "f")
    assert call.fn(0) is True


def test_an_importable_callers_namespace_is_not_shipped():
    import json

    captured = capture(json.dumps, (), {}, vars(json), mode="full", retry_on=())
    call = restore(captured.stream, [])
    assert call.namespace == {}
    assert cloudpickle.loads(cloudpickle.dumps(call.fn)) is json.dumps


def test_an_importable_fn_is_not_blamed_for_its_own_modules_globals(monkeypatch):
    import sys
    import types

    library = types.ModuleType("gpar_test_library")  # importable: fn travels by reference
    exec("import threading\n_lock = threading.Lock()\ndef work(x):\n    with _lock:\n"
         "        return x\n", vars(library))
    monkeypatch.setitem(sys.modules, "gpar_test_library", library)
    caller = main_namespace("x = 1")
    caller["log"] = threading.Lock()  # the caller's unpicklable global: skipped, not fatal
    captured = capture(library.work, (), {}, caller, mode="full", retry_on=())
    assert captured.skipped == {"log": "_thread.lock"}


def test_random_generators_fn_draws_from_are_named_wherever_they_come_from():
    import random

    from gpar.environment import random_states

    namespace = main_namespace("""
        import random
        import numpy as np
        legacy = np.random.RandomState(1)
        secure = random.SystemRandom()
        def draw(x, *args, **kwargs):
            return legacy.rand() + secure.random()
    """)
    rng = np.random.default_rng(0)

    def closure(x):
        return rng.random()

    assert random_states(namespace["draw"], (random.Random(2),), {"bits": np.random.PCG64()}) == [
        "global 'legacy' (numpy.random.mtrand.RandomState)",
        "argument 0 of apply's *args (random.Random)",
        "keyword argument 'bits' (numpy.random._pcg64.PCG64)"]
    assert random_states(closure, (), {}) == [
        "variable 'rng' captured by fn's closure (numpy.random._generator.Generator)"]

    def with_default(x, noise=np.random.default_rng(1)):  # noqa: B008 - the trap itself
        return noise.random()

    assert random_states(with_default, (), {}) == [
        "the default of fn's parameter 'noise' (numpy.random._generator.Generator)"]


#: A value that pickles here but cannot be rebuilt where it is unpickled (a worker lacking its
#: module, a connection that cannot reopen there).
NOT_REBUILT = """
def rebuild(value):
    raise ConnectionError("cannot reopen the database connection here")
class Connection:
    def __reduce__(self):
        return rebuild, (1,)
db = Connection()
"""


def test_a_global_that_cannot_be_unpickled_is_left_out_when_fn_does_not_use_it():
    namespace = main_namespace(NOT_REBUILT + "\ndef f(x):\n    return x + 1\nafter = 5\n")
    call, _ = ship(namespace, "f")
    assert call.fn(1) == 2
    assert "db" not in call.namespace and call.namespace["after"] == 5


def test_a_global_fn_uses_that_cannot_be_unpickled_is_named():
    namespace = main_namespace(NOT_REBUILT + "\ndef f(x):\n    return db\n")
    with pytest.raises(EnvironmentCaptureError,
                       match=r"fn uses the global 'db'.*ConnectionError: cannot reopen"):
        ship(namespace, "f")


def test_a_global_that_cannot_be_unpickled_leaves_the_large_plain_ones_fn_uses_intact():
    """The globals after one that fails are loaded by the resumed unpickler: fn's reference to
    a large list there is the batch's copy of the template as well."""
    namespace = main_namespace(NOT_REBUILT + "\nROWS = list(range(5_000))\n"
                               "def f(x):\n    return ROWS[x] + len(ROWS)\n")
    call, captured = ship(namespace, "f")
    assert len(captured.stream) < 10_000  # ROWS went to the template
    assert "db" not in call.namespace and call.namespace["ROWS"] is not namespace["ROWS"]
    assert call.fn(7) == 5_007 and call.namespace["ROWS"] == namespace["ROWS"]
