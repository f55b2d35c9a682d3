"""gpar: ``gpar.apply(xs, fn)`` returns ``[fn(x) for x in xs]``, computed on a Ray cluster."""

from gpar.api import apply
from gpar.cluster import shutdown
from gpar.errors import (
    AllTasksFailed,
    EnvironmentCaptureError,
    GparError,
    TaskError,
    TaskFailedWarning,
)
from gpar.report import AttemptRecord, JobReport
from gpar.results import Results, TaskFailure

__all__ = [
    "AllTasksFailed",
    "AttemptRecord",
    "EnvironmentCaptureError",
    "GparError",
    "JobReport",
    "Results",
    "TaskError",
    "TaskFailedWarning",
    "TaskFailure",
    "apply",
    "shutdown",
]
