"""DuckDB SQL over committed outputs, in place: no copy, no load step.

A Dataset is a view named ``data`` over exactly the files of one version of the output's Delta
table: the latest when it opened, or the ``version=`` asked for, which a job committing
meanwhile leaves readable (commit.py keeps what it replaces for RETAIN_S). DuckDB's own
Parquet reader reads them (parallel, row groups skipped by their statistics, and pages by the
page index from DuckDB 2.0): local files, and files in an object
store when httpfs.py can give it S3; otherwise those through a pyarrow dataset, into which
DuckDB pushes its projections and filters.

Queries that only read run on a cursor of one DuckDB database per process: a new DuckDB costs
10-40 ms and starts with no Parquet footers nor file bytes cached, which a Dataset opened per
query (a notebook cell, a script, each apply) would pay every time. Cursors share the database's
caches, which is safe because a committed file is never rewritten (each name is written once),
while the view ``data`` is a temporary view of the cursor: no Dataset sees another's. A
statement that is not a SELECT (SET, CREATE, ATTACH, ...) could change what other Datasets see,
so the Dataset that runs one moves, from then on, to a DuckDB of its own.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import os
import threading
import warnings
import weakref
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from reduce_sql import httpfs
from reduce_sql.commit import Manifest, read_manifest
from reduce_sql.errors import NoDatasetError, PartialOutputWarning, StaleDatasetError
from reduce_sql.store import Location, locate


class Dataset:
    """The committed output at ``uri``; ``.sql("SELECT … FROM data …")`` queries it."""

    def __init__(self, uri: str | os.PathLike | Location, *, version: int | None = None,
                 warn_if_partial: bool = True):
        self.location = uri if isinstance(uri, Location) else locate(uri)
        try:
            manifest = read_manifest(self.location, version)
        except NotADirectoryError:  # a local file: said below
            manifest = None
        if manifest is None and self.location.is_file:
            raise NoDatasetError(f"{self.location.uri} is a file; a Dataset is the directory "
                                 "(or s3:// prefix) an apply(output=...) wrote")
        if manifest is None:
            raise NoDatasetError(
                f"{self.location.uri} holds no committed output (no Delta table): write one "
                "with gpar.apply(xs, fn, output=...)")
        if not manifest.finished:
            warnings.warn(PartialOutputWarning(
                f"{self.location.uri} holds a checkpoint of a job that has not finished (still "
                f"running, or its driver stopped): {len(manifest.tasks):,} tasks committed so "
                "far. Queries see only those (open the Dataset again once the job has "
                "committed to see them all); if its driver stopped, run the same job again to "
                "finish it."),
                stacklevel=2)
        elif warn_if_partial and len(manifest.tasks) < (manifest.elements or 0):
            warnings.warn(PartialOutputWarning(
                f"{self.location.uri} holds the output of {len(manifest.tasks):,} of its job's "
                f"{manifest.elements:,} tasks: the others failed, or a deadline or quorum cut "
                "them off. Queries see only these; run the same job again to write the rest."),
                stacklevel=2)
        self.manifest: Manifest = manifest
        self._unconnected()

    def _unconnected(self) -> None:
        """No DuckDB yet: the first query makes or borrows one in this process."""
        self._database: Any = None  # DuckDB with the view ``data``, made on the first query
        self._private = False  # whether _database is this Dataset's own (see the docstring)
        self._lock = threading.Lock()
        _opened.add(self)

    def __reduce__(self) -> tuple:
        """A Dataset sent elsewhere (captured by a worker's fn, pickled) is a Dataset of the
        version it opened, whatever a subclass adds (large, and this process's); its DuckDB
        is this process's, so the copy makes its own, without what a statement that was not
        a SELECT changed here."""
        return _sent, (self.location, self.manifest)

    def __copy__(self) -> Dataset:
        """A copy in this process keeps what a subclass adds; its DuckDB is its own."""
        return self._copied(self._public())

    def __deepcopy__(self, memo: dict) -> Dataset:
        return self._copied(copy.deepcopy(self._public(), memo))

    def _public(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_")}

    def _copied(self, state: dict[str, Any]) -> Dataset:
        copied = object.__new__(type(self))
        copied.__dict__.update(state)
        copied._unconnected()
        return copied

    def version_key(self) -> tuple:
        """What names the version this Dataset reads, for good: the output, however its path
        was spelled, and the version's files (their names are never reused); not the keys
        that read it, which rotate. (A job whose fn uses the Dataset depends on this.)"""
        return (self.location.is_s3, self.location.root, self.manifest.job,
                tuple(file.path for file in self.manifest.files), self.manifest.empty_tasks)

    @property
    def schema(self) -> pa.Schema:
        return self.manifest.schema

    @property
    def version(self) -> int | None:
        """The Delta table's version this Dataset reads (None: a job whose tasks gave no
        columns, which makes no table)."""
        return self.manifest.version

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
            try:
                return _run(self._connection_for(query), query, params)
            except (duckdb.Error, OSError) as exc:
                self._raise_if_stale(exc)
                raise

    def _connection_for(self, query: str) -> Any:
        """The connection to run ``query`` on: a cursor of the shared database while every
        statement so far only read, this Dataset's own database from the first that did not."""
        if not self._private and not _reads_only(query):
            if self._database is not None:
                self._database.close()
                self._database = None
            self._private = True
        if self._database is None:
            self._database = _database(private=self._private, data=self)
        return self._database

    def _raise_if_stale(self, exc: BaseException) -> None:
        """A query that failed because the files of this version were removed (a newer
        commit, RETAIN_S ago) says so, rather than with a file-not-found."""
        from reduce_sql.commit import RETAIN_S

        try:
            infos = self.location.filesystem.get_file_info(self.files)
        except OSError:  # the store cannot say (keys refused, say): the query's error stands
            return
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
        return (f"Dataset({self.location.uri!r}, version {self.version}: {self.num_rows:,} "
                f"rows in {len(self.manifest.files)} files, columns {self.schema.names})")


def query(sql: str, params: dict[str, Any] | list[Any] | None = None,
          **tables: str | os.PathLike | Dataset) -> pa.Table:
    """Run ``sql`` with each keyword a table: ``query("… FROM evals JOIN other …",
    evals="out/evals", other="s3://bucket/other")``."""
    if not tables:
        raise ValueError('name at least one table: query(sql, data="path/or/s3://uri")')
    if isinstance(params, str | os.PathLike | Dataset):
        raise TypeError("params= holds the values of the query's $name or ? placeholders, so "
                        "no table can be named params: name it otherwise")
    database = _database(private=not _reads_only(sql),
                         **{name: source if isinstance(source, Dataset) else Dataset(source)
                            for name, source in tables.items()})
    try:
        return _run(database, sql, params)
    finally:
        database.close()


def _run(connection: Any, sql: str, params: dict[str, Any] | list[Any] | None) -> pa.Table:
    """The result of ``sql``'s last statement; a table of no columns for one that has none
    (SET, CREATE, INSERT ...), whatever the DuckDB: 1.x returns no relation for those, 2.x a
    status column, "Success" or the "Count" of rows written."""
    from duckdb import StatementType as Kind

    relation = connection.sql(sql, params=params)
    if relation is None or (
            relation.columns in (["Success"], ["Count"])
            and connection.extract_statements(sql)[-1].type
            not in (Kind.SELECT, Kind.EXPLAIN, Kind.PRAGMA, Kind.CALL)):  # answers, always
        return pa.table({})
    return relation.to_arrow_table()


def _database(*, private: bool, **tables: Dataset) -> Any:
    """A connection in which each dataset is a temporary view (or a registered scan) by name:
    a DuckDB of its own if ``private``, else a cursor of the process's shared one."""
    connection, held = (_new_database(), {}) if private else _shared_cursor()
    for name, dataset in tables.items():
        _attach(connection, held, name, dataset)
    return connection


def _new_database() -> Any:
    import duckdb

    connection = duckdb.connect()
    # GLOBAL, or a cursor (a fresh Dataset) would run without them: a plain SET is the
    # connection's own. The footers stay parsed; DuckDB 1.3-1.5 also reads a query's column
    # chunks whole and keeps them in its external file cache (evictable, up to its memory
    # limit) for local files as for S3: one horizon of bench_reduce's clustered output 20 ms
    # -> 11-14 ms from a fresh Dataset. Both caches check each file's mtime.
    connection.execute("SET GLOBAL parquet_metadata_cache = true")
    if int(duckdb.__version__.split(".")[0]) < 2:
        connection.execute("SET GLOBAL prefetch_all_parquet_files = true")
    else:
        # 2.0 prefetches every column chunk a query touches whole, so a filter read the whole
        # column though the page index excludes most of its pages (one horizon of a group of
        # 104,000 rows: 849 kB read; 50 kB without prefetching). bench_reduce's 20.8 M rows,
        # warm, either way: MAPE by model x horizon 0.17-0.20 s, one horizon 0.010-0.014 s.
        connection.execute("SET GLOBAL disable_parquet_prefetching = true")
    return connection


def _attach(connection: Any, held: dict[str, tuple], name: str, dataset: Dataset) -> None:
    if not name.isidentifier():
        raise ValueError(f"table names must be identifiers, got {name!r}")
    if not dataset.schema.names:
        raise NoDatasetError(
            f"{dataset.location.uri} has no columns: no task returned a table with any (or "
            "there were no tasks), so there is nothing to query")
    files, location = dataset.files, dataset.location
    if not files:  # zero tasks committed rows: an empty table that still has the columns
        connection.register(name, dataset.schema.empty_table())
        return
    if location.is_s3:
        if not httpfs.enable(connection, location, held):  # registered: the connection's own
            connection.register(name, _arrow_dataset(location, tuple(files), dataset.schema))
            return
        files = [f"s3://{path}" for path in files]
    # TEMP: seen by this connection only, not by the shared database's other cursors
    paths = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
    connection.execute(
        f'CREATE TEMP VIEW "{name}" AS SELECT * FROM read_parquet([{paths}], '
        f"union_by_name = {not dataset.manifest.uniform})")


@functools.lru_cache(maxsize=16)
def _arrow_dataset(location: Location, files: tuple[str, ...], schema: pa.Schema) -> Any:
    """A pyarrow dataset over one version's files in an object store, shared by the Datasets
    that open it: its fragments keep the footers they read (one request each per process, not
    per query), which is safe as the list of a version and each file are never changed."""
    import pyarrow.dataset as pads

    return pads.dataset(list(files), schema=schema, format="parquet",
                        filesystem=location.filesystem)


_shared_lock = threading.Lock()
#: process id -> the shared database's first connection, and the S3 roots it holds keys for
#: (httpfs.enable)
_shared: dict[int, tuple[Any, dict[str, tuple]]] = {}
#: Every Dataset of the process, so a forked child can disconnect them all
_opened: weakref.WeakSet[Dataset] = weakref.WeakSet()


def _never_destroyed(objects: Any) -> None:
    """Keep the parent's DuckDB objects in a forked child alive for good, even through the
    interpreter's exit: DuckDB 2.0 crashes the child (SIGSEGV, or SIGABRT once it queried)
    when it destroys a database made before the fork, whose threads it lacks."""
    for each in objects:
        if each is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(each))


def _unconnected_after_fork() -> None:
    """In a forked child: threads of the parent may have held these locks as it forked, and
    the DuckDB connections are the parent's; the child makes its own."""
    global _shared_lock
    _shared_lock = threading.Lock()
    _never_destroyed(database for database, _ in _shared.values())
    _shared.clear()
    for dataset in list(_opened):
        _never_destroyed([dataset._database])
        dataset._unconnected()


os.register_at_fork(after_in_child=_unconnected_after_fork)


def _shared_database() -> tuple[Any, dict[str, tuple]]:
    """This process's shared DuckDB and its S3 roots; call with _shared_lock held. Keyed by
    process id: a forked child inherits the parent's database without the threads that run it,
    so makes its own."""
    pid = os.getpid()
    if pid not in _shared:
        _shared[pid] = _new_database(), {}
    return _shared[pid]


def _shared_cursor() -> tuple[Any, dict[str, tuple]]:
    """A new connection to the shared database (its own temporary views, the same caches and
    secrets) and the database's S3 roots."""
    with _shared_lock:
        database, held = _shared_database()
        return database.cursor(), held


def _reads_only(query: str) -> bool:
    """Whether every statement of ``query`` is a SELECT (DESCRIBE, SUMMARIZE, VALUES and FROM
    count as such), which leaves the database's catalog and settings as they were."""
    import duckdb

    with _shared_lock:
        statements = _shared_database()[0].extract_statements(query)
    return bool(statements) and all(
        statement.type == duckdb.StatementType.SELECT for statement in statements)


def _sent(location: Location, manifest: Manifest) -> Dataset:
    """A Dataset unpickled: the version it was opened at, on a DuckDB of its own."""
    dataset = object.__new__(Dataset)
    dataset.location, dataset.manifest = location, manifest
    dataset._unconnected()
    return dataset
