"""The calling environment by content: calls from a script on the warm local cluster while it
holds a 200 MB global, and after 80 MB of results were kept in a global, against the same
call with nothing large; joblib beside it, given the same array as an argument (its
memmapping of large arguments is how joblib users share one).

One script, medians of rounds interleaving the calls; the local cluster is one of a private
state directory, stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

SCRIPT = """
import json, statistics, time
import numpy as np
from joblib import Parallel, delayed
import gpar

ROUNDS = 7
def trivial(x):
    return x
def reads_big(x):
    return float(BIG[x])
def lookup(array, x):
    return float(array[x])
def seconds(run):
    started = time.perf_counter()
    run()
    return time.perf_counter() - started
def call(fn):
    return lambda: gpar.apply(range(100), fn, progress=False)

call(trivial)()
figures = {"nothing large": [], "200 MB global, used": [], "200 MB global, not used": [],
           "joblib, 200 MB argument": [], "80 MB of results kept": []}
first_sent = []
for round in range(ROUNDS):
    figures["nothing large"].append(seconds(call(trivial)))
    BIG = np.random.default_rng(round).normal(size=25_000_000)  # new content each round
    started = time.perf_counter()
    first_sent.append((gpar.apply(range(100), reads_big, progress=False)
                       .report.environment_bytes_sent, time.perf_counter() - started))
    figures["200 MB global, used"].append(seconds(call(reads_big)))
    figures["200 MB global, not used"].append(seconds(call(trivial)))
    figures["joblib, 200 MB argument"].append(seconds(
        lambda: Parallel(n_jobs=2)(delayed(lookup)(BIG, x) for x in range(100))))
    del BIG
    kept = gpar.apply(range(1000), lambda x: np.ones(10_000), progress=False)
    kept = list(kept)  # 80 MB, in a global of the script
    gpar.apply(range(100), trivial, progress=False)  # the call that sends them
    figures["80 MB of results kept"].append(seconds(call(trivial)))
    del kept
print(json.dumps({"medians": {name: statistics.median(values)
                              for name, values in figures.items()},
                  "first": statistics.median(s for _, s in first_sent),
                  "first_sent": statistics.median(b for b, _ in first_sent)}))
"""


def main() -> None:
    state_dir = tempfile.mkdtemp(prefix="gpar-bench-state-")
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "GPAR_CLUSTER")}
    env.update(GPAR_STATE_DIR=state_dir, RAY_USAGE_STATS_ENABLED="0")
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        subprocess.run([sys.executable, "-m", "gpar.cli", "cluster", "stop"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
    figures = json.loads(out.strip().splitlines()[-1])
    medians = figures["medians"]
    base = medians["nothing large"]
    lines = [
        "## The calling environment by content (`bench/bench_environment.py`)",
        "",
        "100 trivial elements from a script on the warm local cluster (2 CPUs), medians of 7 "
        "rounds interleaving the calls; each round makes a new 200 MB global, so the first "
        "call of a round sends it.",
        "",
        "| call | seconds | × the call with nothing large |",
        "|---|---|---|",
    ]
    for name, seconds in medians.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")
    lines += [
        "",
        f"The first call after the global was made: {figures['first']:.3f} s, "
        f"{figures['first_sent'] / 1e6:.0f} MB sent (hashing 200 MB with xxh3: ~7 ms of it).",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
