"""DuckDB SQL over committed outputs, in place: no copy, no load step.

A Dataset is a view named ``data`` over exactly the files its manifest lists: the version it
opened, which a job committing meanwhile leaves readable (commit.py keeps what it replaces for
RETAIN_S). Local files are read by DuckDB's own Parquet reader (parallel, row groups skipped by
their statistics); files in an object store through a pyarrow dataset, into which DuckDB pushes
its projections and filters.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from reduce_sql.commit import Manifest, read_manifest
from reduce_sql.errors import NoDatasetError, PartialOutputWarning, StaleDatasetError
from reduce_sql.store import Location, locate


class Dataset:
    """The committed output at ``uri``; ``.sql("SELECT … FROM data …")`` queries it."""

    def __init__(self, uri: str | os.PathLike | Location, *, report: Any = None,
                 failures: list | None = None):
        self.location = uri if isinstance(uri, Location) else locate(uri)
        try:
            manifest = read_manifest(self.location)
        except NotADirectoryError:  # a local file: said below
            manifest = None
        if manifest is None and self.location.is_file:
            raise NoDatasetError(f"{self.location.uri} is a file; a Dataset is the directory "
                                 "(or s3:// prefix) an apply(output=...) wrote")
        if manifest is None:
            raise NoDatasetError(
                f"{self.location.uri} holds no committed output (no manifest): write one with "
                "gpar.apply(xs, fn, output=...)")
        if not manifest.finished:
            warnings.warn(PartialOutputWarning(
                f"{self.location.uri} holds a checkpoint of a job that has not finished (still "
                f"running, or its driver stopped): {len(manifest.tasks):,} tasks committed so "
                "far. Queries see only those (open the Dataset again once the job has "
                "committed to see them all); if its driver stopped, run the same job again to "
                "finish it."),
                stacklevel=2)
        elif report is None and len(manifest.tasks) < (manifest.elements or 0):
            warnings.warn(PartialOutputWarning(  # apply warned its caller as the job ended
                f"{self.location.uri} holds the output of {len(manifest.tasks):,} of its job's "
                f"{manifest.elements:,} tasks: the others failed, or a deadline or quorum cut "
                "them off. Queries see only these; run the same job again to write the rest."),
                stacklevel=2)
        self.manifest: Manifest = manifest
        self.report = report  # the JobReport when the Dataset comes from gpar.apply
        self.failures = failures or []  # TaskFailures of that job's tasks with no output
        self._database: Any = None  # DuckDB with the view ``data``, made on the first query
        self._lock = threading.Lock()

    @property
    def schema(self) -> pa.Schema:
        return self.manifest.schema

    @property
    def num_rows(self) -> int:
        return self.manifest.rows

    @property
    def files(self) -> list[str]:
        """Full paths of the committed files."""
        return [self.location.path(file.path) for file in self.manifest.files]

    def sql(self, query: str, params: dict[str, Any] | list[Any] | None = None) -> pa.Table:
        """Run ``query`` over this dataset as table ``data``; values go in ``params``
        (``$name`` with a dict, ``?`` with a list), never pasted into the SQL."""
        import duckdb

        with self._lock:  # one connection, used by one thread at a time
            if self._database is None:  # a new DuckDB costs ~35 ms here: keep one
                self._database = _database(data=self)
            try:
                return self._database.sql(query, params=params).to_arrow_table()
            except (duckdb.Error, OSError) as exc:
                self._raise_if_stale(exc)
                raise

    def _raise_if_stale(self, exc: BaseException) -> None:
        """A query that failed because the files of this version were removed (a newer
        commit, RETAIN_S ago) says so, rather than with a file-not-found."""
        from reduce_sql.commit import RETAIN_S

        infos = self.location.filesystem.get_file_info(self.files)
        if any(info.type == pafs.FileType.NotFound for info in infos):
            raise StaleDatasetError(
                f"{self.location.uri} was committed again more than {RETAIN_S:.0f} s after "
                "this Dataset opened it, and the files of the version it read are removed: "
                "open Dataset(...) again to query the current version") from exc

    def to_arrow(self) -> pa.Table:
        return self.sql("SELECT * FROM data")

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return (f"Dataset({self.location.uri!r}: {self.num_rows:,} rows in "
                f"{len(self.manifest.files)} files, columns {self.schema.names})")


def query(sql: str, params: dict[str, Any] | list[Any] | None = None,
          **tables: str | os.PathLike | Dataset) -> pa.Table:
    """Run ``sql`` with each keyword a table: ``query("… FROM evals JOIN other …",
    evals="out/evals", other="s3://bucket/other")``."""
    if not tables:
        raise ValueError('name at least one table: query(sql, data="path/or/s3://uri")')
    if isinstance(params, str | os.PathLike | Dataset):
        raise TypeError("params= holds the values of the query's $name or ? placeholders, so "
                        "no table can be named params: name it otherwise")
    database = _database(**{name: source if isinstance(source, Dataset) else Dataset(source)
                            for name, source in tables.items()})
    try:
        return database.sql(sql, params=params).to_arrow_table()
    finally:
        database.close()


def _database(**tables: Dataset) -> Any:
    """An in-memory DuckDB in which each dataset is a view (or a registered scan) by name."""
    import duckdb

    connection = duckdb.connect()
    # a Dataset's files never change (each name is written once): keep their footers parsed
    connection.execute("SET parquet_metadata_cache = true")
    for name, dataset in tables.items():
        _attach(connection, name, dataset)
    return connection


def _attach(connection: Any, name: str, dataset: Dataset) -> None:
    if not name.isidentifier():
        raise ValueError(f"table names must be identifiers, got {name!r}")
    if not dataset.schema.names:
        raise NoDatasetError(
            f"{dataset.location.uri} has no columns: no task returned a table with any (or "
            "there were no tasks), so there is nothing to query")
    files = dataset.files
    if not files:  # zero tasks committed rows: an empty table that still has the columns
        connection.register(name, dataset.schema.empty_table())
    elif dataset.location.is_s3:
        import pyarrow.dataset as pads

        connection.register(name, pads.dataset(
            files, schema=dataset.schema, format="parquet",
            filesystem=dataset.location.filesystem))
    else:
        relation = connection.read_parquet(files, union_by_name=not dataset.manifest.uniform)
        relation.create_view(name)
