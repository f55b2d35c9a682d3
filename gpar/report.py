"""The job report: one row per attempt of an element, kept as compact columns while running.

Its summary is the paper's Table 1 (mean and 95th percentile of worker startup and run time)
and ``plot_cdf`` draws its Figure 8 (the CDF of both). Startup is measured per batch: from
submission to the moment its first element entered fn (the worker started, the environment
restored); run time per element attempt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpar.outcomes import Outcome
from gpar.records import Counts

#: What a JobReport reads from its counts.
_COUNT_NAMES = frozenset(each.name for each in dataclasses.fields(Counts))


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of element ``task``; times are wall-clock seconds since the epoch."""

    task: int
    attempt: int
    backup: bool
    node: str
    pid: int
    submitted: float
    started: float  # NaN: its worker died before it reported the element's times
    finished: float
    outcome: Outcome
    error: str  # the failure's message, "" when ok


@dataclass(slots=True)
class AttemptBlock:
    """Consecutive elements of one batch reported in one message: stored as columns."""

    batch: int  # the launch: one per batch attempt, backups included
    first_task: int
    attempt: int
    backup: bool
    node: str
    pid: int
    submitted: float
    first_started: float  # each later element started when the one before it finished
    finished: Sequence[float]
    failed: dict[int, tuple[str, str]]  # offset -> (outcome, message) of elements not "ok"

    def records(self) -> list[AttemptRecord]:
        started = [self.first_started, *self.finished[:-1]]
        return [
            AttemptRecord(self.first_task + offset, self.attempt, self.backup, self.node,
                          self.pid, self.submitted, started[offset], finished,
                          *self.failed.get(offset, ("ok", "")))
            for offset, finished in enumerate(self.finished)
        ]


@dataclass
class JobReport:
    """What happened in one apply() call: attempts, what was shipped, what was left out, and
    what the scheduling policy counted: ``counts``, the policy's own, read as the report's
    attributes (``report.retries``); a snapshot copies them."""

    elements: int
    counts: Counts = field(default_factory=Counts)
    environment_bytes: int = 0
    environment_bytes_sent: int = 0  # of them, what the cluster did not hold already
    max_workers: int = 0  # the cap on batches in flight the job ran with (the cluster's CPUs)
    skipped_globals: dict[str, str] = field(default_factory=dict)
    image: Any = None  # envpack's ImageReport: the layers shipped, cache hits, seconds spent
    #: The element of xs each element of this run is, when a resumed output job skipped the
    #: committed ones; None: element i is xs[i].
    task_numbers: Sequence[int] | None = field(default=None, repr=False)
    _blocks: list[AttemptBlock] = field(default_factory=list, repr=False)
    _unstarted: list[range] = field(default_factory=list, repr=False)

    def add_block(self, block: AttemptBlock) -> None:
        self._blocks.append(block)

    @property
    def blocks(self) -> Sequence[AttemptBlock]:
        """The attempts as stored, a block per report of a batch's consecutive elements: what
        a summary that needs no row per element reads (the job page)."""
        return self._blocks

    def snapshot(self) -> JobReport:
        """A copy whose attempts stay as they are now (a running job's loop appends to its
        own)."""
        return dataclasses.replace(self, counts=dataclasses.replace(self.counts),
                                   _blocks=list(self._blocks),
                                   _unstarted=list(self._unstarted))

    def __getattr__(self, name: str) -> Any:
        """A count of the policy's (``batches``, ``retries``, ...; records.Counts)."""
        if name in _COUNT_NAMES:
            return getattr(self.counts, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def add_unstarted(self, elements: range) -> None:
        """Elements of a batch that was lost or killed, never seen starting (or, with output=,
        finished but not yet written): queued again, charged nothing, and no attempt of theirs."""
        self._unstarted.append(elements)

    @property
    def unstarted(self) -> list[int]:
        """Each time an element's batch ended before it was seen starting (see add_unstarted)."""
        numbers = self.task_numbers
        return sorted(numbers[i] if numbers is not None else i
                      for elements in self._unstarted for i in elements)

    @property
    def attempts(self) -> list[AttemptRecord]:
        rows = [record for block in self._blocks for record in block.records()]
        if self.task_numbers is not None:
            rows = [dataclasses.replace(row, task=self.task_numbers[row.task]) for row in rows]
        rows.sort(key=lambda record: (record.task, record.attempt))
        return rows

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.attempts, columns=list(AttemptRecord.__dataclass_fields__))

    def startup_times(self) -> list[float]:
        """Seconds from submission to first element start, one value per batch attempt."""
        startup: dict[int, float] = {}  # batch -> its earliest element start after submission
        for block in self._blocks:
            if math.isnan(block.first_started):  # lost before it said anything started
                continue
            seconds = block.first_started - block.submitted
            startup[block.batch] = min(startup.get(block.batch, seconds), seconds)
        return [max(0.0, seconds) for seconds in startup.values()]

    def run_times(self) -> list[float]:
        """Seconds in fn, one value per element attempt seen starting."""
        return [record.finished - record.started for record in self.attempts
                if record.started == record.started]

    def table1(self) -> Any:
        """The paper's Table 1: mean and 95th percentile (seconds) of startup and run time."""
        import numpy as np
        import pandas as pd

        rows = {}
        for name, times in (("startup", self.startup_times()), ("run", self.run_times())):
            values = np.asarray(times or [np.nan])
            rows[name] = {"mean_s": float(np.mean(values)),
                          "p95_s": float(np.percentile(values, 95)), "n": len(times)}
        return pd.DataFrame.from_dict(rows, orient="index")

    def plot_cdf(self, path: Any, format: str | None = None) -> None:
        """Draw the paper's Figure 8: the CDF of worker startup time and of run time, to a
        file's path or a binary file (``format``: "svg", "png", ... when not by suffix)."""
        import numpy as np
        from matplotlib.figure import Figure  # not pyplot: no backend chosen or switched (a
        # notebook's stays inline), and safe in the job page's threads

        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        for label, times in (("startup time", self.startup_times()),
                             ("run time", self.run_times())):
            values = np.sort(np.asarray(times))
            if len(values):
                axes.step(values, np.arange(1, len(values) + 1) / len(values), where="post",
                          label=f"{label} (n={len(values)})")
        axes.set_xlabel("seconds")
        axes.set_ylabel("fraction of attempts")
        axes.set_title(f"{self.elements} tasks: startup and run time")
        axes.grid(alpha=0.3)
        if axes.lines:  # none yet: a running job's page asks before any attempt ended
            axes.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(path, dpi=120, format=format)
