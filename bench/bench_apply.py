"""gpar.apply against multiprocessing.Pool.map, joblib and plain Ray (one task per item).

(a) trivial items, (b) CPU-bound items of ~50 ms, (c) a one-element call on a warm cluster,
(d) tasks reading a 200 MB global, against the same job written by hand with ray.put,
(e) (b) again beside other busy processes, as on a shared machine, and the first call of a
fresh process (embedded Ray start included).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import ray
from joblib import Parallel, delayed
from timing import timed

import gpar
from gpar import cluster

CORES = 2
TRIVIAL_ITEMS = 100_000
RAY_PER_ITEM_ITEMS = 5_000  # one Ray task per item is too slow for 100,000: per-item cost scales
CPU_TASKS = 200
BIG_TASKS = 500
NICED_TASKS = 20  # (e) with Ray's default worker niceness: each item is starved, so fewer
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPEATS = 5  # medians: this machine is shared and noisy


def trivial(x):
    return x + 1


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def calibrate_spin(target_s=0.05):
    n = 100_000
    while True:
        elapsed = timed(lambda n=n: spin(n), repeats=1)
        if elapsed > 0.01:
            return int(n * target_s / elapsed)
        n *= 4


@ray.remote(max_retries=0)
def ray_trivial(x):
    return x + 1


@ray.remote(max_retries=0)
def ray_spin(n):
    return spin(n)


def peers(items, fn, ray_fn, pool, ray_items=None, repeats=REPEATS):
    """Seconds per item for each way of running fn over items.

    Rounds interleave the methods, so a slow spell of this shared machine hits all of them.
    """
    ray_items = items if ray_items is None else ray_items
    methods = {
        "serial": lambda: [fn(x) for x in items],
        "gpar.apply": lambda: gpar.apply(items, fn, progress=False),
        "multiprocessing.Pool(2).map": lambda: pool.map(fn, items),
        "joblib (loky, 2 jobs)": lambda: Parallel(n_jobs=CORES)(delayed(fn)(x) for x in items),
        "Ray, one task per item": lambda: ray.get([ray_fn.remote(x) for x in ray_items]),
    }
    counts = {name: len(ray_items if name.startswith("Ray") else items) for name in methods}
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            times[name].append(timed(run, repeats=1))
    return {name: statistics.median(times[name]) / counts[name] for name in methods}


def table(title, per_item):
    serial = per_item["serial"]
    gpar_s = per_item["gpar.apply"]
    lines = [f"### {title}", "", "| method | µs per item | speedup vs serial | gpar is N× faster |",
             "|---|---|---|---|"]
    for name, seconds in per_item.items():
        ratio = "—" if name == "gpar.apply" else f"{seconds / gpar_s:.2f}"
        lines.append(f"| {name} | {seconds * 1e6:,.1f} | {serial / seconds:.2f} | {ratio} |")
    return "\n".join(lines)


def private_rss_mb():
    """The driver's own memory (RssAnon): not the object store pages it shares with workers."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1e3


big = None  # the 200 MB global of (d), set in main()


def read_big(i):
    return float(big[i % big.shape[0]].sum())


@ray.remote(max_retries=0)
def ray_read_big(array, i):
    return float(array[i % array.shape[0]].sum())


def big_global():
    global big
    big = np.random.default_rng(0).normal(size=(25_000, 1_000))  # 200 MB
    expected = [read_big(i) for i in range(BIG_TASKS)]
    assert gpar.apply(range(BIG_TASKS), read_big, progress=False) == expected
    gpar_s = timed(lambda: gpar.apply(range(BIG_TASKS), read_big, progress=False), REPEATS)

    def by_hand():
        ref = ray.put(big)
        return ray.get([ray_read_big.remote(ref, i) for i in range(BIG_TASKS)])

    assert by_hand() == expected
    hand_s = timed(by_hand, REPEATS)
    rss = {}
    for tasks in (BIG_TASKS, 4 * BIG_TASKS):
        before = private_rss_mb()
        gpar.apply(range(tasks), read_big, progress=False)
        rss[tasks] = private_rss_mb() - before
    return "\n".join([
        f"### (d) {BIG_TASKS} tasks reading a 200 MB global",
        "",
        "| method | seconds | ratio to hand-written |",
        "|---|---|---|",
        f"| gpar.apply (global captured with the environment) | {gpar_s:.3f} | "
        f"{gpar_s / hand_s:.2f} |",
        f"| hand-written: ray.put once + one task per item with the ObjectRef | {hand_s:.3f} | "
        "1.00 |",
        "",
        f"Driver private memory (RssAnon) growth over one more call: {rss[BIG_TASKS]:+.0f} MB "
        f"with {BIG_TASKS} tasks, {rss[4 * BIG_TASKS]:+.0f} MB with {4 * BIG_TASKS} tasks.",
    ])


def policy_share(items):
    """Share of a gpar.apply call's wall time spent inside the scheduling policy."""
    from gpar.policy import Policy

    spent = [0.0]
    originals = {name: getattr(Policy, name)
                 for name in ("launches", "tick", "on_reported", "on_running", "next_check")}

    def timed_method(method):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return wrapper

    for name, method in originals.items():
        setattr(Policy, name, timed_method(method))
    try:
        total = timed(lambda: gpar.apply(items, trivial, progress=False), repeats=1)
    finally:
        for name, method in originals.items():
            setattr(Policy, name, method)
    return spent[0] / total


def spin_until(stop):
    while not stop.is_set():
        pass


@contextlib.contextmanager
def other_work(processes):
    """``processes`` processes spinning at this process's priority: a shared machine's others."""
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin_until, args=(stop,))
                for _ in range(processes)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()


NICED = """
import sys, time
from bench_apply import spin
import gpar
from gpar import cluster
cluster.connect(_system_config={"worker_niceness": 15})  # Ray's default
gpar.apply([1], spin, progress=False)
started = time.perf_counter()
gpar.apply([int(sys.argv[1])] * int(sys.argv[2]), spin, progress=False)
print(time.perf_counter() - started)
"""


def beside_other_work(n, pool):
    """(b) while as many other processes as cores spin; and gpar's workers at Ray's default
    niceness, in a fresh process with its own embedded cluster."""
    with other_work(CORES):
        # three rounds, not REPEATS: a round takes ~70 s beside the busy processes
        per_item = peers([n] * CPU_TASKS, spin, ray_spin, pool, repeats=3)
        niced = subprocess.run([sys.executable, "-c", NICED, str(n), str(NICED_TASKS)],
                               capture_output=True, text=True, check=True, cwd=BENCH_DIR)
    niced_s = float(niced.stdout.split()[-1]) / NICED_TASKS
    title = f"(e) {CPU_TASKS} CPU-bound items of ~50 ms beside {CORES} busy processes"
    return (table(title, per_item)
            + "\n\nWith Ray's default worker niceness (15) instead of the caller's, beside the "
            f"same processes: {niced_s * 1e6:,.1f} µs per item ({NICED_TASKS} items), "
            f"{niced_s / per_item['gpar.apply']:.1f}× gpar's time above.")


COLD = """
import time
started = time.perf_counter()
import gpar
gpar.apply([1], abs, progress=False, address="local")
first = time.perf_counter() - started
started = time.perf_counter()
gpar.apply([1], abs, progress=False, address="local")
print(first, time.perf_counter() - started)
"""


def cold_call():
    out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


def main():
    cold_s, second_s = cold_call()
    cluster.connect("local")  # a cluster of this process, which the Ray peers share
    gpar.apply([0], trivial, progress=False)  # warm the workers
    gpar.apply(range(1000), trivial, progress=False)
    with multiprocessing.get_context("fork").Pool(CORES) as pool:
        trivial_items = list(range(TRIVIAL_ITEMS))
        a = peers(trivial_items, trivial, ray_trivial, pool,
                  ray_items=trivial_items[:RAY_PER_ITEM_ITEMS])
        n = calibrate_spin()
        b = peers([n] * CPU_TASKS, spin, ray_spin, pool, repeats=3)
        e = beside_other_work(n, pool)
    warm = timed(lambda: gpar.apply([1], trivial, progress=False), repeats=20)
    share = statistics.median(policy_share(list(range(TRIVIAL_ITEMS))) for _ in range(REPEATS))
    sections = [
        "## gpar.apply and its peers (`bench/bench_apply.py`)",
        table(f"(a) {TRIVIAL_ITEMS:,} trivial items (x + 1), warm cluster", a)
        + f"\n\nOne Ray task per item was timed on {RAY_PER_ITEM_ITEMS:,} items. The scheduling "
        f"policy's own share of gpar's time here: {share:.1%} (median of {REPEATS}).",
        table(f"(b) {CPU_TASKS} CPU-bound items of ~50 ms", b),
        f"### (c) a one-element call on a warm cluster\n\n{warm * 1e3:.1f} ms end to end "
        "(median of 20).",
        big_global(),
        e,
        f"### Cold first call\n\nFirst `gpar.apply([1], abs, address=\"local\")` in a fresh "
        f"process, the start of a Ray cluster of its own included: {cold_s:.2f} s; the second "
        f"call: {second_s * 1e3:.1f} ms.",
    ]
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
