"""Scripts run as __main__ in a fresh interpreter: what users write, on the session's cluster."""

from conftest import assert_ok

HELPER = """
def score(values, n):
    return sum(sorted(values)[-n:])
"""


def test_the_issue_example_with_a_local_module_a_big_global_and_kwargs(run_script):
    out = assert_ok(run_script("""
        import numpy as np, gpar
        from helpers import score
        SCALE = 3.0
        table = np.random.default_rng(0).normal(size=(2000, 2000))
        def simulate(i, n=10):
            return score(list(table[i % 2000] * SCALE), n)
        results = gpar.apply(range(3000), simulate, n=20, progress=False)
        assert results == [simulate(i, n=20) for i in range(3000)]
        print("ok", len(results), results.report.environment_bytes > 32_000_000)
    """, files={"helpers.py": HELPER}))
    assert out.split() == ["ok", "3000", "True"]


def test_closures_lambdas_classes_dataclasses_and_recursion_defined_in_main(run_script):
    out = assert_ok(run_script("""
        import dataclasses, gpar

        @dataclasses.dataclass(frozen=True)
        class Point:
            x: int
            y: int

        class Scaler:
            def __init__(self, k):
                self.k = k
            def __call__(self, p):
                return Point(p.x * self.k, p.y * self.k)

        def make_adder(k):
            def add(x):
                return x + k
            return add

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        points = [Point(i, -i) for i in range(4)]
        scaled = gpar.apply(points, Scaler(3), progress=False)
        assert scaled == [Point(3 * i, -3 * i) for i in range(4)]
        assert gpar.apply(range(5), make_adder(10), progress=False) == [10, 11, 12, 13, 14]
        assert gpar.apply(range(5), lambda x: x ** 2, progress=False) == [0, 1, 4, 9, 16]
        assert gpar.apply(range(10), fib, progress=False) == [fib(i) for i in range(10)]
        print("ok")
    """))
    assert out.strip() == "ok"


def test_a_helper_reached_only_through_globals_resolves(run_script):
    out = assert_ok(run_script("""
        import gpar
        def double(x):
            return 2 * x
        def dispatch(x):
            return globals()["dou" + "ble"](x) + eval("OFFSET")
        OFFSET = 100
        print(gpar.apply(range(3), dispatch, progress=False))
        try:
            gpar.apply(range(3), dispatch, env="referenced", progress=False)
        except gpar.AllTasksFailed as group:
            print(group.exceptions[0].failure.exc_type)
    """))
    assert out.splitlines() == ["[100, 102, 104]", "KeyError"]


def test_a_global_mutated_by_a_task_is_seen_neither_by_the_caller_nor_a_later_call(run_script):
    out = assert_ok(run_script("""
        import gpar
        seen = []
        counter = {"calls": 0}
        def remember(x):
            seen.append(x)
            counter["calls"] += 1
            return len(seen)
        first = gpar.apply(range(4), remember, max_workers=4, progress=False)
        second = gpar.apply(range(4), remember, max_workers=4, progress=False)
        print(first, second, seen, counter)
    """))
    assert out.strip() == "[1, 1, 1, 1] [1, 1, 1, 1] [] {'calls': 0}"


def test_a_large_list_global_grown_by_a_batch_is_fresh_in_the_next_one_on_that_worker(
        run_script):
    """A list of plain values of 1,000 items and more is unpickled once per worker and copied
    for each batch (gpar/plaindata.py): a copy a batch grew must not be the next's."""
    out = assert_ok(run_script("""
        import os, time, gpar
        ROWS = list(range(5_000))
        BY_NAME = {"rows": ROWS}
        def grow(x):
            ROWS.append(x)
            time.sleep(0.6)  # longer than a batch's target: one element per batch
            return len(ROWS), BY_NAME["rows"] is ROWS, os.getpid()
        results = gpar.apply(range(6), grow, max_workers=2, progress=False)
        print([(size, shared) for size, shared, _ in results], results.report.batches)
        print(len({pid for _, _, pid in results}), len(ROWS))
    """))
    batches, caller = out.splitlines()
    assert batches == f"{[(5_001, True)] * 6} 6"
    pids, rows = caller.split()
    assert int(pids) < 6 and rows == "5000"  # a worker ran several batches; the caller's intact


def test_a_large_global_array_arrives_read_only_and_a_change_reaches_no_later_batch(
        run_script):
    """Large arrays are mapped in place on the workers, so writing into one must fail rather
    than reach other batches; a small one is each batch's own copy, even when one worker
    process runs several batches in turn."""
    out = assert_ok(run_script("""
        import os, time, numpy as np, gpar
        BIG = np.zeros(4_000_000)  # 32 MB: out of band, in the object store
        counts = np.zeros(1, dtype=int)
        def touch(x):
            try:
                BIG[x] = 1.0
                big = float(BIG.sum())
            except ValueError as error:
                big = str(error)
            counts[0] += 1
            time.sleep(0.6)  # longer than a batch's target: one element per batch
            return big, int(counts[0]), os.getpid()
        results = gpar.apply(range(6), touch, max_workers=2, progress=False)
        print(sorted({big for big, _, _ in results}))
        print([count for _, count, _ in results], results.report.batches)
        print(len({pid for _, _, pid in results}), BIG.sum(), counts[0])
    """))
    bigs, counts, caller = out.splitlines()
    assert bigs == "['assignment destination is read-only']"
    assert counts == "[1, 1, 1, 1, 1, 1] 6"
    pids, big_sum, count = caller.split()
    assert int(pids) < 6  # a worker process ran several batches: a leak could have shown
    assert (big_sum, count) == ("0.0", "0")


def test_globals_are_captured_at_call_time(run_script):
    out = assert_ok(run_script("""
        import gpar
        RATE = 1
        def at_rate(x):
            return x * RATE
        before = gpar.apply(range(3), at_rate, progress=False)
        RATE = 10
        after = gpar.apply(range(3), at_rate, progress=False)
        print(before, after)
    """))
    assert out.strip() == "[0, 1, 2] [0, 10, 20]"


def test_unpicklable_global_fn_reaches_is_named_before_any_task(run_script):
    completed = run_script("""
        import threading, gpar
        lock = threading.Lock()
        def guarded(x):
            with lock:
                return x
        try:
            gpar.apply(range(3), guarded, progress=False)
        except gpar.EnvironmentCaptureError as error:
            print("refused:", error)
    """)
    out = assert_ok(completed)
    assert out.startswith("refused: fn uses the global 'lock' (_thread.lock)")


def test_unpicklable_global_fn_does_not_reach_is_skipped_and_reported(run_script):
    out = assert_ok(run_script("""
        import threading, gpar
        lock = threading.Lock()
        print(gpar.apply(range(3), lambda x: x + 1, progress=False).report.skipped_globals)
    """))
    assert out.strip() == "{'lock': '_thread.lock'}"


def test_a_global_that_cannot_be_unpickled_on_the_workers_breaks_only_what_uses_it(run_script):
    out = assert_ok(run_script("""
        import os, gpar
        DRIVER = os.getpid()
        def reopen(path):
            if os.getpid() != DRIVER:
                raise ConnectionError(f"cannot reopen {path} on a worker")
            return Connection()
        class Connection:
            def __reduce__(self):
                return reopen, ("db.sqlite",)
        unused = Connection()
        print(gpar.apply(range(3), lambda x: x + 1, progress=False))
        used = Connection()
        try:
            gpar.apply(range(2), lambda x: used, progress=False)
        except gpar.AllTasksFailed as failed:
            print(failed.exceptions[0].failure.message)
    """))
    lines = out.splitlines()
    assert lines[0] == "[1, 2, 3]"
    assert "fn uses the global 'used'" in lines[1] and "cannot reopen db.sqlite" in lines[1]


def test_an_exception_class_defined_in_main_still_reports_type_and_message(run_script):
    out = assert_ok(run_script("""
        import warnings, gpar
        class ModelDiverged(RuntimeError):
            pass
        def fit(x):
            if x == 1:
                raise ModelDiverged(f"no convergence for series {x}")
            return x
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = gpar.apply(range(3), fit, progress=False)
        failure = results[1]
        print(failure.exc_type, "|", failure.message, "|", len(caught))
        print("in fit" in failure.traceback)
    """))
    assert out.splitlines() == ["ModelDiverged | no convergence for series 1 | 1", "True"]


#: A script's helper: how many objects Ray's object store holds now (the cluster is shared with
#: other tests), and a bounded wait for it to come down to a count.
OBJECT_STORE = """
import time
from ray._private.internal_api import memory_summary  # no public call without dashboard

def objects_in_store():
    line = memory_summary(stats_only=True).split("Plasma memory usage")[1]
    return int(line.split(",")[1].split()[0])

def store_down_to(count, within_s=20):
    deadline = time.monotonic() + within_s
    while objects_in_store() > count and time.monotonic() < deadline:
        time.sleep(0.1)
    return objects_in_store() <= count
"""


def test_an_unchanged_global_is_sent_once_and_a_change_in_place_is_seen(run_script):
    """A 200 MB global: the first call sends it, later calls (using it or not) refer to what
    the cluster holds; a change in place is sent again, and fn sees it."""
    out = assert_ok(run_script("""
import numpy as np, gpar

BIG = np.random.default_rng(0).normal(size=25_000_000)  # 200 MB
def element(i):
    return float(BIG[i])
sent = []
for call in range(3):
    assert gpar.apply(range(4), element, progress=False) == BIG[:4].tolist()
    sent.append(gpar.apply(range(4), abs, progress=False).report.environment_bytes_sent)
BIG[2] = 7.0
results = gpar.apply(range(4), element, progress=False)
print(results[2], *sent, results.report.environment_bytes_sent)
"""))
    seven, *sent, changed = out.split()
    assert seven == "7.0" and all(int(each) < 100_000 for each in sent)
    assert int(changed) >= 200_000_000


def test_the_cache_bound_evicts_and_the_call_still_runs(run_script):
    """Past GPAR_ENV_CACHE_BYTES the least recently used buffers go; a call that needs them
    again sends them again."""
    out = assert_ok(run_script("""
import os
os.environ["GPAR_ENV_CACHE_BYTES"] = str(50 * 2**20)
import numpy as np, gpar
from gpar import envcache

def first(i):
    return float(globals()[NAME][i])
NAME, A = "A", np.full(5_000_000, 1.0)  # 40 MB
sent = [gpar.apply(range(2), first, progress=False).report.environment_bytes_sent]
del A
NAME, B = "B", np.full(5_000_000, 2.0)  # the cache cannot hold both: A goes
sent.append(gpar.apply(range(2), first, progress=False).report.environment_bytes_sent)
del B
NAME, A = "A", np.full(5_000_000, 1.0)  # A's content again: sent again
results = gpar.apply(range(2), first, progress=False)
sent.append(results.report.environment_bytes_sent)
held = [cache.status() for cache in envcache._caches.values()]
print(results, [each >= 40_000_000 for each in sent], held[0]["env_cache_buffers"],
      held[0]["env_cache_bytes"])
"""))
    assert out.strip() == "[1.0, 1.0] [True, True, True] 1 40000000"  # A alone, in its bound


def test_the_object_store_stays_flat_over_many_calls_with_a_class_and_a_large_global(run_script):
    """A __main__ class is rebuilt by each call into the class object an earlier call made
    (cloudpickle finds it again): it must not keep each call's globals alive."""
    out = assert_ok(run_script(OBJECT_STORE + """
import numpy as np, gpar

class Scaler:
    def __init__(self, k):
        self.k = k
    def scale(self, x):
        return self.k * x

before = objects_in_store()
assert gpar.apply(range(4), lambda x: Scaler(2).scale(x), progress=False) == [0, 2, 4, 6]
BIG = np.ones(4 * 2**20)  # 32 MiB
def reads_big(i):
    return Scaler(1).scale(float(BIG[i]))
for call in range(5):
    assert gpar.apply(range(4), reads_big, progress=False) == [1.0] * 4
print(store_down_to(before + 1))  # BIG, held for the next call
"""))
    assert out.strip() == "True"


def test_a_module_from_a_directory_the_script_put_on_sys_path_reaches_the_workers(run_script):
    """A script that extends sys.path at run time and imports its helpers from there: the
    workers' sys.path lacks that directory, so those modules ship, used by fn or not."""
    out = assert_ok(run_script("""
        import os, sys, gpar
        os.makedirs("lib", exist_ok=True)
        with open("lib/unused_helper.py", "w") as f:
            f.write("VALUE = 1\\n")
        with open("lib/used_helper.py", "w") as f:
            f.write("def double(x):\\n    return 2 * x\\n")
        sys.path.insert(0, os.path.abspath("lib"))
        import unused_helper, used_helper

        def fn(x):
            return used_helper.double(x)

        print(gpar.apply(range(3), fn, progress=False))
    """))
    assert out.strip() == "[0, 2, 4]"
