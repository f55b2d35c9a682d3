"""The worker's side: each attempt of a task writes its table under a name of its own.

    worker: Sink.write(position, value) ─▶ data/part-<job>-<task>-a<attempt>-<random>.parquet
            └─▶ Part (path, task, rows, bytes, schema) travels back instead of the rows

A name is unique to (task, attempt) and a random suffix, so a retried, backup or abandoned attempt
never overwrites another's file; which of them counts is decided by the driver's commit alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reduce_sql.store import Location
from reduce_sql.tables import as_table, write_table

DATA_DIR = "data"


@dataclass(frozen=True)
class Part:
    """One file written by one attempt, standing in the results for the rows it holds."""

    path: str  # relative to the output root
    task: int
    rows: int
    bytes: int
    schema: bytes  # the Arrow schema, serialized: the commit unifies without reading files


@dataclass(frozen=True)
class Sink:
    """Where one launched batch writes: ``tasks[position]`` is the task of each element."""

    location: Location
    job: str
    attempt: int
    tasks: Sequence[int]

    def write(self, position: int, value: Any) -> Part:
        table = as_table(value)
        task = self.tasks[position]
        path = (f"{DATA_DIR}/part-{self.job[:12]}-{task:09d}-a{self.attempt}-"
                f"{uuid.uuid4().hex[:8]}.parquet")
        location = self.location
        if not location.is_s3:
            location.filesystem.create_dir(location.path(DATA_DIR), recursive=True)
        size = write_table(table, location.path(path), location.filesystem)
        return Part(path, task, table.num_rows, size, table.schema.serialize().to_pybytes())
