"""An output as a Delta Lake table (delta-rs): each reduce_sql commit is one Delta transaction.

    read(location, version)  ─▶ that version's files, schema, and the reduce_sql state its
                                commit recorded (custom metadata of the commit, "reduce_sql")
    commit(location, …)      ─▶ add the files workers wrote, remove replaced ones, with the
                                job as the application id of Delta's idempotent writers

Every engine that reads Delta (polars, deltalake, DuckDB's delta, Spark) then reads exactly
the version's rows; a plain Parquet glob of the directory does not (removed files stay until
RETAIN_S has passed, as in any Delta table).

delta-rs' runtime cannot serve a process forked after it started (it panics): a forked child
reads through a fresh interpreter instead, and never commits.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from reduce_sql.errors import OutputBusyError
from reduce_sql.store import Location

#: The custom metadata key under which a commit records reduce_sql's state of its version.
STATE_KEY = "reduce_sql"

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


@dataclass(frozen=True)
class TableVersion:
    version: int
    schema: pa.Schema
    files: tuple[AddedFile, ...]  # their stats left out unless read(with_stats=True)
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
    names = {"endpoint_override": "AWS_ENDPOINT_URL", "region": "AWS_REGION",
             "access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY",
             "session_token": "AWS_SESSION_TOKEN"}
    options = {names[name]: value for name, value in location.s3_options}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def is_table(location: Location) -> bool:
    import pyarrow.fs as pafs

    log = location.filesystem.get_file_info(location.path("_delta_log"))
    return log.type == pafs.FileType.Directory


def read(location: Location, version: int | None = None,
         with_stats: bool = False) -> TableVersion | None:
    """The table's ``version`` (default: the latest), or None when there is no table."""
    if _forked_from_user:
        return _read_in_fresh_interpreter(location, version, with_stats)
    if not is_table(location):
        return None
    from deltalake import DeltaTable

    table = DeltaTable(uri(location), version=version, storage_options=storage_options(location))
    actions = pa.table(table.get_add_actions())
    if with_stats:
        files = tuple(AddedFile(row["path"], row["size_bytes"], row["num_records"] or 0,
                                _stats_json(row)) for row in actions.to_pylist())
    else:
        columns = actions.select(["path", "size_bytes", "num_records"]).to_pydict()
        files = tuple(AddedFile(path, size, rows or 0, "") for path, size, rows in zip(
            columns["path"], columns["size_bytes"], columns["num_records"], strict=True))
    at = table.version()
    return TableVersion(at, pa.schema(table.schema().to_arrow()), files, _state(location, at),
                        table)


#: Commits looked back through for reduce_sql's state (another writer's commits may follow it)
STATE_LOOKBACK = 100


def _state(location: Location, version: int) -> dict | None:
    """reduce_sql's state as of ``version``: what the newest reduce_sql commit up to it
    recorded, read from that commit's entry in the log (deltalake's history() numbers
    versions from the latest, whatever version the table was opened at)."""
    for at in range(version, max(-1, version - STATE_LOOKBACK), -1):
        content = location.read_bytes(f"_delta_log/{at:020d}.json")
        if content is None:  # cleaned up: too old to say
            return None
        for line in content.splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info and STATE_KEY in info:
                return json.loads(info[STATE_KEY])
    return None


def commit(location: Location, schema: pa.Schema, adds: list[AddedFile],
           removes: list[tuple[AddedFile, bool]], state: dict, app: tuple[str, int],
           current: TableVersion | None) -> None:
    """One transaction on top of ``current`` (None: create the table): ``adds`` added, each of
    ``removes`` removed (with whether its rows leave the table: a merge's do not), ``state``
    recorded, and the job ``app`` = (id, version) as Delta's idempotent writer. A schema
    other than the table's replaces it: the table is overwritten with ``adds``, which must
    then name every file. Another writer's commit since ``current`` fails it (no retry)."""
    from deltalake import Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
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
    properties = CommitProperties(custom_metadata={STATE_KEY: json.dumps(state)},
                                  app_transactions=[Transaction(*app)], max_commit_retries=0)
    add_actions = [AddAction(file.path, file.size, {}, now, True, file.stats) for file in adds]
    try:
        if current is None:
            create_table_with_add_actions(uri(location), Schema.from_arrow(schema), add_actions,
                                          mode="error",
                                          storage_options=storage_options(location),
                                          commit_properties=properties)
            return
        table = current.table
        if not same_columns(schema, current.schema):
            table.create_write_transaction(add_actions, mode="overwrite", schema=schema,
                                           commit_properties=properties)
            return
        remove_actions = [RemoveAction(file.path, data_change, now, file.size)
                          for file, data_change in removes]
        table.create_write_transaction([*remove_actions, *add_actions], mode="append",
                                       schema=schema, commit_properties=properties)
    except DeltaError as exc:
        if isinstance(exc, CommitFailedError) or (current is None and is_table(location)):
            raise OutputBusyError(
                f"{location.uri}: another writer committed to the output since this one read "
                f"it ({exc}); nothing of this commit was written: run the job again once the "
                "other has ended") from exc
        raise


def _stats_json(row: dict) -> str:
    """A file's statistics as its add action carried them (deltalake parses them apart)."""
    def present(values: dict | None) -> dict:
        return {name: value.isoformat() if isinstance(value, datetime.date) else value
                for name, value in (values or {}).items() if value is not None}

    return json.dumps({"numRecords": row["num_records"], "minValues": present(row.get("min")),
                       "maxValues": present(row.get("max")),
                       "nullCount": present(row.get("null_count"))})


def _read_in_fresh_interpreter(location: Location, version: int | None,
                               with_stats: bool) -> TableVersion | None:
    """read(), in a spawned process: deltalake would panic in this forked one. The version
    comes back without its DeltaTable, which only a commit uses."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_read_unforked, location, version, with_stats).result()


def _read_unforked(location: Location, version: int | None,
                   with_stats: bool) -> TableVersion | None:
    found = read(location, version, with_stats)
    return None if found is None else dataclasses.replace(found, table=None)
