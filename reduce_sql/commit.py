"""The driver's side: claim an output for a job, then commit the attempts it accepted. The
output is a Delta Lake table (delta.py): each commit is one Delta transaction.

    begin(location, job)  ─▶ takes the output's lease (one writer at a time, lease.py); refuses
                              another job's output (unless overwrite); says which tasks a
                              previous run of this same job already committed (resume)
    checkpoint(location, parts so far) ─▶ while the job runs: a version marked unfinished, so
                                a driver that dies resumes from it; nothing merged or deleted
    commit(location, parts) ─▶ unify schemas ─▶ rewrite files whose column types differ from
                                the table's ─▶ compact small files ─▶ one transaction ─▶
                                delete files no reader can hold

Readers read a version's files only, so a file no version lists (a failed, duplicate, abandoned
or killed attempt's, or a partial one) is never read: each task's rows count exactly once. A
file a task's attempt shares with other elements of its batch is committed only if every one of
them is accepted from it (the worker makes that so). What a resume needs (the job,
which tasks each file holds, tasks with no rows, whether the job finished) each commit records
beside its transaction (delta.STATE_KEY).

Snapshot isolation: a reader keeps the version it opened. A file an earlier version listed and
the new one does not (merged by compaction, or replaced with overwrite) is *retired*: removed
from the table (a merge's with data_change false: its rows stay), and deleted by the first
commit RETAIN_S later, as Delta's vacuum would. Files no version ever listed are deleted at once.
Only files gpar named are ever deleted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from reduce_sql import delta
from reduce_sql.errors import NoDatasetError, OutputExistsError, SchemaConflictError
from reduce_sql.lease import LEASE, Lease
from reduce_sql.parts import DATA_DIR, FILE_ROWS, Part
from reduce_sql.store import Location
from reduce_sql.tables import write_table

JOB_MARKER = "_gpar_job.json"
#: Where outputs of an earlier format kept their state: such an output is refused, by name
OLD_MANIFEST = "_gpar_manifest.json"

#: Compact when a commit would leave more files than this. Not a benchmark's: measured once,
#: DuckDB on 2 cores: each file costs a query ~0.13 ms, and small files' small row groups
#: 20-30 %: 2 M rows were queried in 0.068 s from 1 file, 0.09 s from 16 or 64, 0.17 s from 400.
COMPACT_ABOVE_FILES = 16

#: Rows a compacted file collects before another is started: as many as a batch's file holds.
COMPACT_FILE_ROWS = FILE_ROWS

#: Files with fewer rows are small: a compaction merges only these. Batches write files of up to
#: reduce_sql.parts.FILE_ROWS; a file much smaller is mostly per-file cost to a query.
SMALL_FILE_ROWS = FILE_ROWS // 8

#: Seconds a retired file is kept for readers that opened an older version (Delta Lake's
#: VACUUM keeps 7 days by default; an analyst's session is hours, and the disk is theirs).
RETAIN_S = 3600.0


@dataclass(frozen=True)
class CommittedFile:
    """A file a version lists, and the tasks whose rows it holds."""

    path: str
    tasks: tuple[int, ...]
    rows: int
    bytes: int
    stats: str = ""  # its Delta statistics (tables.delta_stats)


@dataclass(frozen=True)
class Manifest:
    """The committed state of an output, one version of its table: what readers read, and
    what a resume skips."""

    job: str
    schema: pa.Schema
    files: tuple[CommittedFile, ...]
    empty_tasks: tuple[int, ...] = ()  # tasks that committed zero rows: no file to read
    finished: bool = True  # False: a checkpoint of a job still running, or whose driver died
    retired: tuple[tuple[str, float], ...] = ()  # (path, since): kept for older readers
    #: every file holds exactly ``schema``'s columns, in its order: a reader need not match
    #: them by name, which costs DuckDB ~2 ms a query (bench/bench_reduce.py)
    uniform: bool = False
    elements: int | None = None  # the job's tasks (len(xs))
    version: int | None = None  # the table's version; None: not committed, or no table
    table: delta.TableVersion | None = dataclasses.field(  # what it was read from
        default=None, repr=False, compare=False)

    @property
    def tasks(self) -> set[int]:
        return {task for file in self.files for task in file.tasks} | set(self.empty_tasks)

    @property
    def rows(self) -> int:
        return sum(file.rows for file in self.files)

    def state(self) -> dict[str, Any]:
        """What a commit records beside its transaction; the files come from the table."""
        return {"format": 2, "job": self.job,
                "tasks": {file.path: _as_ranges(file.tasks) for file in self.files},
                "empty_tasks": _as_ranges(self.empty_tasks), "finished": self.finished,
                "retired": [list(each) for each in self.retired], "uniform": self.uniform,
                "elements": self.elements}

    @classmethod
    def of(cls, state: dict[str, Any], schema: pa.Schema,
           table: delta.TableVersion | None = None) -> Manifest:
        tasks = state.get("tasks", {})
        files = tuple(CommittedFile(file.path, _from_ranges(tasks.get(file.path, [])),
                                    file.rows, file.size, file.stats)
                      for file in (table.files if table else ()))
        return cls(state["job"], schema, files, _from_ranges(state["empty_tasks"]),
                   state["finished"], tuple((path, since) for path, since in state["retired"]),
                   state["uniform"], state["elements"], table.version if table else None,
                   table)


RunAll = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def _serially(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(item) for item in items]


def read_manifest(location: Location, version: int | None = None) -> Manifest | None:
    """The output's ``version`` (default: the latest), or None where no job committed."""
    if location.read_bytes(OLD_MANIFEST) is not None and not delta.is_table(location):
        raise NoDatasetError(
            f"{location.uri} holds an output of an earlier gpar, which kept its own manifest; "
            "outputs are Delta Lake tables now: write it again (the same apply with "
            "overwrite=True)")
    manifest = _read_version(location, version)
    return None if manifest is None else dataclasses.replace(manifest, table=None)


def _read_version(location: Location, version: int | None = None) -> Manifest | None:
    """read_manifest, where an output of the earlier format is read as none (overwrite)."""
    table = delta.read(location, version)
    if table is not None:
        state = table.state or {"job": "", "empty_tasks": [], "finished": True, "retired": [],
                                "uniform": False, "elements": None}  # another writer's table
        return Manifest.of(state, table.schema, table)
    marker = location.read_bytes(JOB_MARKER)  # no table: a job whose tasks gave no columns
    state = json.loads(marker).get("state") if marker else None
    return None if state is None or version is not None else Manifest.of(state, pa.schema([]))


class Claim(NamedTuple):
    """What begin() found: an earlier run of this job to resume, or an output it replaces."""

    previous: Manifest | None  # what an earlier run of this job committed
    replacing: bool  # overwrite=True over a committed output: write no checkpoint over it
    lease: Lease  # this driver's, until it calls lease.release()


def begin(location: Location, job: str, overwrite: bool = False) -> Claim:
    """Claim ``location`` for ``job``; release ``Claim.lease`` when the job ends.

    Another job's output, or a non-empty location reduce_sql did not write, is refused unless
    ``overwrite``; with it, the earlier output stays readable until this job commits. An output
    another driver is writing is refused (OutputBusyError).
    """
    if location.is_file:
        raise OutputExistsError(f"{location.uri} is a file; output= takes a directory or an "
                                "s3:// prefix")
    lease = Lease.acquire(location)
    try:
        return _claim(location, job, overwrite, lease)
    except BaseException:
        lease.release()
        raise


def _claim(location: Location, job: str, overwrite: bool, lease: Lease) -> Claim:
    if overwrite:  # whatever is there, even an output of an earlier format, is replaced
        replacing = (delta.is_table(location) or
                     location.read_bytes(OLD_MANIFEST) is not None)
        _mark(location, {"job": job})
        return Claim(None, replacing, lease)
    manifest = read_manifest(location)
    marker = location.read_bytes(JOB_MARKER)
    if manifest is not None:
        owner = manifest.job
    else:  # a run that never committed still says whose output this is
        owner = json.loads(marker)["job"] if marker else None
    if owner == "":
        raise OutputExistsError(
            f"{location.uri} is a Delta table whose files a writer other than gpar changed "
            "(an optimize, a delete, an update), so which tasks it holds is unknown: pass "
            "overwrite=True to write the job again, or choose another output")
    if owner is not None and owner != job:
        raise OutputExistsError(
            f"{location.uri} holds the output of another job (different input, function, "
            "arguments, or globals and helpers fn reads); pass overwrite=True to replace "
            "it, or choose another output")
    if owner is None and set(location.files()) - {LEASE}:
        raise OutputExistsError(
            f"{location.uri} is not empty and holds no gpar output; choose an empty or new "
            "location, or pass overwrite=True (files gpar did not write are left alone)")
    if marker is None:
        _mark(location, {"job": job})
    return Claim(manifest if manifest is not None and manifest.job == job else None, False,
                 lease)


def _mark(location: Location, content: dict[str, Any]) -> None:
    location.write_atomically(JOB_MARKER, json.dumps(content).encode())


def commit(location: Location, job: str, parts: Sequence[Part],
           previous: Manifest | None = None, run_all: RunAll | None = None,
           lease: Lease | None = None, cluster_by: Sequence[str] = (),
           elements: int | None = None) -> Manifest:
    """Commit ``parts`` (one accepted attempt per task) on top of ``previous``; see the module.

    ``run_all(fn, groups)`` returns ``[fn(g) for g in groups]`` (default: here, in turn); gpar
    passes one that merges small files on the cluster, in parallel and without the rows
    passing through the driver. Merged files are sorted by ``cluster_by``.

    A task that returned zero rows is committed without a file: its column types, which no
    value backs, never conflict with another task's (unless no task has rows). Small files
    ``previous`` lists are merged with the new ones (a run resumed from a checkpoint). A task
    whose file also holds a task accepted from another attempt is not committed (the worker
    never writes such a file; if one appears, the next run of the job writes the task again).
    ``elements``, the job's task count, lets a reader tell a partial output from a whole one.
    """
    current = _read_version(location)  # the version readers may hold now
    manifest = _accepted(location, job, parts, previous, elements, current, run_all,
                         cluster_by)
    manifest = _write(location, _retiring(current, manifest), lease, current)
    if len(manifest.files) > COMPACT_ABOVE_FILES:  # a transaction of its own: no data change
        try:
            files = _compacted(location, job, manifest, run_all or _serially, cluster_by)
        except Exception:  # a merge is an optimization: the files stay as they are
            logging.getLogger(__name__).warning(
                "merging the small files of %s failed; they stay as they are", location.uri,
                exc_info=True)
            files = manifest.files
        if files != manifest.files:
            current = _read_version(location)
            manifest = _write(location, _retiring(current, dataclasses.replace(
                manifest, files=files)), lease, current)
    location.delete([*leftovers(location, manifest, time.time()), OLD_MANIFEST])
    return manifest


def _retiring(current: Manifest | None, manifest: Manifest) -> Manifest:
    """``manifest`` with the files ``current`` lists and it does not retired from now, and
    those retired RETAIN_S ago forgotten (the commit deletes them)."""
    now = time.time()
    return dataclasses.replace(manifest, retired=tuple(
        each for each in _retired(current, manifest.files, now) if now - each[1] < RETAIN_S))


def leftovers(location: Location, manifest: Manifest, now: float) -> list[str]:
    """Files gpar wrote under data/ that ``manifest`` neither lists nor keeps RETAIN_S for
    readers of an earlier version: abandoned attempts', and versions retired long enough."""
    kept = {file.path for file in manifest.files} | {
        path for path, retired_at in manifest.retired if now - retired_at < RETAIN_S}
    return [path for path in location.files(DATA_DIR)
            if path not in kept and _written_by_gpar(path)]


def checkpoint(location: Location, job: str, parts: Sequence[Part],
               previous: Manifest | None = None, lease: Lease | None = None,
               elements: int | None = None) -> Manifest:
    """Commit the ``parts`` accepted so far, marked unfinished, while the job runs.

    A driver that dies then loses only what it accepted after this; the next run of the job
    resumes from here. Nothing is merged or deleted: files of running attempts are not listed
    yet, and the job's commit() does both at its end.
    """
    current = _read_version(location)
    manifest = _accepted(location, job, parts, previous, elements, current)
    retired = _retired(current, manifest.files, time.time())
    manifest = dataclasses.replace(manifest, finished=False, retired=retired)
    return _write(location, manifest, lease, current)


def _write(location: Location, manifest: Manifest, lease: Lease | None,
           current: Manifest | None) -> Manifest:
    """``manifest`` committed on top of ``current``, the version read before: one transaction,
    with the job as Delta's idempotent writer; returned with its version. An add is a data
    change unless every task of its file was committed already (a merge, a rewrite)."""
    if lease is not None:
        lease.check()
    table = current.table if current is not None else None
    if not manifest.schema.names and table is None:  # Delta needs a column: the state waits
        _mark(location, {"job": manifest.job, "state": manifest.state()})  # in the marker
        return manifest
    schema = manifest.schema if manifest.schema.names else table.schema  # else: no rows now
    merging = current is not None and current.job == manifest.job  # else: replacing it
    committed = current.tasks if merging else set()
    present = {file.path for file in table.files} if table is not None else set()
    adds = [delta.AddedFile(file.path, file.bytes, file.rows, file.stats,
                            data_change=not set(file.tasks) <= committed)
            for file in manifest.files if file.path not in present]
    removes: list[tuple[delta.AddedFile, bool]] = []
    if table is not None:
        listed, kept = {file.path for file in manifest.files}, manifest.tasks
        tasks = {file.path: file.tasks for file in current.files}
        removes = [(file, not (merging and set(tasks.get(file.path, ())) <= kept))
                   for file in table.files if file.path not in listed]
    if (table is not None and not adds and not removes and current.state() == manifest.state()
            and delta.same_columns(schema, table.schema)):
        return dataclasses.replace(manifest, version=current.version, table=None)  # as it is
    app_version = table.app_version(manifest.job) + 1 if table is not None else 1
    version = delta.commit(location, schema, adds, removes, manifest.state(),
                           (manifest.job, app_version), table, merging)
    return dataclasses.replace(manifest, version=version, table=None)


def _retired(current: Manifest | None, files: Sequence[CommittedFile],
             now: float) -> tuple[tuple[str, float], ...]:
    """``current``'s retired files, and those it lists that ``files`` does not (since now)."""
    if current is None:
        return ()
    listed = {file.path for file in files}
    return (*((path, since) for path, since in current.retired if path not in listed),
            *((file.path, now) for file in current.files if file.path not in listed))


def _accepted(location: Location, job: str, parts: Sequence[Part], previous: Manifest | None,
              elements: int | None, current: Manifest | None,
              run_all: RunAll | None = None, cluster_by: Sequence[str] = ()) -> Manifest:
    """The manifest committing ``parts`` on top of what the job committed: the table now
    (``current``) when it is this job's, which holds what its checkpoints committed, else
    ``previous``. Their schemas unified; the committed files and each new file every one of
    whose tasks was accepted from it; every task committed without rows. A new file whose
    column types differ from the unified schema's is rewritten in it (Delta readers such as
    polars refuse an int column in a float table); if the committed files' types differ, all
    of them are, under new names (a version never removes and adds one path)."""
    base = current if current is not None and current.job == job else previous
    done = base.tasks if base is not None else set()
    parts = [part for part in parts if part.task not in done]  # a checkpoint committed these
    with_rows = [part for part in parts if part.rows] or (
        [] if base and base.schema.names else list(parts))
    earlier = [base.schema] if base and base.schema.names else []
    # tasks mostly return one schema: read and unify each distinct one once
    distinct = {schema: pa.ipc.read_schema(pa.py_buffer(schema))
                for schema in dict.fromkeys(part.schema for part in with_rows)}
    schemas = earlier + list(distinct.values())
    by_file: dict[str, list[Part]] = {}
    for part in parts:
        if part.rows:
            by_file.setdefault(part.path, []).append(part)
    new = [(CommittedFile(path, tuple(p.task for p in group), sum(p.rows for p in group),
                          sum(p.bytes for p in group), group[0].stats), group[0].schema)
           for path, group in by_file.items() if len(group) == group[0].file_tasks]
    empty = (*(base.empty_tasks if base else ()), *(p.task for p in parts if not p.rows))
    schema = _unified(schemas, with_rows)
    wanted = delta.column_types(schema) if schema.names else {}
    retyped_schemas = {key: _retyped(each, wanted) for key, each in distinct.items()}
    committed_files = base.files if base else ()
    retyped = [*(committed_files if base is not None and base.schema.names
                 and _retyped(base.schema, wanted) else ()),
               *(file for file, key in new if retyped_schemas[key])]
    files = [*committed_files, *(file for file, _ in new)]
    uniform = (all(distinct[key].equals(schema, check_metadata=False) for key in
                   {key for _, key in new})
               and not retyped
               and (not committed_files
                    or (base.uniform and base.schema.equals(schema))))
    if retyped:
        rewrite = functools.partial(merge_files, location, job, schema, tuple(cluster_by))
        rewritten = dict(zip((file.path for file in retyped),
                             (run_all or _serially)(rewrite, [[file] for file in retyped]),
                             strict=True))
        files = [rewritten.get(file.path, file) for file in files]
    return Manifest(job, schema, tuple(files), empty, uniform=uniform, elements=elements)


def _retyped(schema: pa.Schema, wanted: dict[str, str]) -> bool:
    """Whether a column of ``schema`` has another type than ``wanted`` (the table's columns'
    delta.column_types), as Delta sees types."""
    return any(wanted.get(name, kind) != kind
               for name, kind in delta.column_types(schema).items())


#: The names gpar gives files under data/: a task attempt's part (parts.py), a merge (below).
#: pyarrow and polars also write part-0.parquet and the like, so a prefix is not enough.
GPAR_FILE_NAME = re.compile(
    r"(part-[0-9a-z]{12}-\d{9,}-a\d+-[0-9a-f]{8}|compact-[0-9a-z]{12}-[0-9a-f]{12})\.parquet")


def _written_by_gpar(path: str) -> bool:
    """Files under data/ that gpar named: the only ones a commit deletes, so a user's own files
    in an output directory are never touched."""
    return GPAR_FILE_NAME.fullmatch(path.rsplit("/", 1)[-1]) is not None


def _unified(schemas: list[pa.Schema], parts: Sequence[Part]) -> pa.Schema:
    """One schema for all tasks (``parts`` name them in an error): missing columns become
    nulls, numbers widen; else an error."""
    if not schemas:
        return pa.schema([])
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise SchemaConflictError(
            f"the tasks' tables disagree on a column's type: {exc}. Make fn return the same "
            f"type for each column in every task (tasks {_tasks_by_type(parts)}); this run "
            "committed nothing more, its written files are removed on the next run") from None
    return unified.remove_metadata()  # pandas' metadata describes one task's frame, not all


def _tasks_by_type(parts: Sequence[Part]) -> str:
    """Which tasks returned which type, for the first column that is not numeric everywhere."""
    schemas = [pa.ipc.read_schema(pa.py_buffer(part.schema)) for part in parts]
    for name in dict.fromkeys(n for s in schemas for n in s.names):
        by_type: dict[pa.DataType, list[int]] = {}
        for part, schema in zip(parts, schemas, strict=True):
            if name in schema.names:
                by_type.setdefault(schema.field(name).type, []).append(part.task)
        numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in by_type)
        if len(by_type) > 1 and not numeric:
            return "; ".join(f"{name!r} is {kind} in {tasks[:5]}"
                             for kind, tasks in by_type.items())
    return "see the message above"


def _compacted(location: Location, job: str, manifest: Manifest, run_all: RunAll,
               cluster_by: Sequence[str]) -> tuple[CommittedFile, ...]:
    """Small files merged into files of about COMPACT_FILE_ROWS rows, in task order.

    Other files stay as they are: their rows are written once. The originals are deleted only
    after the manifest naming the compacted files is written, so a crash here loses nothing.
    """
    files = manifest.files
    small = sorted((f for f in files if f.rows < SMALL_FILE_ROWS), key=lambda f: f.tasks)
    groups: list[list[CommittedFile]] = [[]]
    for file in small:
        if groups[-1] and sum(f.rows for f in groups[-1]) + file.rows > COMPACT_FILE_ROWS:
            groups.append([])
        groups[-1].append(file)
    groups = [group for group in groups if len(group) > 1]  # a file alone stays as it is
    merged = {file.path for group in groups for file in group}
    merge = functools.partial(merge_files, location, job, manifest.schema, tuple(cluster_by))
    return (*(f for f in files if f.path not in merged), *run_all(merge, groups))


def merge_files(location: Location, job: str, schema: pa.Schema, cluster_by: tuple[str, ...],
                group: list[CommittedFile]) -> CommittedFile:
    """One compacted file holding ``group``'s rows, conformed to ``schema``."""
    table = pa.concat_tables(
        [_conformed(_read(location, file.path), schema) for file in group])
    path = f"{DATA_DIR}/compact-{job[:12]}-{uuid.uuid4().hex[:12]}.parquet"
    size, stats = write_table(table, location.path(path), location.filesystem, cluster_by)
    tasks = tuple(task for file in group for task in file.tasks)
    return CommittedFile(path, tasks, table.num_rows, size, stats)


def _read(location: Location, path: str) -> pa.Table:
    return pq.read_table(location.path(path), filesystem=location.filesystem)


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with every column of ``schema``, in its order and type (nulls where missing)."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            columns.append(table.column(field.name).cast(field.type))
        except pa.ArrowInvalid as exc:  # an int beyond 2**53 in a column widened to float
            raise SchemaConflictError(
                f"column {field.name!r} is {table.schema.field(field.name).type} in some tasks "
                f"and {field.type} in others, and its values do not all fit the latter: {exc}. "
                "Make fn return one type for it in every task") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _as_ranges(tasks: Sequence[int]) -> list[list[int]]:
    """Sorted task numbers as [start, stop) pairs: a compacted file's thousands stay short."""
    ranges: list[list[int]] = []
    for task in sorted(tasks):
        if ranges and ranges[-1][1] == task:
            ranges[-1][1] = task + 1
        else:
            ranges.append([task, task + 1])
    return ranges


def _from_ranges(ranges: list[list[int]]) -> tuple[int, ...]:
    return tuple(task for start, stop in ranges for task in range(start, stop))
