"""Every error and warning gpar raises, as one tree.

    GparError
    ├── EnvironmentCaptureError   fn reaches what cannot be shipped; raised before any task
    ├── TaskError                 one element failed for good (errors="raise", AllTasksFailed)
    ├── AllTasksFailed            every element failed; also an ExceptionGroup of TaskError
    ├── FailureBudgetExceeded     more attempts failed than max_failures; ``.partial`` results
    └── DeadlineExceeded          the deadline passed before any element finished

    TaskFailedWarning (UserWarning)   one per failed element when errors="warn"
    IncompleteResultsWarning          a deadline or quorum stopped the job with elements unrun

A remote failure keeps its traceback as text: TaskError's ``__cause__`` is a RemoteTraceback whose
message is the worker's traceback, as concurrent.futures does, so it prints under the local one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpar.results import Results, TaskFailure


class GparError(Exception):
    """Base class of every error gpar raises."""


class EnvironmentCaptureError(GparError):
    """The calling environment holds something fn needs that cannot be pickled."""


class RemoteTraceback(Exception):
    """The traceback text of a failure on a worker, attached as ``__cause__``."""

    def __init__(self, traceback_text: str):
        super().__init__(traceback_text)

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


class TaskError(GparError):
    """Element ``failure.index`` of xs failed for good; ``failure`` says how."""

    def __init__(self, failure: TaskFailure):
        super().__init__(describe_failure(failure))
        self.failure = failure
        self.__cause__ = RemoteTraceback(failure.traceback) if failure.traceback else None


class AllTasksFailed(ExceptionGroup, GparError):
    """Every element failed; ``exceptions`` holds one TaskError each, ``results`` the job."""

    def __new__(cls, message: str, errors: list[TaskError], results: Results):
        group = super().__new__(cls, message, errors)
        group.results = results
        return group

    def __init__(self, message: str, errors: list[TaskError], results: Results):
        super().__init__(message, errors)

    def derive(self, excs):  # keep split()/subgroup() working: they call derive(message, excs)
        return ExceptionGroup(self.message, excs)


class FailureBudgetExceeded(GparError):
    """More attempts failed than ``max_failures``; the job was cancelled. ``partial`` holds
    what had finished, a TaskFailure in every other slot."""

    def __init__(self, message: str, partial: Results):
        super().__init__(message)
        self.partial = partial


class DeadlineExceeded(GparError):
    """The deadline passed before any element finished; ``partial`` holds the TaskFailures."""

    def __init__(self, message: str, partial: Results):
        super().__init__(message)
        self.partial = partial


class TaskFailedWarning(UserWarning):
    """One element of xs failed; its slot in the results holds a TaskFailure."""


class IncompleteResultsWarning(UserWarning):
    """A deadline or quorum ended the job early; unfinished slots hold TaskFailures."""


def describe_failure(failure: TaskFailure) -> str:
    attempts = "attempt" if failure.attempts == 1 else "attempts"
    return (
        f"task {failure.index} failed after {failure.attempts} {attempts} ({failure.reason}): "
        f"{failure.exc_type}: {failure.message}"
    )
