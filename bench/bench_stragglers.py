"""Stragglers: makespan on a simulated cluster, with and without backups.

A ray.cluster_utils.Cluster of 5 one-CPU nodes on this machine; the work is sleeps, so the
nodes do not compete for the 2 real cores. Two kinds of straggler, each against the same job
without it, in one run: a slow node (every element on it takes SLOWDOWN times longer), and
straggling attempts (the paper's long tail: the first attempt of a few elements takes SLOWDOWN
times longer, wherever it runs).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import ray
from ray.cluster_utils import Cluster

import gpar

NODES = 5
ELEMENTS = 40
ELEMENT_S = 1.0  # long against Ray's per-task cost on 5 raylets sharing 2 cores
SLOWDOWN = 10
ROUNDS = 3


STRAGGLING = (5, 17, 29, 38)  # elements whose first attempt straggles


def element(i, slow_node, straggle_dir):
    slow = ray.get_runtime_context().get_node_id() == slow_node
    if straggle_dir and i in STRAGGLING:
        try:  # the first attempt of this element claims the marker and straggles
            os.close(os.open(os.path.join(straggle_dir, str(i)), os.O_CREAT | os.O_EXCL))
            slow = True
        except FileExistsError:
            pass
    time.sleep(ELEMENT_S * (SLOWDOWN if slow else 1))
    return i


def makespan(address, backups, slow_node="none", straggle=False):
    straggle_dir = tempfile.mkdtemp() if straggle else ""
    started = time.perf_counter()
    results = gpar.apply(range(ELEMENTS), element, slow_node, straggle_dir, address=address,
                         backups=backups, progress=False)
    assert results == list(range(ELEMENTS))
    return time.perf_counter() - started, results.report.backups


def main():
    head = dict(num_cpus=0, include_dashboard=False)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(NODES)]
    cluster.wait_for_nodes()
    try:
        makespan(cluster.address, True)  # warm every node's workers
        slow = nodes[0].node_id
        jobs = {
            "no straggler": dict(backups=True),
            "one slow node, backups on": dict(backups=True, slow_node=slow),
            "one slow node, backups off": dict(backups=False, slow_node=slow),
            f"{len(STRAGGLING)} straggling attempts, backups on": dict(backups=True,
                                                                       straggle=True),
            f"{len(STRAGGLING)} straggling attempts, backups off": dict(backups=False,
                                                                        straggle=True),
        }
        runs = {name: [] for name in jobs}
        launched = {name: [] for name in jobs}
        for _ in range(ROUNDS):  # interleaved, so a slow spell of the machine hits all
            for name, options in jobs.items():
                seconds, backups = makespan(cluster.address, **options)
                runs[name].append(seconds)
                launched[name].append(backups)
    finally:
        gpar.shutdown()
        cluster.shutdown()
    baseline = statistics.median(runs["no straggler"])
    print("\n".join([
        "## Stragglers (`bench/bench_stragglers.py`)",
        "",
        f"{ELEMENTS} elements of {ELEMENT_S} s on {NODES} one-CPU nodes (simulated with "
        f"`ray.cluster_utils.Cluster`); a straggler takes {SLOWDOWN}× longer: every element on "
        "the slow node, or the first attempt of a few elements. Medians of "
        f"{ROUNDS} interleaved rounds.",
        "",
        "| job | makespan (s) | ratio to no straggler | backups launched |",
        "|---|---|---|---|",
        *(f"| {name} | {statistics.median(runs[name]):.2f} | "
          f"{statistics.median(runs[name]) / baseline:.2f} | "
          f"{statistics.median(launched[name]):.0f} |" for name in jobs),
    ]))


if __name__ == "__main__":
    main()
