"""Every error and warning gpar raises, as one tree: ``except gpar.GparError`` catches whatever
apply() raises about a job. Misuse (a wrong argument) stays a TypeError or ValueError.

    GparError
    ├── EnvironmentCaptureError   fn reaches what cannot be shipped; raised before any task
    ├── ClusterConnectionError    no Ray cluster answers at the address, or it refused this
    │                             process's token (also a ConnectionError)
    ├── EnvironmentMismatch       the workers lack distributions at the caller's versions
    │                             (also envpack.EnvironmentMismatch)
    ├── LayerTooLarge             a distribution is too large to ship (also envpack.LayerTooLarge)
    ├── OutputExistsError         output= holds another job's data (also
    │                             reduce_sql.OutputExistsError)
    ├── OutputBusyError           another driver is writing output= now (also
    │                             reduce_sql.OutputBusyError)
    ├── SchemaConflictError       the tasks' tables disagree on a column's type (also
    │                             reduce_sql.SchemaConflictError)
    ├── TaskError                 one element failed for good (errors="raise", AllTasksFailed)
    ├── AllTasksFailed            every element failed; also an ExceptionGroup of TaskError
    ├── FailureBudgetExceeded     more attempts failed than max_failures; ``.partial`` results
    └── DeadlineExceeded          the deadline passed before any element finished

    TaskFailedWarning (UserWarning)     one per failed element when errors="warn"
    IncompleteResultsWarning            a deadline or quorum stopped the job with elements unrun
    SharedRandomStateWarning            fn draws from the caller's random generator: every batch
                                        gets a copy in one state and repeats its draws
    envpack.UnresolvedImportWarning     fn imports a name that is installed nowhere here

Five are envpack's and reduce_sql's errors too: each subclasses both GparError and the original,
so either ``except`` catches it. envpack and reduce_sql know nothing of gpar, so where apply calls
them, ``as_gpar_errors`` raises gpar's class from theirs (GPAR_CLASS_OF); a worker sends gpar's
EnvironmentMismatch itself.

A remote failure keeps its traceback as text: TaskError's ``__cause__`` is a RemoteTraceback whose
message is the worker's traceback, as concurrent.futures does, so it prints under the local one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import envpack.errors
import reduce_sql.errors

if TYPE_CHECKING:
    from gpar.results import Results, TaskFailure


class GparError(Exception):
    """Base class of every error gpar raises."""


class EnvironmentCaptureError(GparError):
    """The calling environment holds something fn needs that cannot be pickled (raised before
    any task), or unpickled on a worker (the message of the failed elements)."""


class ClusterConnectionError(GparError, ConnectionError):
    """No Ray cluster answers at the address, or it refused this process's token."""


class EnvironmentMismatch(GparError, envpack.errors.EnvironmentMismatch):
    """The workers' environment differs from the caller's (distributions, Python, platform);
    ``problems`` lists each difference."""


class LayerTooLarge(GparError, envpack.errors.LayerTooLarge):
    """A distribution or local package is larger than Ray will carry in one piece."""


class OutputExistsError(GparError, reduce_sql.errors.OutputExistsError):
    """output= holds another job's data; overwrite=True replaces it."""


class OutputBusyError(GparError, reduce_sql.errors.OutputBusyError):
    """Another driver holds output='s lease: it is writing there now."""


class SchemaConflictError(GparError, reduce_sql.errors.SchemaConflictError):
    """The tasks' tables disagree on a column's type in a way no cast can reconcile."""


#: envpack's and reduce_sql's errors a job can raise -> gpar's class of each.
GPAR_CLASS_OF: dict[type[Exception], type[GparError]] = {
    envpack.errors.EnvironmentMismatch: EnvironmentMismatch,
    envpack.errors.LayerTooLarge: LayerTooLarge,
    reduce_sql.errors.OutputExistsError: OutputExistsError,
    reduce_sql.errors.OutputBusyError: OutputBusyError,
    reduce_sql.errors.SchemaConflictError: SchemaConflictError,
}


def gpar_error(exc: BaseException) -> BaseException:
    """``exc`` as gpar's class of it (made from its args), a subclass of an original included;
    ``exc`` itself when gpar has none, or it is one already."""
    if not isinstance(exc, GparError):
        for original, ours in GPAR_CLASS_OF.items():
            if isinstance(exc, original):
                return ours(*exc.args)
    return exc


@contextlib.contextmanager
def as_gpar_errors() -> Iterator[None]:
    """Within the block, envpack's and reduce_sql's errors leave as gpar's, raised from them."""
    try:
        yield
    except Exception as exc:
        ours = gpar_error(exc)
        if ours is exc:
            raise
        raise ours from exc


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


class SharedRandomStateWarning(UserWarning):
    """fn draws from a random generator of the caller's: every batch starts from a copy of it
    in one state, so batches draw the same numbers."""


def describe_failure(failure: TaskFailure) -> str:
    attempts = "attempt" if failure.attempts == 1 else "attempts"
    return (
        f"task {failure.index} failed after {failure.attempts} {attempts} ({failure.reason}): "
        f"{failure.exc_type}: {failure.message}"
    )
