"""A cluster simulator: discrete events in simulated seconds, no Ray, no sleeping.

It is a backend of the real driver loop (loop.JobLoop), so a simulated job runs the very policy
and glue a Ray job runs; only the workers are simulated, and they follow worker.py's protocol:
one element after another, a progress message at most every FLUSH_S with what finished, the
elements behind one that ran ``handoff_after_s`` handed back at a flush, a final message at once.

    simulate(elements, run_time, cluster=SimCluster(...), faults={(element, run): action}, ...)

``run_time(element, run)`` gives seconds; ``run`` counts the times the element has started, as
the marker files of the tests' fault tables do. Actions: "exit" (the worker dies as the element
starts), ("exit", seconds) (it dies that long into the element), "raise" (fn raises after its
run time), "hang" (never ends), ("slow", factor). Nodes may be slow (a factor on every run time
there), be lost at a time, and start workers late. A worker that dies leaves its note (where it
was) for the driver to read; a node lost takes its workers' notes with it.
"""

from __future__ import annotations

import heapq
import math
import pickle
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpar.loop import JobLoop
from gpar.options import ErrorsMode
from gpar.policy import Policy, Rules, default_max_failures
from gpar.records import BatchLost, ElementError, InFn, Launch, Progress
from gpar.report import JobReport
from gpar.split import BatchSizer
from gpar.worker import FLUSH_S


class SimulationStalled(RuntimeError):
    """The simulated job ran past ``max_time_s`` (a hang with no deadline or timeout)."""


@dataclass(frozen=True)
class SimCluster:
    """Nodes of ``slots`` each; ``slow_nodes``: node -> run-time factor; ``lost_nodes``: node ->
    simulated time it is lost; ``worker_start_s``: a batch's delay before its first element."""

    nodes: int = 2
    slots: int = 1
    worker_start_s: float = 0.0
    slow_nodes: Mapping[int, float] = field(default_factory=dict)
    lost_nodes: Mapping[int, float] = field(default_factory=dict)


@dataclass
class Simulation:
    """What a simulated job returned, and what really ran: ``starts[element]`` holds the batch
    of each time the element entered fn; ``attempts[batch]``, its attempt number; ``blind``,
    the batches the driver killed or lost with their node, whose last elements it never
    heard of."""

    values: list[Any]
    report: JobReport
    policy: Policy
    end_s: float
    starts: dict[int, list[int]]
    attempts: dict[int, int]
    blind: set[int]


def simulate(elements: int, run_time: Callable[[int, int], float], *,
             cluster: SimCluster | None = None,
             faults: Mapping[tuple[int, int], Any] | None = None,
             max_workers: int | None = None, task_retries: int = 3,
             max_failures: int | None = None, deadline_s: float | None = None,
             task_timeout_s: float | None = None, quorum: float = 1.0, backups: bool = True,
             errors: ErrorsMode = "warn", max_time_s: float = 1e7) -> Simulation:
    """Run a job of ``elements`` on a simulated cluster; element i's value is i."""
    cluster = cluster or SimCluster()
    rules = Rules(
        max_workers=max_workers or cluster.nodes * cluster.slots,
        task_retries=task_retries,
        max_failures=default_max_failures(elements) if max_failures is None else max_failures,
        deadline_at=deadline_s, task_timeout_s=task_timeout_s, quorum=quorum,
        backups=backups, errors=errors)
    policy = Policy(elements, rules, BatchSizer(rules.max_workers))
    report = JobReport(elements, counts=policy.counts)
    backend = SimBackend(cluster, run_time, faults or {}, max_time_s)
    values = JobLoop(policy, report, backend).run()
    return Simulation(values, report, policy, backend.clock, backend.starts,
                      backend.attempts, backend.blind)


@dataclass
class _Running:
    """A simulated batch on a slot: where it is in its elements and what it has not told."""

    launch: Launch
    node: int
    end: int
    started: float = math.inf  # when its first element may start (the worker is up)
    position: int = 0
    element_started: float = 0.0
    reported: int = 0
    finished: array = field(default_factory=lambda: array("d"))
    errors: dict[int, ElementError] = field(default_factory=dict)
    flush_due: bool = False
    alive: bool = True


class SimBackend:
    """The simulated cluster as a loop.Backend: an event heap and a clock."""

    def __init__(self, cluster: SimCluster, run_time: Callable[[int, int], float],
                 faults: Mapping[tuple[int, int], Any], max_time_s: float):
        self.cluster, self.run_time, self.faults = cluster, run_time, faults
        self.max_time_s = max_time_s
        self.clock = 0.0
        self.free = [cluster.slots] * cluster.nodes
        self.alive = [True] * cluster.nodes
        self.avoided: set[int] = set()
        self.open = set(range(cluster.nodes))  # alive, not avoided, with a free slot
        self.waiting: deque[Launch] = deque()  # submitted, no slot yet (Ray's queue)
        self.batches: dict[int, _Running] = {}
        self.starts: dict[int, list[int]] = {}
        self.attempts: dict[int, int] = {}
        self.blind: set[int] = set()
        self.lost: dict[int, int | None] = {}  # batch -> its note, the news not yet given
        self.events: list[tuple[float, int, str, int, int]] = []
        self.sequence = 0
        for node, at in cluster.lost_nodes.items():
            self._at(at, "node_lost", node, 0)

    # ------------------------------------------------------------- loop.Backend

    def now(self) -> float:
        return self.clock

    def submit(self, launch: Launch) -> None:
        self.attempts[launch.batch] = launch.attempt
        self.waiting.append(launch)
        self._place()

    def cancel(self, batch: int) -> None:
        running = self.batches.pop(batch, None)
        if running is not None:
            running.alive = False
            self.blind.add(batch)
            self._release(running.node)
        elif batch in self.lost:  # dead, its loss not yet heard: the driver never reads it
            self.blind.add(batch)
        else:
            self.waiting = deque(w for w in self.waiting if w.batch != batch)

    def wait(self, timeout_s: float) -> list[tuple[int, Progress | BatchLost]]:
        until = self.clock + timeout_s
        while self.events and self.events[0][0] <= until:
            at, _, kind, batch, detail = heapq.heappop(self.events)
            self.clock = max(self.clock, at)
            news = getattr(self, "_on_" + kind)(batch, detail)
            if news is not None:
                return [news]
        self.clock = until
        if self.clock > self.max_time_s:
            raise SimulationStalled(f"the job ran past {self.max_time_s} simulated seconds")
        return []

    def alive_nodes(self) -> set[str]:
        return {f"node-{node}" for node, alive in enumerate(self.alive) if alive}

    def avoid_nodes(self, nodes: set[str]) -> None:
        self.avoided = {int(node.rsplit("-", 1)[1]) for node in nodes}
        self.open = {n for n in range(self.cluster.nodes)
                     if self.alive[n] and self.free[n] > 0 and n not in self.avoided}
        self._place()

    # ------------------------------------------------------------------ events

    def _on_start(self, batch: int, _: int) -> Any:
        running = self.batches.get(batch)
        if running is None:
            return None
        running.started = self.clock
        self._begin(batch, running)
        return (batch, self._message(running)) if running.alive else None  # "in fn now"

    def _on_finish(self, batch: int, position: int) -> Any:
        running = self.batches.get(batch)
        if running is None or running.position != position:
            return None
        running.finished.append(self.clock)
        running.position += 1
        if running.position >= running.end:  # the last message goes at once
            del self.batches[batch]
            self._release(running.node)
            return batch, self._message(running)
        self._begin(batch, running)
        if running.alive and not running.flush_due:
            running.flush_due = True
            self._at(self._next_flush(running), "flush", batch, 0)
        return None

    def _on_flush(self, batch: int, _: int) -> Any:
        running = self.batches.get(batch)
        if running is None:
            return None
        running.flush_due = False
        return batch, self._message(running)

    def _on_handoff(self, batch: int, position: int) -> Any:
        running = self.batches.get(batch)
        if running is None or running.position != position or position + 1 >= running.end:
            return None
        running.end = position + 1
        return batch, self._message(running)

    def _on_lost(self, batch: int, _: int) -> Any:
        if batch not in self.lost:
            return None
        return batch, BatchLost("WorkerCrashedError", "the simulated worker died",
                                self.lost.pop(batch))

    def _on_exit(self, batch: int, position: int) -> Any:
        running = self.batches.get(batch)
        if running is not None and running.position == position:
            self._lose(batch, running, at=position)
        return None

    def _on_node_lost(self, node: int, _: int) -> Any:
        self.alive[node] = False
        self.free[node] = 0
        self.open.discard(node)
        for batch, running in list(self.batches.items()):
            if running.node == node:
                self.blind.add(batch)
                self._lose(batch, running, at=None)
        return None

    # ----------------------------------------------------------------- workers

    def _place(self) -> None:
        while self.waiting and self.open:
            node = next(iter(self.open))
            launch = self.waiting.popleft()
            self.free[node] -= 1
            if not self.free[node]:
                self.open.discard(node)
            running = _Running(launch, node, end=len(launch.indices))
            self.batches[launch.batch] = running
            self._at(self.clock + self.cluster.worker_start_s, "start", launch.batch, 0)

    def _release(self, node: int) -> None:
        if self.alive[node]:
            self.free[node] += 1
            if node not in self.avoided:
                self.open.add(node)
            self._place()

    def _begin(self, batch: int, running: _Running) -> None:
        """The element at ``running.position`` enters fn now."""
        element = running.launch.indices[running.position]
        runs = self.starts.setdefault(element, [])
        action = self.faults.get((element, len(runs)))
        runs.append(batch)
        running.element_started = self.clock
        if action == "exit":
            self._lose(batch, running, at=running.position)
            return
        seconds = self.run_time(element, len(runs) - 1)
        seconds *= self.cluster.slow_nodes.get(running.node, 1.0)
        if action == "hang":
            seconds = math.inf
        elif isinstance(action, tuple) and action[0] == "exit":
            self._at(self.clock + action[1], "exit", batch, running.position)
            seconds = math.inf
        elif isinstance(action, tuple) and action[0] == "slow":
            seconds *= action[1]
        elif action == "raise":
            running.errors[running.position] = ElementError(
                "RuntimeError", f"element {element} failed as the fault table says", "",
                "error", retryable=False)
        if seconds < math.inf:
            self._at(self.clock + seconds, "finish", batch, running.position)
        after = running.launch.handoff_after_s
        if running.position + 1 < running.end and seconds > after:
            check = self._next_flush(running, self.clock + after)
            if check < self.clock + seconds:
                self._at(check, "handoff", batch, running.position)

    def _lose(self, batch: int, running: _Running, at: int | None) -> None:
        """The batch's worker dies now, its note saying ``at``: its stream breaks."""
        running.alive = False
        del self.batches[batch]
        self.lost[batch] = at
        self._release(running.node)
        self._at(self.clock, "lost", batch, 0)

    def _message(self, running: _Running) -> Progress:
        done = len(running.finished)
        first = running.reported
        values = [running.launch.indices[p] if p not in running.errors else None
                  for p in range(first, done)]
        errors = {p: e for p, e in running.errors.items() if first <= p < done}
        running.reported = done
        in_fn = None
        if done < running.end:
            in_fn = InFn(running.position, running.element_started)
        node = running.node
        return Progress(first, pickle.dumps(values), errors, running.finished[first:done],
                        in_fn, running.end, running.started, f"node-{node}",
                        node * 1000 + running.launch.batch % 1000)

    def _next_flush(self, running: _Running, after: float | None = None) -> float:
        """The first flush of the batch's clock after ``after`` (default: now)."""
        after = self.clock if after is None else after
        ticks = math.floor((after - running.started) / FLUSH_S) + 1
        return running.started + ticks * FLUSH_S

    def _at(self, at: float, kind: str, batch: int, detail: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind, batch, detail))
