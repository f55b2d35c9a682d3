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

The five errors of envpack and reduce_sql that a job can raise are *twins* here: subclasses of
both GparError and the original, so either ``except`` catches them. envpack and reduce_sql know
nothing of gpar (and importing reduce_sql loads pyarrow), so the twins are made on first use
(``gpar.errors.EnvironmentMismatch``); apply raises the twin wherever envpack or reduce_sql
raised the original (``as_gpar_errors``), and a worker sends the twin of its mismatch itself.

A remote failure keeps its traceback as text: TaskError's ``__cause__`` is a RemoteTraceback whose
message is the worker's traceback, as concurrent.futures does, so it prints under the local one.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpar.results import Results, TaskFailure


class GparError(Exception):
    """Base class of every error gpar raises."""


class EnvironmentCaptureError(GparError):
    """The calling environment holds something fn needs that cannot be pickled (raised before
    any task), or unpickled on a worker (the message of the failed elements)."""


class ClusterConnectionError(GparError, ConnectionError):
    """No Ray cluster answers at the address, or it refused this process's token."""


#: Twin name -> (module, class) of the original it also is.
TWINS = {
    "EnvironmentMismatch": ("envpack.errors", "EnvironmentMismatch"),
    "LayerTooLarge": ("envpack.errors", "LayerTooLarge"),
    "OutputExistsError": ("reduce_sql.errors", "OutputExistsError"),
    "OutputBusyError": ("reduce_sql.errors", "OutputBusyError"),
    "SchemaConflictError": ("reduce_sql.errors", "SchemaConflictError"),
}
_twins_made = threading.Lock()


def __getattr__(name: str) -> Any:
    """A twin, made on first use: it imports its original's package only then."""
    if name not in TWINS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _twins_made:
        twin = globals().get(name)
        if twin is None:
            module, original = TWINS[name]
            twin = _twin(getattr(importlib.import_module(module), original))
            globals()[name] = twin
    return twin


def _twin(original: type[Exception]) -> type[GparError]:
    """A class that is both ``original`` and a GparError, named as the original is."""
    return type(original.__name__, (GparError, original), {
        "__module__": __name__, "__qualname__": original.__name__, "__doc__": original.__doc__})


def twin_of(exc: BaseException) -> BaseException:
    """``exc`` as its GparError twin (same message, attributes and traceback); ``exc`` itself
    when it has none."""
    for name, (module, original) in TWINS.items():
        if type(exc) is getattr(sys.modules.get(module), original, None):
            twin = __getattr__(name)(*exc.args)
            twin.__dict__.update(exc.__dict__)
            return twin.with_traceback(exc.__traceback__)
    return exc


@contextlib.contextmanager
def as_gpar_errors() -> Iterator[None]:
    """Within the block, envpack's and reduce_sql's errors about the job leave as their twins."""
    try:
        yield
    except Exception as exc:
        twin = twin_of(exc)
        if twin is exc:
            raise
        raise twin from None


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
