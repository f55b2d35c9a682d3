"""reduce_sql: mapper outputs as Parquet with an exactly-once commit, queried in place by DuckDB.

    gpar.apply(xs, fn, output="out/")      fn returns a table; workers write Parquet
    reduce_sql.Dataset("out/").sql("SELECT … FROM data …")     DuckDB over the committed files
    reduce_sql.query("… FROM a JOIN b …", a="out/", b="s3://bucket/other")
"""

from reduce_sql.dataset import Dataset, query
from reduce_sql.errors import (
    NoDatasetError,
    OutputBusyError,
    OutputExistsError,
    OutputTypeError,
    PartialOutputWarning,
    ReduceSqlError,
    SchemaConflictError,
    StaleDatasetError,
)

__all__ = [
    "Dataset",
    "NoDatasetError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputTypeError",
    "PartialOutputWarning",
    "ReduceSqlError",
    "SchemaConflictError",
    "StaleDatasetError",
    "query",
]
