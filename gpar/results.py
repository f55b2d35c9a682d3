"""What apply() returns: results in input order, failed slots holding a TaskFailure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpar.outcomes import FailureReason

if TYPE_CHECKING:
    from gpar.report import JobReport


@dataclass(frozen=True)
class TaskFailure:
    """Stands in the results for an element of xs that has no value.

    ``reason`` is "error" (fn raised, returned what output= cannot write, or its element could
    not be pickled or unpickled to reach it), "system" (the
    worker died, the result could not be pickled or written, the environment could not be
    restored), "deadline", "quorum" or "cancelled" (the job stopped before it finished).
    ``exception`` is the worker's exception itself where the driver takes it as it is (the
    EnvironmentMismatch of a worker that lacks the caller's packages), else None.
    """

    index: int
    exc_type: str
    message: str
    traceback: str
    attempts: int
    reason: FailureReason
    exception: BaseException | None = field(default=None, repr=False, compare=False)


class Results(list):
    """``[fn(x) for x in xs]`` in input order; ``.report`` is the job's JobReport."""

    def __init__(self, values: list[Any], report: JobReport):
        super().__init__(values)
        self.report = report

    @property
    def failures(self) -> list[TaskFailure]:
        return [value for value in self if isinstance(value, TaskFailure)]
