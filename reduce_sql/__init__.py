"""reduce_sql: mapper outputs as a Delta Lake table with an exactly-once commit, queried in
place by DuckDB (or by any Delta reader).

    gpar.apply(xs, fn, output="out/")      fn returns a table; workers write Parquet
    reduce_sql.Dataset("out/").sql("SELECT … FROM data …")     DuckDB over the committed files
    reduce_sql.Dataset("out/", version=2)                       an earlier version
    reduce_sql.query("… FROM a JOIN b …", a="out/", b="s3://bucket/other")

Dataset and query are imported on first use (PEP 562): they load pyarrow and DuckDB, which
``import reduce_sql.errors`` (gpar's error tree) must not.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from reduce_sql.dataset import Dataset, query

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


def __getattr__(name: str) -> Any:
    if name in ("Dataset", "query"):
        from reduce_sql import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
