"""What apply(output=) returns: the committed output as a reduce_sql Dataset, with the job's
report and failures beside it (reduce_sql knows nothing of gpar's jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reduce_sql import Dataset
from reduce_sql.store import Location

if TYPE_CHECKING:
    from gpar.report import JobReport
    from gpar.results import TaskFailure


class OutputDataset(Dataset):
    """A Dataset of the output a job committed; ``.report`` is its JobReport, ``.failures``
    the TaskFailures of its tasks with no output. Sent elsewhere (pickled), a plain Dataset."""

    def __init__(self, location: Location, report: JobReport, failures: list[TaskFailure]):
        super().__init__(location, warn_if_partial=False)  # apply warned as the job ended
        self.report = report
        self.failures = failures
