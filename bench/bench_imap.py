"""gpar.imap against joblib's generator (return_as="generator") and multiprocessing's imap.

(a) time to the first result of 10,000 elements of 10 ms each, (b) the driver's peak memory
streaming 10,000 results of 100 KB each into a running sum (gpar.apply's too), (c) imap's
throughput on 100,000 trivial items against apply's. Warm cluster of this process; medians
of rounds that interleave the methods.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

import gpar
from gpar import cluster

CORES = 2
ROUNDS = 3
FIRST_ITEMS, FIRST_S = 10_000, 0.01
BIG_ITEMS, BIG_FLOATS = 10_000, 12_500  # 100 KB each
TRIVIAL_ITEMS = 100_000


def sleepy(x):
    time.sleep(FIRST_S)
    return x


def hundred_kb(x):
    return np.full(BIG_FLOATS, float(x))


def trivial(x):
    return x + 1


def first_result_s(start: Callable[[], Iterator]) -> float:
    """Seconds from the call to its first value; the rest is stopped."""
    started = time.perf_counter()
    stream = start()
    next(stream)
    elapsed = time.perf_counter() - started
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    return elapsed


def pool_first_result_s() -> float:
    with multiprocessing.get_context("fork").Pool(CORES) as pool:  # its workers ready first
        pool.map(trivial, range(CORES))
        elapsed = first_result_s(lambda: pool.imap(sleepy, range(FIRST_ITEMS)))
        pool.terminate()  # imap cannot be stopped otherwise
    return elapsed


def peak_rss_mb(run: Callable[[], object]) -> float:
    """The process's peak resident memory during ``run``, above what it held before (MB):
    the kernel's high-water mark, reset first (Linux: /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    run()
    return (_status_kb("VmHWM") - before) / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def running_sum(values) -> float:
    return sum(float(value[0]) for value in values)


def joblib_stream(fn, items):
    return Parallel(n_jobs=CORES, return_as="generator")(delayed(fn)(x) for x in items)


def rounds(methods: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The median of ROUNDS values of each method, the methods interleaved in each round."""
    values: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(ROUNDS):
        for name, method in methods.items():
            values[name].append(method())
    return {name: statistics.median(each) for name, each in values.items()}


def timed_s(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def table(title: str, unit: str, figures: dict[str, float], reference: str) -> str:
    rows = [f"### {title}", "", f"| method | {unit} | ratio to {reference} |", "|---|---|---|"]
    for name, value in figures.items():
        rows.append(f"| {name} | {value:.3f} | {value / figures[reference]:.2f} |")
    return "\n".join(rows)


def main() -> None:
    cluster.connect("local")
    gpar.apply(range(1000), trivial, progress=False)  # warm the workers
    with multiprocessing.get_context("fork").Pool(CORES) as pool:
        pool.map(trivial, range(CORES))
        first = rounds({
            "gpar.imap": lambda: first_result_s(
                lambda: gpar.imap(range(FIRST_ITEMS), sleepy, progress=False)),
            "joblib generator": lambda: first_result_s(
                lambda: joblib_stream(sleepy, range(FIRST_ITEMS))),
            "multiprocessing imap": pool_first_result_s,
        })
        memory = rounds({
            "gpar.imap": lambda: peak_rss_mb(lambda: running_sum(
                gpar.imap(range(BIG_ITEMS), hundred_kb, progress=False))),
            "joblib generator": lambda: peak_rss_mb(
                lambda: running_sum(joblib_stream(hundred_kb, range(BIG_ITEMS)))),
            "multiprocessing imap": lambda: peak_rss_mb(
                lambda: running_sum(pool.imap(hundred_kb, range(BIG_ITEMS), chunksize=8))),
            "gpar.apply": lambda: peak_rss_mb(lambda: running_sum(
                gpar.apply(range(BIG_ITEMS), hundred_kb, progress=False))),
        })
        throughput = rounds({
            "gpar.apply": lambda: timed_s(
                lambda: gpar.apply(range(TRIVIAL_ITEMS), trivial, progress=False)),
            "gpar.imap": lambda: timed_s(
                lambda: sum(gpar.imap(range(TRIVIAL_ITEMS), trivial, progress=False))),
            "gpar.imap, a generator": lambda: timed_s(lambda: sum(gpar.imap(
                (x for x in range(TRIVIAL_ITEMS)), trivial, progress=False))),
            "joblib generator": lambda: timed_s(
                lambda: sum(joblib_stream(trivial, range(TRIVIAL_ITEMS)))),
            "multiprocessing imap": lambda: timed_s(
                lambda: sum(pool.imap(trivial, range(TRIVIAL_ITEMS), chunksize=1000))),
        })
    print("\n\n".join([
        "## Results as they finish: gpar.imap and its peers (`bench/bench_imap.py`)",
        table(f"(a) time to the first result, {FIRST_ITEMS:,} elements of "
              f"{FIRST_S * 1e3:.0f} ms", "seconds", first, "joblib generator"),
        table(f"(b) the driver's peak memory streaming {BIG_ITEMS:,} results of 100 KB into a "
              "running sum", "MB above the start", memory, "joblib generator"),
        table(f"(c) {TRIVIAL_ITEMS:,} trivial items (x + 1), summed as they come", "seconds",
              throughput, "gpar.apply"),
        f"Medians of {ROUNDS} rounds, the methods interleaved in each; a warm cluster of this "
        "process (2 CPUs); multiprocessing's pool started before timing.",
    ]))


if __name__ == "__main__":
    main()
