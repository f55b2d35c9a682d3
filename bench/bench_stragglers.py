"""Stragglers: makespan on a simulated cluster with one slow node, with and without backups.

A ray.cluster_utils.Cluster of 5 one-CPU nodes on this machine; the work is sleeps, so the
nodes do not compete for the 2 real cores. On the slow node every element takes SLOWDOWN times
longer. Compared in one run: no slow node; a slow node with backups; a slow node without.
"""

from __future__ import annotations

import statistics
import time

import ray
from ray.cluster_utils import Cluster

import gpar

NODES = 5
ELEMENTS = 40
ELEMENT_S = 1.0  # long against Ray's per-task cost on 5 raylets sharing 2 cores
SLOWDOWN = 10
ROUNDS = 3


def element(i, slow_node):
    on_slow_node = ray.get_runtime_context().get_node_id() == slow_node
    time.sleep(ELEMENT_S * (SLOWDOWN if on_slow_node else 1))
    return i


def makespan(address, slow_node, backups):
    started = time.perf_counter()
    results = gpar.apply(range(ELEMENTS), element, slow_node, address=address,
                         backups=backups, progress=False)
    assert results == list(range(ELEMENTS))
    return time.perf_counter() - started, results.report.backups


def main():
    head = dict(num_cpus=0, include_dashboard=False)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(NODES)]
    cluster.wait_for_nodes()
    try:
        makespan(cluster.address, "none", True)  # warm every node's workers
        slow = nodes[0].node_id
        runs = {"baseline": [], "backups": [], "without": [], "launched": []}
        for _ in range(ROUNDS):  # interleaved, so a slow spell of the machine hits all three
            runs["baseline"].append(makespan(cluster.address, "none", True)[0])
            seconds, launched = makespan(cluster.address, slow, True)
            runs["backups"].append(seconds)
            runs["launched"].append(launched)
            runs["without"].append(makespan(cluster.address, slow, False)[0])
        baseline, with_backups, without, backups = (
            statistics.median(runs[key]) for key in ("baseline", "backups", "without", "launched"))
    finally:
        gpar.shutdown()
        cluster.shutdown()
    print("\n".join([
        "## Stragglers (`bench/bench_stragglers.py`)",
        "",
        f"{ELEMENTS} elements of {ELEMENT_S} s on {NODES} one-CPU nodes (simulated with "
        f"`ray.cluster_utils.Cluster`); on the slow node an element takes {SLOWDOWN}× longer. "
        f"Medians of {ROUNDS} interleaved rounds.",
        "",
        "| job | makespan (s) | ratio to no slow node |",
        "|---|---|---|",
        f"| no slow node | {baseline:.2f} | 1.00 |",
        f"| one slow node, backups on ({backups:.0f} launched) | {with_backups:.2f} | "
        f"{with_backups / baseline:.2f} |",
        f"| one slow node, backups off | {without:.2f} | {without / baseline:.2f} |",
    ]))


if __name__ == "__main__":
    main()
