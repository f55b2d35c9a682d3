"""gpar: ``gpar.apply(xs, fn)`` returns ``[fn(x) for x in xs]``, computed on a Ray cluster."""

from gpar.api import apply, imap, submit
from gpar.cluster import shutdown
from gpar.errors import (
    AllTasksFailed,
    ClusterConnectionError,
    DeadlineExceeded,
    EnvironmentCaptureError,
    EnvironmentMismatch,
    FailureBudgetExceeded,
    GparError,
    IncompleteResultsWarning,
    LayerTooLarge,
    OutputBusyError,
    OutputExistsError,
    SchemaConflictError,
    SharedRandomStateWarning,
    TaskError,
    TaskFailedWarning,
)
from gpar.job import Job, JobProgress, JobStream
from gpar.report import AttemptRecord, JobReport
from gpar.results import Results, TaskFailure

__all__ = [
    "AllTasksFailed",
    "AttemptRecord",
    "ClusterConnectionError",
    "DeadlineExceeded",
    "EnvironmentCaptureError",
    "EnvironmentMismatch",
    "FailureBudgetExceeded",
    "GparError",
    "IncompleteResultsWarning",
    "Job",
    "JobProgress",
    "JobStream",
    "JobReport",
    "LayerTooLarge",
    "OutputBusyError",
    "OutputExistsError",
    "Results",
    "SchemaConflictError",
    "SharedRandomStateWarning",
    "TaskError",
    "TaskFailedWarning",
    "TaskFailure",
    "apply",
    "imap",
    "shutdown",
    "submit",
]
