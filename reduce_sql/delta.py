"""An output as a Delta Lake table (delta-rs): each reduce_sql commit is one Delta transaction.

    read(location, version)  ─▶ that version's files, schema, and the reduce_sql state its
                                commit recorded (custom metadata of the commit, "reduce_sql")
    commit(location, …)      ─▶ add the files workers wrote, remove replaced ones, with the
                                job as the application id of Delta's idempotent writers

Every engine that reads Delta (polars, deltalake, DuckDB's delta, Spark) then reads exactly
the version's rows; a plain Parquet glob of the directory does not (removed files stay until
RETAIN_S has passed, as in any Delta table).

delta-rs' runtime cannot serve a process forked after it started (it panics): a forked child
reads through a fresh interpreter instead, and never commits. A commit that adds columns
declares them first (a metadata-only version), and one that changes a column's type names
every file anew: a version never removes and adds the same path, which Delta readers other
than delta-rs would resolve by dropping the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from reduce_sql.errors import OutputBusyError
from reduce_sql.store import S3_OPTIONS_FROM_ENV, Location

#: The custom metadata key under which a commit records reduce_sql's state of its version,
#: and the one naming the commit itself
STATE_KEY, TOKEN_KEY = "reduce_sql", "reduce_sql_commit"

#: Whether this process was forked from one that had loaded deltalake (see the module).
_forked_from_user = False


def _note_fork_in_child() -> None:
    global _forked_from_user
    _forked_from_user = _forked_from_user or "deltalake" in sys.modules


os.register_at_fork(after_in_child=_note_fork_in_child)


@dataclass(frozen=True)
class AddedFile:
    """A data file of a version, relative to the table's root."""

    path: str
    size: int
    rows: int
    stats: str
    data_change: bool = True  # as an add: its rows are new to the table (not a merge's)


@dataclass(frozen=True)
class TableVersion:
    version: int
    schema: pa.Schema
    files: tuple[AddedFile, ...]  # their stats left out: a commit never adds them again
    state: dict | None  # what the newest reduce_sql commit up to this version recorded
    table: Any = field(repr=False, compare=False)  # deltalake's DeltaTable at this version

    def app_version(self, app_id: str) -> int:
        """The version ``app_id`` last committed as Delta's idempotent writer (0: never)."""
        return self.table.transaction_version(app_id) or 0


def column_types(schema: pa.Schema) -> dict[str, str]:
    """Each column's type as Delta Lake names it: Arrow types it holds alike (large and small
    strings, list item names) are the same here."""
    from deltalake import Schema

    return {field["name"]: json.dumps(field["type"])
            for field in json.loads(Schema.from_arrow(schema).to_json())["fields"]}


def same_columns(schema: pa.Schema, other: pa.Schema) -> bool:
    """Whether a table of ``schema`` has ``other``'s columns, in its order, as Delta sees them:
    a commit of another schema writes the table anew."""
    return list(column_types(schema).items()) == list(column_types(other).items())


def uri(location: Location) -> str:
    return f"s3://{location.root}" if location.is_s3 else location.root


def storage_options(location: Location) -> dict[str, str] | None:
    """delta-rs' options for the store: the ones the driver resolved (store.Location)."""
    if not location.is_s3:
        return None
    options = {S3_OPTIONS_FROM_ENV[name]: value for name, value in location.s3_options}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def is_table(location: Location) -> bool:
    import pyarrow.fs as pafs

    log = location.filesystem.get_file_info(location.path("_delta_log"))
    return log.type == pafs.FileType.Directory


def read(location: Location, version: int | None = None) -> TableVersion | None:
    """The table's ``version`` (default: the latest), or None when there is no table. Its
    state is None when a writer other than reduce_sql changed the files since (an optimize, a
    delete): which tasks they hold is then unknown."""
    if _forked_from_user:
        return _read_in_fresh_interpreter(location, version)
    if not is_table(location):
        return None
    from deltalake import DeltaTable

    try:
        table = DeltaTable(uri(location), version=version,
                           storage_options=storage_options(location))
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        return _read_in_fresh_interpreter(location, version)  # forked: see the module
    actions = pa.table(table.get_add_actions()).select(["path", "size_bytes", "num_records"])
    columns = actions.to_pydict()
    files = tuple(AddedFile(path, size, rows or 0, "") for path, size, rows in zip(
        columns["path"], columns["size_bytes"], columns["num_records"], strict=True))
    at = table.version()
    state = _state(location, at)
    if state is not None and set(state["tasks"]) != {file.path for file in files}:
        state = None
    return TableVersion(at, pa.schema(table.schema().to_arrow()), files, state, table)


#: Commits looked back through for reduce_sql's state (another writer's commits may follow it)
STATE_LOOKBACK = 100


def _state(location: Location, version: int) -> dict | None:
    """reduce_sql's state as of ``version``: what the newest reduce_sql commit up to it
    recorded, read from that commit's entry in the log (deltalake's history() numbers
    versions from the latest, whatever version the table was opened at)."""
    for at in range(version, max(-1, version - STATE_LOOKBACK), -1):
        info = _commit_info(location, at)
        if info is None:  # cleaned up: too old to say
            return None
        if STATE_KEY in info:
            return json.loads(info[STATE_KEY])
    return None


def _commit_info(location: Location, version: int) -> dict | None:
    """The commitInfo of ``version``'s log entry ({} if it has none), None if there is none."""
    content = location.read_bytes(f"_delta_log/{version:020d}.json")
    if content is None:
        return None
    for line in content.splitlines():
        info = json.loads(line).get("commitInfo") if line.strip() else None
        if info is not None:
            return info
    return {}


def commit(location: Location, schema: pa.Schema, adds: list[AddedFile],
           removes: list[tuple[AddedFile, bool]], state: dict, app: tuple[str, int],
           current: TableVersion | None, merging: bool = True) -> int:
    """One transaction on top of ``current`` (None: create the table): ``adds`` added, each of
    ``removes`` removed (with whether its rows leave the table: a merge's do not), ``state``
    recorded, and the job ``app`` = (id, version) as Delta's idempotent writer; returns the
    new version. Columns added by the job (``merging``: the table is its own) are declared
    first; any other change of schema overwrites the table with ``adds``, which must then
    name every file, none of them the table's. Another writer's commit since ``current``
    fails it (no retry)."""
    from deltalake import Schema
    from deltalake.exceptions import DeltaError
    from deltalake.transaction import (
        AddAction,
        CommitProperties,
        RemoveAction,
        Transaction,
        create_table_with_add_actions,
    )

    if _forked_from_user:
        raise RuntimeError(
            "deltalake, which commits outputs, cannot run in a process forked from one that "
            "loaded it (a multiprocessing child on Linux): start such children with "
            "multiprocessing.get_context('spawn'), or run apply(output=...) in the parent")
    now = int(time.time() * 1000)
    token = uuid.uuid4().hex  # which commit is this one, whoever else writes as the job
    properties = CommitProperties(
        custom_metadata={STATE_KEY: json.dumps(state), TOKEN_KEY: token},
        app_transactions=[Transaction(*app)], max_commit_retries=0)
    add_actions = [AddAction(file.path, file.size, {}, now, file.data_change, file.stats)
                   for file in adds]
    try:
        if current is None:
            create_table_with_add_actions(uri(location), Schema.from_arrow(schema), add_actions,
                                          mode="error",
                                          storage_options=storage_options(location),
                                          commit_properties=properties)
            return 0
        table = current.table
        if not same_columns(schema, current.schema):
            overwritten = _change_columns(current, schema, adds, add_actions, properties,
                                          merging)
            if overwritten is not None:
                return overwritten
        remove_actions = [RemoveAction(file.path, data_change, now, file.size)
                          for file, data_change in removes]
        base = table.version()  # after the columns' version, if any
        table.create_write_transaction([*remove_actions, *add_actions], mode="append",
                                       schema=schema, commit_properties=properties)
        return base + 1
    except DeltaError as exc:
        return _failed(location, current, token, exc)


def _failed(location: Location, current: TableVersion | None, token: str,
            exc: Exception) -> int:
    """The version a commit that raised ``exc`` made after all (the store answered with an
    error, yet the commit is in the log), else OutputBusyError if another writer won."""
    from deltalake.exceptions import CommitFailedError

    if isinstance(exc, CommitFailedError) and current is not None:
        landed = _landed(location, current.version, token)
        if landed is not None:
            return landed
    if isinstance(exc, CommitFailedError) or (current is None and is_table(location)):
        raise OutputBusyError(
            f"{location.uri}: another writer committed to the output since this one read "
            f"it ({exc}); nothing of this commit was written: run the job again once the "
            "other has ended") from exc
    raise exc


def _change_columns(current: TableVersion, schema: pa.Schema, adds: list[AddedFile],
                    add_actions: list, properties: Any, merging: bool) -> int | None:
    """The table's columns become ``schema``'s: columns the job added are declared (None:
    the commit goes on); any other change overwrites the table with ``adds``, every file new
    (the new version)."""
    from deltalake import Schema

    table = current.table
    old, new = column_types(current.schema), column_types(schema)
    if merging and list(new.items())[:len(old)] == list(old.items()):  # added: first
        table.alter.add_columns(list(Schema.from_arrow(pa.schema(
            [field for field in schema if field.name not in old])).fields))
        return None
    if {file.path for file in adds} & {file.path for file in current.files}:
        raise RuntimeError("a commit changing a column's type must name every file anew")
    base = table.version()
    table.create_write_transaction(add_actions, mode="overwrite", schema=schema,
                                   commit_properties=properties)
    return base + 1  # no retries: the next version or none


def _landed(location: Location, after: int, token: str) -> int | None:
    """The version of the commit ``token`` names if it is in the log after all (its answer
    lost on the way back), else None."""
    for version in itertools.count(after + 1):
        info = _commit_info(location, version)
        if info is None:
            return None
        if info.get(TOKEN_KEY) == token:
            return version


def _read_in_fresh_interpreter(location: Location, version: int | None) -> TableVersion | None:
    """read(), in a new interpreter (``python -m reduce_sql.delta``), not a multiprocessing
    spawn, which would run the user's script again: deltalake would panic in this forked
    process. The version comes back without its DeltaTable, which only a commit uses."""
    completed = subprocess.run([sys.executable, "-m", "reduce_sql.delta"], check=True,
                               input=pickle.dumps((location, version)),
                               capture_output=True)
    return pickle.loads(completed.stdout)


if __name__ == "__main__":  # _read_in_fresh_interpreter's other end
    from reduce_sql import delta  # this module by its name: what it returns unpickles there

    found = delta.read(*pickle.loads(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(pickle.dumps(
        None if found is None else dataclasses.replace(found, table=None)))
