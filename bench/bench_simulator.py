"""The scheduling policy at the paper's scale, on the cluster simulator (gpar/simulator.py).

The real Policy and driver loop, with simulated workers and clock: 1,000 one-slot nodes and the
paper's 52,000-element bootstrap; element times near a 1 s median (lognormal, sigma 0.25), and
a long tail as in the paper's Figure 8: STRAGGLER_SHARE of the attempts run SLOWDOWN times
longer, wherever they run. Makespans are simulated seconds; each job against the same job
without stragglers. Then the driver's own CPU time per element, at 52,000 and 1,000,000
elements: of the policy alone, and of the whole driver (loop and policy), each replayed from a
recording of the job so that no timer or simulator runs inside it (driver_cpu).
"""

from __future__ import annotations

import gc
import random
import statistics
import time

from gpar import policy
from gpar.loop import JobLoop
from gpar.report import JobReport
from gpar.results import TaskFailure
from gpar.simulator import SimBackend, SimCluster, simulate
from gpar.split import BatchSizer

NODES = 1000
ELEMENTS = 52_000
MEDIAN_S = 1.0
STRAGGLER_SHARE = 0.02
SLOWDOWN = 10.0
LOST_NODES = {node: 20.0 for node in range(0, NODES, 100)}  # 10 nodes lost 20 s in
CPU_ELEMENTS = 1_000_000
REPLAYS = 3  # of each recorded job, for the CPU figures: their median


def run_times(seed, tail_share):
    def run_time(element, run):
        draw = random.Random(seed * 1_000_003 + element * 101 + run)
        seconds = MEDIAN_S * draw.lognormvariate(0.0, 0.25)
        return seconds * SLOWDOWN if draw.random() < tail_share else seconds

    return run_time


def makespans():
    jobs = {
        "no stragglers": dict(tail_share=0.0),
        f"{STRAGGLER_SHARE:.0%} stragglers at {SLOWDOWN:.0f}x, backups on": dict(),
        f"{STRAGGLER_SHARE:.0%} stragglers, backups off": dict(backups=False),
        f"{STRAGGLER_SHARE:.0%} stragglers, quorum 0.99": dict(quorum=0.99),
        f"{STRAGGLER_SHARE:.0%} stragglers, {len(LOST_NODES)} nodes lost at 20 s":
            dict(lost=True),
        f"{STRAGGLER_SHARE:.0%} stragglers, {len(LOST_NODES)} nodes lost, backups off":
            dict(lost=True, backups=False),
    }
    rows = []
    for name, options in jobs.items():
        tail = options.pop("tail_share", STRAGGLER_SHARE)
        lost = LOST_NODES if options.pop("lost", False) else {}
        cluster = SimCluster(nodes=NODES, lost_nodes=lost)
        sim = simulate(ELEMENTS, run_times(1, tail), cluster=cluster, **options)
        done = sum(not isinstance(value, TaskFailure) for value in sim.values)
        rows.append((name, sim.end_s, done, sim.report))
    baseline = rows[0][1]
    lines = [f"| {name} | {end:.1f} | {end / baseline:.2f} | {done:,} | {report.preemptions:,} "
             f"| {report.backups:,} | {report.failed_attempts:,} |"
             for name, end, done, report in rows]
    return "\n".join([
        "| job | makespan (simulated s) | ratio to no stragglers | elements done | "
        "preempted | backups | failed attempts |",
        "|---|---|---|---|---|---|---|",
        *lines,
    ])


class _Recorder:
    """Records each call of some methods of a class from outside them, with its arguments and
    result (a call from inside one, such as tick's to itself, is part of the outer call)."""

    def __init__(self, cls, names):
        self.calls = []
        self.depth = 0
        self.cls, self.originals = cls, {name: getattr(cls, name) for name in names}

    def __enter__(self):
        for name, method in self.originals.items():
            setattr(self.cls, name, self._wrap(method))
        return self

    def __exit__(self, *exc):
        for name, method in self.originals.items():
            setattr(self.cls, name, method)

    def _wrap(self, method):
        def recorded(instance, *args):
            self.depth += 1
            try:
                result = method(instance, *args)
            finally:
                self.depth -= 1
            if not self.depth:
                self.calls.append((method, args, result))
            return result
        return recorded


class _Replay:
    """A backend that gives the answers a recorded one gave, at next to no cost."""

    def __init__(self, answers):
        self._answers = iter(answers)

    def _answer(self, *args):
        return next(self._answers)

    now = submit = cancel = wait = alive_nodes = avoid_nodes = _answer


def _cpu(replay):
    """Median process time of REPLAYS calls of ``replay()``, and what the last one returned;
    what was recorded is kept out of the collector's way."""
    gc.collect()
    gc.freeze()
    try:
        times = []
        for _ in range(REPLAYS):
            started = time.process_time()
            result = replay()
            times.append(time.process_time() - started)
        return statistics.median(times), result
    finally:
        gc.unfreeze()


def _job(elements):
    return simulate(elements, run_times(2, STRAGGLER_SHARE), cluster=SimCluster(nodes=NODES))


def _recorded(elements, cls, names):
    """The calls of methods ``names`` of ``cls`` in the job."""
    with _Recorder(cls, names) as recorder:
        _job(elements)
    return recorder.calls


def _replay_calls(target, calls):
    for method, args, _ in calls:
        method(target, *args)
    return target


def _nothing(*args):
    pass


def _replay_nothing(calls):
    """The replay with every method doing nothing: what the calls cost by themselves."""
    for _, args, _ in calls:
        _nothing(None, *args)


def _policy_cpu(elements, new_policy, expected):
    """Seconds of the policy's replay, and of the same calls to methods doing nothing."""
    calls = _recorded(elements, policy.Policy, [
        "launches", "tick", "next_check", "take_stragglers", "stuck", "on_running",
        "on_handed_off", "on_reported", "on_lost"])
    seconds, replayed = _cpu(lambda: _replay_calls(new_policy(), calls))
    assert replayed.ledger.state == expected
    bare, _ = _cpu(lambda: _replay_nothing(calls))
    return seconds, bare


def _driver_cpu(elements, new_policy, expected):
    """Seconds of the driver's replay: the loop and the policy, given the simulator's answers."""
    answers = [result for _, _, result in _recorded(elements, SimBackend, [
        "now", "submit", "cancel", "wait", "alive_nodes", "avoid_nodes"])]
    seconds, values = _cpu(
        lambda: JobLoop(new_policy(), JobReport(elements), _Replay(answers)).run())
    assert values == expected
    return seconds


def driver_cpu(elements):
    """Per-element CPU (µs) of the policy, of calling its methods at all, of the whole driver,
    and of the simulation run.

    The job is run again, recorded: once the policy's calls, once the backend's answers.
    Replaying the calls on a new Policy times the policy alone; replaying the answers to a new
    JobLoop times the driver (loop and policy) without the simulator; nothing wrapped.
    """
    started = time.process_time()
    sim = _job(elements)
    total = time.process_time() - started
    rules, state, values = sim.policy.rules, sim.policy.ledger.state, sim.values
    del sim  # and its report, a row for each attempt: memory the recordings need

    def new_policy():
        return policy.Policy(elements, rules, BatchSizer(rules.max_workers))

    in_policy, in_calls = _policy_cpu(elements, new_policy, state)
    in_driver = _driver_cpu(elements, new_policy, values)
    per = 1e6 / elements
    return in_policy * per, in_calls * per, in_driver * per, total * per


def main():
    table = makespans()
    small = driver_cpu(ELEMENTS)
    large = driver_cpu(CPU_ELEMENTS)
    print("\n".join([
        "## Scheduling at the paper's scale (`bench/bench_simulator.py`)",
        "",
        f"The real policy and driver loop on the cluster simulator: {NODES:,} one-slot nodes, "
        f"{ELEMENTS:,} elements (the paper's bootstrap), element times near {MEDIAN_S:.0f} s "
        f"(lognormal, sigma 0.25); the stragglers are {STRAGGLER_SHARE:.0%} of the attempts, "
        f"{SLOWDOWN:.0f}x slower wherever they run (Figure 8's long tail). Target: with "
        "backups, within 1.2x of the job without stragglers.",
        "",
        table,
        "",
        "Driver CPU per element, with the stragglers. The job is recorded, then replayed with "
        "nothing wrapped: the policy's calls on a new Policy, and the simulator's answers to a "
        f"new JobLoop and Policy (medians of {REPLAYS} replays); the loop is the difference. "
        "\"Calls alone\": the policy's replay with methods that do nothing (included in the "
        "policy's figure). The whole simulation: the job run plainly.",
        "",
        "| elements | policy (µs) | of which calls alone (µs) | loop (µs) "
        "| driver: loop + policy (µs) | whole simulation (µs) |",
        "|---|---|---|---|---|---|",
        *(f"| {elements:,} | {policy_s:.1f} | {calls_s:.1f} | {driver_s - policy_s:.1f} "
          f"| {driver_s:.1f} | {total_s:.1f} |"
          for elements, (policy_s, calls_s, driver_s, total_s) in ((ELEMENTS, small),
                                                                   (CPU_ELEMENTS, large))),
        "",
        "Target: policy at most 20 µs per element at 1,000,000 elements and 1,000 slots, and "
        "no growth with the number of elements.",
        "",
        "`python bench/run.py simulator` writes this section: about 20 minutes, and some 6 GB "
        "of memory for the recordings at 1,000,000 elements.",
    ]))


if __name__ == "__main__":
    main()
