"""Whole scripts, as an analyst runs them again and again: gpar on the local cluster against
joblib, multiprocessing and plain Ray, each a fresh interpreter applying a trivial fn to 4
elements and exiting.

(f) the whole process's wall time, rounds interleaving the methods (medians); gpar's first
script (no local cluster running: its start included) apart; a one-element call and 100,000
trivial items inside a script on the warm local cluster; the idle cluster's memory and CPU.
The local cluster is one of a private state directory, stopped at the end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = 5
ELEMENTS = 4
TRIVIAL_ITEMS = 100_000
INSIDE_ROUNDS = 7  # the trivial items' rounds inside one script, gpar and the pool interleaved
IDLE_WINDOW_S = 10.0

SCRIPTS = {
    "gpar, local cluster running": """
import gpar
print(list(gpar.apply(range(4), abs, progress=False)))
""",
    "joblib (loky, 2 jobs)": """
from joblib import Parallel, delayed
print(Parallel(n_jobs=2)(delayed(abs)(x) for x in range(4)))
""",
    "multiprocessing.Pool(2).map": """
import multiprocessing
if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print(pool.map(abs, range(4)))
""",
    "plain Ray (ray.init, 4 tasks)": """
import ray
ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
f = ray.remote(lambda x: abs(x))
print(ray.get([f.remote(x) for x in range(4)]))
""",
}

INSIDE = """
import multiprocessing, statistics, time, gpar
if __name__ == "__main__":
    gpar.apply([1], abs, progress=False)
    one = []
    for _ in range(20):
        started = time.perf_counter()
        gpar.apply([1], abs, progress=False)
        one.append(time.perf_counter() - started)
    items = list(range(ITEMS))
    many, pooled = [], []
    with multiprocessing.Pool(2) as pool:
        pool.map(abs, range(8))
        for _ in range(INSIDE_ROUNDS):
            started = time.perf_counter()
            assert gpar.apply(items, abs, progress=False) == items
            many.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert pool.map(abs, items) == items
            pooled.append(time.perf_counter() - started)
    print(statistics.median(one), statistics.median(many) / len(items),
          statistics.median(pooled) / len(items))
""".replace("ITEMS", str(TRIVIAL_ITEMS)).replace("INSIDE_ROUNDS", str(INSIDE_ROUNDS))


def run(source: str, env: dict[str, str]) -> float:
    """Wall seconds of one fresh interpreter running ``source``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", source], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stop(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "gpar.cli", "cluster", "stop"], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and the processes below it."""
    from gpar.server import process_tree

    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[11]) + int(fields[12]) for fields in process_tree(pid).values()) / tick


def main() -> None:
    from gpar import client

    state_dir = tempfile.mkdtemp(prefix="gpar-bench-state-")
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "GPAR_CLUSTER")}
    env.update(GPAR_STATE_DIR=state_dir, RAY_USAGE_STATS_ENABLED="0")
    os.environ["GPAR_STATE_DIR"] = state_dir
    times: dict[str, list[float]] = {name: [] for name in ["gpar, first script", *SCRIPTS]}
    try:
        for _ in range(ROUNDS):
            stop(env)
            times["gpar, first script"].append(run(SCRIPTS["gpar, local cluster running"], env))
            for name, source in SCRIPTS.items():
                times[name].append(run(source, env))
        inside = subprocess.run([sys.executable, "-c", INSIDE], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        one_s, per_item_s, pool_per_item_s = map(float, inside)
        pid = client.read_state().pid
        time.sleep(2.0)  # the last script's tasks wind down
        cpu_before = tree_cpu_s(pid)
        time.sleep(IDLE_WINDOW_S)
        idle_cpu = (tree_cpu_s(pid) - cpu_before) / IDLE_WINDOW_S
        memory = client.status()["memory_bytes"]
    finally:
        stop(env)
    medians = {name: statistics.median(values) for name, values in times.items()}
    joblib_s = medians["joblib (loky, 2 jobs)"]
    lines = [
        "## Scripts, start to exit (`bench/bench_scripts.py`)",
        "",
        f"### (f) a script applying a trivial fn to {ELEMENTS} elements, whole process",
        "",
        f"Medians of {ROUNDS} interleaved rounds; each round first stops the local cluster, so "
        "gpar's first script starts it.",
        "",
        "| method | seconds | × joblib's whole run |",
        "|---|---|---|",
    ]
    for name, seconds in medians.items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / joblib_s:.2f} |")
    lines += [
        "",
        f"Inside a script on the warm local cluster: a one-element call {one_s * 1e3:.1f} ms "
        f"(median of 20); {TRIVIAL_ITEMS:,} trivial items {per_item_s * 1e6:.2f} µs per item, "
        f"multiprocessing.Pool(2).map {pool_per_item_s * 1e6:.2f} µs in the same script "
        f"({per_item_s / pool_per_item_s:.1f} ×; medians of {INSIDE_ROUNDS} interleaved rounds).",
        f"The idle local cluster (server and Ray's processes): {memory / 2**20:.0f} MiB "
        f"resident, {idle_cpu:.1%} of one core over {IDLE_WINDOW_S:.0f} s.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
