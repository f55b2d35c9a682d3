"""The worker's side: each attempt of a batch writes its elements' tables, once, into its own files.

    worker: Sink.open() ─▶ BatchWriter: add(position, value) as each element finishes
                           flush() ─▶ data/part-<job>-<first task>-a<attempt>-<random>.parquet
                                      (the tables since the last flush, sorted by cluster_by)
            └─▶ a Part per element (path, task, rows, …) travels back instead of the rows

A batch's elements share a file, so a job writes files of the size queries want (few, large,
sorted) without writing any row twice. A name is unique to the attempt and a random suffix, so a
retried, backup or abandoned attempt never overwrites another's file; which files count is decided
by the driver's commit alone, and it takes a file whole or not at all (``Part.file_tasks``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from reduce_sql.errors import OutputTypeError
from reduce_sql.store import Location
from reduce_sql.tables import as_table, write_table

DATA_DIR = "data"

#: A batch writes a file once it holds this many rows (or FILE_BYTES): a file of about this size
#: is what queries want (bench/bench_reduce.py), and it bounds what a worker holds in memory.
FILE_ROWS = 1_000_000
FILE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Part:
    """One element's rows in a file its attempt wrote, standing in the results for the rows."""

    path: str | None  # relative to the output root; None when the element returned zero rows
    task: int
    rows: int
    bytes: int  # the element's share of the file
    schema: bytes  # the file's Arrow schema, serialized: the commit unifies without reading
    file_tasks: int = 1  # elements with rows in the file: a commit takes all of them or none
    stats: str = ""  # the file's statistics, as its Delta add action carries them


@dataclass(frozen=True)
class Sink:
    """Where one launched batch writes: ``tasks[position]`` is the task of each element, and
    each file is sorted by the ``cluster_by`` columns."""

    location: Location
    job: str
    attempt: int
    tasks: Sequence[int]
    cluster_by: tuple[str, ...] = ()

    def open(self) -> BatchWriter:
        return BatchWriter(self)


class BatchWriter:
    """The tables of a batch's finished elements, held until ``write`` puts them in files: one
    file for those held together, one of its own for each held ``alone``.

    Not thread-safe: the worker that runs the batch decides when to write, and serializes.
    """

    def __init__(self, sink: Sink):
        self.sink = sink
        self._files: list[list[tuple[int, pa.Table]]] = []  # the tables of each file to write
        self._shared = False  # whether the last of _files takes more tables
        self.rows = 0  # rows held
        self.nbytes = 0
        self.oldest_held: float | None = None  # when the first table held now was added
        self.alone_held = False

    @property
    def full(self) -> bool:
        return self.rows >= FILE_ROWS or self.nbytes >= FILE_BYTES

    def table_for(self, value: Any) -> pa.Table:
        """fn's value as a table; OutputTypeError if it is none, or lacks a cluster_by column."""
        table = as_table(value)
        missing = [name for name in self.sink.cluster_by if name not in table.column_names]
        if missing:
            raise OutputTypeError(
                f"cluster_by names {missing}, which fn's table lacks (its columns: "
                f"{table.column_names}); return them in every table or change cluster_by")
        unsortable = [field for field in table.schema
                      if field.name in self.sink.cluster_by and pa.types.is_nested(field.type)]
        if unsortable:
            raise OutputTypeError(
                f"cluster_by names {unsortable[0].name!r}, whose values ({unsortable[0].type}) "
                "cannot be sorted: cluster by columns of numbers, text or dates")
        return table

    def hold(self, position: int, table: pa.Table, alone: bool = False) -> None:
        if not self._files:
            self.oldest_held = time.time()
        if alone or not self._shared:
            self._files.append([])
        self._files[-1].append((position, table))
        self._shared = not alone
        self.alone_held = self.alone_held or alone
        self.rows += table.num_rows
        self.nbytes += table.nbytes

    def take(self) -> list[list[tuple[int, pa.Table]]]:
        """What is held, file by file, now no longer held."""
        files, self._files, self._shared = self._files, [], False
        self.rows = self.nbytes = 0
        self.oldest_held, self.alone_held = None, False
        return files

    def write(self, files: list[list[tuple[int, pa.Table]]]
              ) -> list[tuple[int, Part | Exception]]:
        """Write each of ``files`` (from take): (position, its Part, or why it could not be
        written). Tables whose schemas cannot be concatenated are written one file each."""
        written = []
        for held in files:
            try:
                table = pa.concat_tables([table for _, table in held],
                                         promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid):  # the commit names the conflict
                written += [each for one in held for each in self._write_file([one], one[1])]
            else:
                written += self._write_file(held, table)
        return written

    def _write_file(self, held: list[tuple[int, pa.Table]],
                    table: pa.Table) -> list[tuple[int, Part | Exception]]:
        with_rows = [position for position, each in held if each.num_rows]
        size, stats, path = 0, "", None
        if with_rows:
            sink, location = self.sink, self.sink.location
            path = (f"{DATA_DIR}/part-{sink.job[:12]}-{sink.tasks[with_rows[0]]:09d}-"
                    f"a{sink.attempt}-{uuid.uuid4().hex[:8]}.parquet")
            try:
                if not location.is_s3:
                    location.filesystem.create_dir(location.path(DATA_DIR), recursive=True)
                size, stats = write_table(table, location.path(path), location.filesystem,
                                          sink.cluster_by)
            except Exception as exc:  # storage may recover: the elements are retried
                return [(position, exc) for position, _ in held]
        schema = table.schema.serialize().to_pybytes()
        total, before, parts = max(table.num_rows, 1), 0, []
        for position, each in held:  # shares by rows that add up to the file's size exactly
            share = size * (before + each.num_rows) // total - size * before // total
            before += each.num_rows
            parts.append((position, Part(path if each.num_rows else None,
                                         self.sink.tasks[position], each.num_rows, share,
                                         schema, len(with_rows), stats)))
        return parts
