"""The job report: one row per attempt of an element, kept as compact columns while running."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of element ``task``; times are wall-clock seconds since the epoch."""

    task: int
    attempt: int
    backup: bool
    node: str
    pid: int
    submitted: float
    started: float
    finished: float
    outcome: str  # "ok", "error", "result", "environment", "system", "timeout"
    error: str  # the failure's message, "" when ok


@dataclass
class AttemptBlock:
    """Consecutive elements of one batch reported in one message: stored as columns."""

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
    """What happened in one apply() call: attempts, what was shipped, what was left out."""

    elements: int
    environment_bytes: int = 0
    skipped_globals: dict[str, str] = field(default_factory=dict)
    batches: int = 0
    batches_lost: int = 0  # batches whose worker died with several elements unreported
    retries: int = 0
    backups: int = 0
    timeouts: int = 0
    failed_attempts: int = 0
    _blocks: list[AttemptBlock] = field(default_factory=list, repr=False)

    def record_policy(self, policy: Any) -> None:
        """Copy the job's totals from its scheduling policy."""
        self.retries, self.backups = policy.retries, policy.backups_launched
        self.timeouts, self.failed_attempts = policy.timeouts, policy.failed_attempts

    def add_block(self, block: AttemptBlock) -> None:
        self._blocks.append(block)

    @property
    def attempts(self) -> list[AttemptRecord]:
        rows = [record for block in self._blocks for record in block.records()]
        rows.sort(key=lambda record: (record.task, record.attempt))
        return rows

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.attempts, columns=list(AttemptRecord.__dataclass_fields__))
