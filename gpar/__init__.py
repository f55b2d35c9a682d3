"""gpar: ``gpar.apply(xs, fn)`` returns ``[fn(x) for x in xs]``, computed on a Ray cluster."""

from gpar.api import apply
from gpar.cluster import shutdown
from gpar.errors import (
    AllTasksFailed,
    ClusterConnectionError,
    DeadlineExceeded,
    EnvironmentCaptureError,
    FailureBudgetExceeded,
    GparError,
    IncompleteResultsWarning,
    SharedRandomStateWarning,
    TaskError,
    TaskFailedWarning,
)
from gpar.report import AttemptRecord, JobReport
from gpar.results import Results, TaskFailure

__all__ = [
    "AllTasksFailed",
    "AttemptRecord",
    "ClusterConnectionError",
    "DeadlineExceeded",
    "EnvironmentCaptureError",
    "FailureBudgetExceeded",
    "GparError",
    "IncompleteResultsWarning",
    "JobReport",
    "Results",
    "SharedRandomStateWarning",
    "TaskError",
    "TaskFailedWarning",
    "TaskFailure",
    "apply",
    "shutdown",
]
