"""Every error reduce_sql raises, as one tree, and the one warning it gives.

    ReduceSqlError
    ├── OutputTypeError      fn returned something that is not a table (also a TypeError)
    ├── OutputExistsError    the output holds another job's data; overwrite=True replaces it
    ├── OutputBusyError      another driver writes the output: it holds the lease, or it
                             committed since this one read the table
    ├── SchemaConflictError  two tasks returned a column with types that cannot be unified
    ├── NoDatasetError       the location holds no committed output (no Delta table)
    └── StaleDatasetError    the version a Dataset opened was replaced long enough ago that
                             its files are gone; open the Dataset again

    PartialOutputWarning     a Dataset opened on a checkpoint of a job that has not finished
"""

from __future__ import annotations


class ReduceSqlError(Exception):
    """Base class of every error reduce_sql raises."""


class OutputTypeError(ReduceSqlError, TypeError):
    """fn's return value is not one of the accepted table shapes."""


class OutputExistsError(ReduceSqlError):
    """A different job's output is already at the location."""


class OutputBusyError(ReduceSqlError):
    """Another driver holds the output's lease: it is writing there now."""


class SchemaConflictError(ReduceSqlError):
    """The tasks' tables disagree on a column's type in a way no cast can reconcile."""


class NoDatasetError(ReduceSqlError):
    """Nothing was committed at the location."""


class StaleDatasetError(ReduceSqlError):
    """The files of the version a Dataset opened were removed after a newer commit."""


class PartialOutputWarning(UserWarning):
    """The output lacks tasks of its job: a checkpoint (the job still runs, or its driver
    died), or a job some of whose tasks failed or were cut off by a deadline or quorum."""
