"""Stragglers: when an attempt straggles, and which remedy it gets.

Three remedies, each for a different cause. **Preemption** frees a slot that waiting work
needs: the straggler is killed and its element parked, with more patience for each time it
was preempted. A **backup** races a second attempt against a straggler once the queue is
empty (cubed's ``should_launch_backup``): stragglers that fall at random are what backups are
for. **Slow nodes** get no new work: a node slow for everything is not fixed by racing it.
The policy (gpar/policy.py) applies the remedies; the loop (gpar/loop.py) tells nodes apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

#: Backups start once this share of the elements is final: cubed's ``min_completed_fraction``
#: default, kept; bench/bench_simulator.py's paper-scale job with backups measures the result.
BACKUP_AFTER_DONE = 0.5
#: An attempt straggles once it runs this many times longer than the median element: cubed's
#: ``slow_factor`` default, kept (bench/bench_simulator.py, bench/bench_stragglers.py measure
#: the makespans it gives)...
BACKUP_SLOWDOWN = 3.0
#: ...and at least this long (a 1 ms median must not make a 4 ms element a straggler). Not
#: tuned by a benchmark: a floor five times worker.FLUSH_S, the grain at which the driver hears
#: of an element, and above heldtables.WRITE_ALONE_AFTER_S, which is set below it.
BACKUP_MIN_S = 0.5
#: At most this share of the elements is backed up. Not tuned: a cap on the work a heavy
#: tail can add, above the 2 % of stragglers in bench/bench_simulator.py's paper-scale job.
BACKUP_SHARE = 0.1

#: At the tail (nothing left to launch, a slot idle) an attempt running this many times the
#: median already gets its backup: the slot would idle anyway (MapReduce's backups run then).
#: bench/bench_stragglers.py measured the rule as it came in (straggling attempts 1.61x the
#: job without them, from 1.83x); no other factor was compared.
TAIL_SLOWDOWN = 1.5

#: Stragglers on one node before it gets no new work: one could be the element's fault, a
#: second on the same node rarely is. bench/bench_stragglers.py's slow-node case measures it...
SLOW_NODE_STRIKES = 2
#: ...if they are also this share of its attempts: a node slow for everything straggles on
#: nearly all, while stragglers that fall at random (2 % of attempts in bench_simulator.py's
#: paper-scale job) put two on a quarter of 1,000 nodes, at a rate near 2 % there.
SLOW_NODE_SHARE = 0.5

#: Each preemption of an element lets its next attempt run this many times longer before it
#: can be preempted again. Not tuned, derived: the work lost on one element is at most about
#: twice its last run, and an element that always hangs is preempted about log2(job time /
#: straggler time) times in all (tests/test_simulator.py's starvation property bounds it).
PREEMPT_BACKOFF = 2.0

#: A straggler's batch still writing the tables of elements finished before it (output=) may run
#: this many times its patience before preemption: a write lost with the batch is work done
#: again, and on a busy object store a file takes seconds (bench/bench_reduce.py (c)).
WRITING_PATIENCE = 8.0


class Scan(NamedTuple):
    """What one scan of the running attempts may do."""

    threshold: float  # seconds in fn after which an attempt straggles
    may_preempt: int  # stragglers that may be preempted: as many as wait, if every slot is busy
    backups: bool  # whether stragglers may get backups


class Stragglers:
    """The straggler thresholds of one job, from its median element time, and the remedies
    already given: preemptions per element, backups per batch, backups left."""

    __slots__ = ("threshold", "tail_threshold", "check_after", "_timeout", "_slots",
                 "_backups", "_backups_from", "_backups_left", "_preempted", "_backed_up")

    def __init__(self, elements: int, *, slots: int, backups: bool,
                 task_timeout_s: float | None):
        # Seconds in fn after which an attempt straggles (at the tail: tail_threshold); None
        # before any element finished: with no median, nothing is a straggler.
        self.threshold: float | None = None
        self.tail_threshold: float | None = None
        # Seconds in fn after which an attempt may need a decision: as a straggler at the
        # tail, or at task_timeout_s.
        self._timeout = float("inf") if task_timeout_s is None else task_timeout_s
        self.check_after = self._timeout
        self._slots = slots
        self._backups = backups
        self._backups_from = BACKUP_AFTER_DONE * elements  # final elements
        self._backups_left = max(1, int(BACKUP_SHARE * elements))
        self._preempted: dict[int, int] = {}  # element -> times preempted
        self._backed_up: set[int] = set()  # batches whose straggler got its backup

    def grow(self, before: int, elements: int) -> None:
        """The input, ``before`` elements long, grew to ``elements`` (imap): the backup rules
        count what was read so far."""
        self._backups_from = BACKUP_AFTER_DONE * elements
        self._backups_left += int(BACKUP_SHARE * elements) - int(BACKUP_SHARE * before)

    def on_median(self, median_s: float) -> None:
        """The median element time changed: move the thresholds with it.

        Called on every report: comparisons, not min() and max() (see
        split.BatchSizer.next_size).
        """
        threshold, tail = BACKUP_SLOWDOWN * median_s, TAIL_SLOWDOWN * median_s
        self.threshold = threshold if threshold > BACKUP_MIN_S else BACKUP_MIN_S
        tail = tail if tail > BACKUP_MIN_S else BACKUP_MIN_S
        self.tail_threshold = tail
        self.check_after = tail if tail < self._timeout else self._timeout

    def scan(self, *, final: int, queued: bool, waiting: int, in_flight: int) -> Scan | None:
        """What a scan may do, with ``final`` elements final, work ``queued`` or not,
        ``waiting`` elements waiting (parked ones too) and ``in_flight`` batches; None before
        there is a median. Waiting work goes first: no backup while the queue holds work."""
        if self.threshold is None:
            return None
        backups = self._backups and not queued and final >= self._backups_from
        tail = backups and in_flight < self._slots  # slots idle: a shorter straggle will do
        return Scan(self.tail_threshold if tail else self.threshold,
                    waiting if in_flight >= self._slots else 0, backups)

    def should_preempt(self, index: int, backup: bool, running_s: float, threshold: float,
                       writing: bool) -> bool:
        """Whether a straggling attempt of element ``index``, in fn for ``running_s``, has
        used up its patience, given that a slot is wanted. A backup has none: its element
        has another attempt. ``writing``: its worker holds tables of earlier elements."""
        if backup:
            return True
        patience = threshold * PREEMPT_BACKOFF ** self._preempted.get(index, 0)
        if writing:
            patience *= WRITING_PATIENCE
        return running_s > patience

    def preempted(self, index: int) -> None:
        """Element ``index`` was preempted: its next attempt gets more patience."""
        self._preempted[index] = self._preempted.get(index, 0) + 1

    def take_backup(self, batch: int) -> bool:
        """Whether ``batch``'s straggler gets a backup now: one per batch, while the share
        of backups allows. Counts it if so."""
        if self._backups_left <= 0 or batch in self._backed_up:
            return False
        self._backed_up.add(batch)
        self._backups_left -= 1
        return True


@dataclass
class SlowNodes:
    """Which nodes get no new work: those with SLOW_NODE_STRIKES stragglers making at least
    SLOW_NODE_SHARE of their attempts, at most half of the ``nodes`` and never the last one."""

    nodes: int
    strikes: dict[str, int] = field(default_factory=dict)
    avoided: set[str] = field(default_factory=set)

    def on_straggler(self, node: str, finished_there: int) -> bool:
        """A straggler ran on ``node``, where ``finished_there`` element attempts have finished;
        returns whether the node is avoided from now on."""
        if not node or node in self.avoided:
            return False
        strikes = self.strikes[node] = self.strikes.get(node, 0) + 1
        slow = (strikes >= SLOW_NODE_STRIKES
                and strikes >= SLOW_NODE_SHARE * (strikes + finished_there))
        if slow and len(self.avoided) < self.nodes // 2:
            self.avoided.add(node)
            return True
        return False
