"""An ordinary analysis script: a big global, a local helper module, one gpar.apply call.

Run it as ``python analysis.py``; with RAY_ADDRESS set it runs unchanged on that cluster.
"""

import time

import numpy as np
from helpers import score

import gpar

SCALE = 3.0
table = np.random.default_rng(0).normal(size=(2000, 2000))  # 32 MB, shipped to workers once


def simulate(i, n=10):
    return score(table[i % 2000] * SCALE, n)


if __name__ == "__main__":
    started = time.perf_counter()
    results = gpar.apply(range(10_000), simulate, n=20)
    elapsed = time.perf_counter() - started
    assert results == [simulate(i, n=20) for i in range(10_000)]
    report = results.report
    print(f"{len(results)} results in input order in {elapsed:.1f} s "
          f"({report.batches} batches, environment {report.environment_bytes / 1e6:.0f} MB)")
    print(f"first three: {results[:3]}")
