"""A mapper for output= tests: task i's table is known in advance, faults come from a table.

    table entries (besides faults.py's): "partial_exit" leaves a truncated Parquet file where a
    killed writer would and dies.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from faults import claim_attempt, perform

from reduce_sql.parts import DATA_DIR

ROWS = 4


def expected_table(task: int) -> pd.DataFrame:
    return pd.DataFrame({"task": [task] * ROWS, "k": list(range(ROWS)),
                         "value": [task * 1000.0 + k for k in range(ROWS)]})


def mapper(task: int, table: dict, marker_dir: str, location) -> pd.DataFrame:
    attempt = claim_attempt(marker_dir, task)
    action = table.get((task, attempt))
    if action == "partial_exit":
        whole = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(expected_table(task)), whole)
        content = whole.getvalue().to_pybytes()
        name = location.path(
            f"{DATA_DIR}/part-killedkilled-{task:09d}-a{attempt}-00000000.parquet")
        location.filesystem.create_dir(location.path(DATA_DIR), recursive=True)
        with location.filesystem.open_output_stream(name) as stream:
            stream.write(content[: len(content) // 2])
        os._exit(1)
    perform(action, task, attempt)
    return expected_table(task)


def write_late(location, task: int) -> str:
    """Write, after the commit, the whole file an abandoned attempt of ``task`` (say, on a node
    cut off from the cluster, which Ray cannot kill) would write late, named as gpar names
    parts; return its name."""
    name = f"{DATA_DIR}/part-latelatelate-{task:09d}-a0-00000000.parquet"
    table = pa.table({"task": [-1] * 999, "k": list(range(999)), "value": [1.0] * 999})
    with location.filesystem.open_output_stream(location.path(name)) as stream:
        pq.write_table(table, stream)
    return name
