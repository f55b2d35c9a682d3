"""The driver loop: the policy's decisions out to a backend, the backend's news in as events.

    JobLoop.run ─▶ policy.tick ─▶ backend.cancel(batches it killed); a report row for each
                                   attempt ended, the unstarted elements marked
               ─▶ policy.launches ─▶ backend.submit
               ─▶ backend.wait ─▶ (batch, Progress) ─▶ policy.on_handed_off(HandedOff) /
                                    on_reported(Reported) / on_running(Running); values in
                                    input order
                               ─▶ (batch, BatchLost) ─▶ policy.on_lost(Lost)
               ◀─ values, a TaskFailure in each slot without one

Two backends drive it: Ray (raybackend.py) and the cluster simulator (simulator.py), so the
simulator tests the very code that runs a job. The loop owns what a backend must not decide:
the report, the values, progress, checkpoints and slow-node placement.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gpar import pickled
from gpar.feed import Feed
from gpar.job import Control
from gpar.policy import Policy
from gpar.records import (
    BatchLost,
    ElementError,
    HandedOff,
    Launch,
    Lost,
    Progress,
    Reported,
    Running,
    Stopped,
)
from gpar.report import AttemptBlock, JobReport
from gpar.stragglers import SlowNodes

#: A report block's failures when none of its elements failed, the usual case; never changed.
_NONE_FAILED: dict[int, tuple[str, str]] = {}
#: The report row of an element that finished in a batch lost before it reported it.
_LOST = ("lost", "it finished, but its value was lost with its worker: run again, uncharged")


class Backend(Protocol):
    """Where batches run: Ray, or the simulator."""

    def now(self) -> float:
        """The clock workers stamp their progress with (seconds)."""

    def submit(self, launch: Launch) -> None:
        """Start batch ``launch.batch``."""

    def cancel(self, batch: int) -> None:
        """Kill a batch's worker; nothing more is heard from it."""

    def wait(self, timeout_s: float) -> list[tuple[int, Progress | BatchLost]]:
        """News from running batches, waiting at most ``timeout_s`` for the first."""

    def alive_nodes(self) -> set[str]:
        """The nodes that can run batches now."""

    def avoid_nodes(self, nodes: set[str]) -> None:
        """Start no new batch on ``nodes``."""


@dataclass
class _Stream:
    """A launched batch and what it has told so far."""

    launch: Launch
    submitted: float
    last_finished: float | None = None
    node: str = ""
    pid: int = 0


class JobLoop:
    """Runs one job's policy against a backend; ``run()`` returns the values in input order."""

    def __init__(self, policy: Policy, report: JobReport, backend: Backend,
                 progress: Callable[[int], Any] = lambda finished: None,
                 checkpoint: Callable[[list[Any], float], None] | None = None,
                 control: Control | None = None, feed: Feed | None = None):
        self.policy, self.report, self.backend = policy, report, backend
        self.feed = feed  # the input, when it is read as the job goes (imap)
        self.control = Control() if control is None else control  # its Job's, if any
        self.ledger = policy.ledger
        self.progress = progress  # called with the number of elements newly final
        self.checkpoint = checkpoint  # called with the values and the time, every loop turn
        self.values: list[Any] = [None] * policy.elements
        with self.control.lock:
            self.control.values = self.values
            self.control.loop = self  # its batches' nodes and workers, for the job page
        self.streams: dict[int, _Stream] = {}
        self.slow_nodes: SlowNodes | None = None  # made at the first straggler
        self.finished_on: Counter[str] = Counter()  # node -> element attempts finished there

    def run(self) -> list[Any]:
        try:
            self._loop()
        finally:
            for batch in list(self.streams):
                self.backend.cancel(batch)
            self.streams.clear()
            with self.control.lock:  # else the control and the loop keep each other, and the
                self.control.loop = None  # backend's environment, until a garbage collection
        for index, failure in self.ledger.failures.items():
            self.values[index] = failure
        return self.values

    def _loop(self) -> None:
        policy, ledger, backend = self.policy, self.ledger, self.backend
        lock, cancelled = self.control.lock, self.control.cancelled
        while True:
            with lock:  # what the policy and the report say changes only under it
                now = backend.now()
                final_before = ledger.final_count
                if cancelled.is_set():
                    policy.cancel()
                stopped = policy.tick(now)
                for batch in policy.take_stragglers():  # before a preemption forgets its node
                    self._on_straggler(self.streams[batch].node)
                for each in stopped:
                    self._stopped(each, now)
                self.progress(ledger.final_count - final_before)  # refreshes the bar's clock
                if self.feed is not None:  # read by the thread that iterates: see Control
                    self.control.ask_input(0 if policy.over else self.feed.want(policy))
                if policy.over:
                    lock.notify_all()
                    return
                if self.checkpoint is not None:
                    self.checkpoint(self.values, now)
                for launch in self._launches():
                    self.streams[launch.batch] = _Stream(launch, submitted=now)
                    backend.submit(launch)
                lock.notify_all()  # those who wait for elements to become final
            if not self.streams and (policy.held_back or self.control.awaits_input()):
                # nothing runs: wait for the reader to read results, or the input
                self.control.wakeup.wait(policy.next_check(now))
                self.control.wakeup.clear()
                news = []
            else:
                news = backend.wait(policy.next_check(now))
            with lock:
                for batch, each in news:
                    if batch in self.streams:
                        self._on_news(batch, each)
                if not news and self.slow_nodes is not None and self.slow_nodes.avoided:
                    self._check_avoided_nodes()
                if self.feed is not None:
                    self.feed.release(ledger.final_order)
                lock.notify_all()

    def _launches(self) -> Sequence[Launch]:
        """What the policy launches now: nothing new while the caller holds launches back
        (imap's unread results at their bound), but the element an ordered stream waits for,
        which also leaves the parked line at once (it holds back every result behind it)."""
        policy, control = self.policy, self.control
        room = control.room()
        policy.held_back = control.held_back = room == 0
        head = () if control.head is None else policy.launch_alone(
            control.head, parked_only=not policy.held_back)
        if policy.held_back:
            return head
        return [*head, *policy.launches(policy.rules.max_workers, most_elements=room)]

    def _on_news(self, batch: int, news: Progress | BatchLost) -> None:
        final_before = self.ledger.final_count
        if isinstance(news, BatchLost):
            error = ElementError(news.exc_type, news.message.splitlines()[0] if news.message
                                 else news.exc_type, news.message, "system", retryable=True)
            stopped = self.policy.on_lost(Lost(batch, error, news.at))
            if stopped is not None:
                self._stopped(stopped, self.backend.now())
            self.streams.pop(batch, None)
        else:
            self._take(batch, self.streams[batch], news)
        newly_final = self.ledger.final_count - final_before
        if newly_final:  # most news is an element entering fn; each turn refreshes the bar
            self.progress(newly_final)

    def _take(self, batch: int, stream: _Stream, message: Progress) -> None:
        stream.node, stream.pid = message.node_id, message.pid
        if message.end < len(stream.launch.indices):  # the worker gave elements back
            self.policy.on_handed_off(HandedOff(batch, message.end))
        count = len(message.finished)
        if count:
            self._take_finished(batch, stream, message, count)
        if message.last:
            self.streams.pop(batch, None)
        else:
            self.policy.on_running(Running(batch, message.running))

    def _take_finished(self, batch: int, stream: _Stream, message: Progress, count: int) -> None:
        launch = stream.launch
        previous = stream.last_finished or message.elements_started
        stream.last_finished = message.finished[-1]
        self.finished_on[stream.node] += count
        values, errors = self._unpickle_values(message, count)
        self.control.received(len(message.values), count)
        first = launch.indices[message.done_from]
        failed = {position - message.done_from: (error.kind, error.message)
                  for position, error in errors.items()} if errors else _NONE_FAILED
        self.report.add_block(AttemptBlock(batch, first, launch.attempt, launch.backup,
                                           stream.node, stream.pid, stream.submitted, previous,
                                           message.finished, failed))
        accepted = self.policy.on_reported(Reported(batch, message.done_from, count, errors,
                                                    message.finished[-1] - previous))
        for indices in accepted:
            offset = indices.start - first
            self.values[indices.start:indices.stop] = values[offset:offset + len(indices)]

    def _unpickle_values(self, message: Progress,
                         count: int) -> tuple[list[Any], dict[int, ElementError]]:
        """The message's values and errors; a value the driver cannot unpickle becomes its
        error (the worker reported those it could not pickle)."""
        values, failures = pickled.loads(message.values)
        if not failures:
            return values, message.errors
        unpickled = {message.done_from + position: ElementError(
            failure.exc_type,
            f"fn's result could not be unpickled on the driver: {failure.message}. Return "
            "objects whose classes the driver can import (builtins, numpy, pandas, installed "
            "modules).", "", "result", retryable=False)
            for position, failure in failures.items() if failure.stage == "unpickle"}
        return values, {**unpickled, **message.errors}

    def _stopped(self, stopped: Stopped, now: float) -> None:
        """A batch ended without its last word: kill it if it was a decision; report it."""
        stream = self.streams.pop(stopped.batch, None)
        if stream is None:
            return
        if stopped.killed:
            self.backend.cancel(stopped.batch)
        ended = stopped.ended
        if ended is not None:
            self.report.add_block(AttemptBlock(
                stopped.batch, ended.index, ended.attempt, stream.launch.backup, stream.node,
                stream.pid, stream.submitted,
                math.nan if ended.started_at is None else ended.started_at, [now],
                {0: (ended.outcome, ended.message)}))
        for elements in stopped.unstarted:
            if elements:
                self.report.add_unstarted(elements)
        for elements in stopped.ran:  # times unknown: they died with the worker
            if elements:
                self.report.add_block(AttemptBlock(
                    stopped.batch, elements.start, stream.launch.attempt, stream.launch.backup,
                    stream.node, stream.pid, stream.submitted, math.nan,
                    [math.nan] * len(elements), dict.fromkeys(range(len(elements)), _LOST)))

    def _check_avoided_nodes(self) -> None:
        """Nothing happened for a while: if every batch in flight straggles while work waits
        (elements that hang wherever they run look like slow nodes), or nodes were lost since
        some were found slow, the avoided ones are needed. Count strikes anew then."""
        if self.policy.stuck() or not self.backend.alive_nodes() - self.slow_nodes.avoided:
            self.slow_nodes = None
            self.backend.avoid_nodes(set())

    def _on_straggler(self, node: str) -> None:
        """Count a straggler against its node; launch nothing more on the nodes found slow."""
        if self.slow_nodes is None:
            self.slow_nodes = SlowNodes(nodes=len(self.backend.alive_nodes()))
        if self.slow_nodes.on_straggler(node, self.finished_on[node]):
            self.backend.avoid_nodes(set(self.slow_nodes.avoided))
