"""What fn may return with output=, turned into an Arrow table, and how it is written.

The Parquet options come from bench/bench_reduce.py's measurements of DuckDB over mapper
outputs ((d) row groups, (e) Parquet options): dictionary encoding and zstd only where they pay
(non-float columns), floats plain and uncompressed, row groups of 131,072 rows, a page index.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reduce_sql.errors import OutputTypeError

#: Rows per row group: a filter on sorted columns (cluster_by) skips whole groups by their
#: statistics, in every reader. bench/bench_reduce.py (d), 20.8 M rows on 2 cores: one horizon
#: of the clustered output 0.011-0.016 s in groups of 131,072 rows for DuckDB 1.5 and polars,
#: 0.03-0.04 s in groups of a million (which only a reader of page indexes, DuckDB 2.0, makes
#: up for); full scans alike with either size, plain or clustered; 32k-64k no better.
ROW_GROUP_ROWS = 131_072

#: Rows of a clustered file sorted and written at once, whole row groups: a batch's file
#: (parts.FILE_ROWS, a million) in one. Each take gathers its rows from the whole file, so a
#: take per row group cost 9 % more of a clustered write (one core, 832k rows: 0.160 s, 0.147).
SORTED_ROWS = 8 * ROW_GROUP_ROWS

#: Rows per data page, each page's min/max written in a page index: DuckDB 2.0 reads the index
#: and skips the pages a filter excludes within a group (bench (d): one horizon 0.010 s with
#: it). Writing the index costs under 3 % of a file's write.
ROWS_PER_PAGE = 16_384

#: Floats plain and uncompressed, the other columns dictionary-encoded and zstd: measured floats
#: do not compress, and decoding is what a scan pays for. bench/bench_reduce.py (e) writes the
#: 20.8 M evaluation rows so and otherwise: in three runs this was the fastest for DuckDB and
#: polars alike; LZ4 on the floats saved no space and cost 5-25 %, byte-stream-split (10 %
#: smaller) more, pyarrow's defaults most.
FLOAT_COMPRESSION = "none"
COMPRESSION = "zstd"

ACCEPTED = "a pandas DataFrame, a pyarrow Table, a dict of columns or a list of row dicts"


def as_table(value: Any) -> pa.Table:
    """fn's return value as a table, or OutputTypeError saying what it was and what is accepted."""
    table = _stored(_converted(value))
    unreadable = [name for name in table.column_names if "\0" in name]
    if unreadable:  # DuckDB cuts names at NUL: such a column could never be queried
        raise OutputTypeError(f"column names must not contain NUL characters: {unreadable!r}")
    return table


def _converted(value: Any) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    try:
        if isinstance(value, pa.RecordBatch):
            return pa.Table.from_batches([value])
        if type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas"):
            return pa.Table.from_pandas(_named_index_as_columns(value), preserve_index=False)
        if isinstance(value, dict):
            single = [name for name, column in value.items() if isinstance(column, str | bytes)
                      or not isinstance(column, Iterable)]
            if single:
                raise ValueError(
                    f"a dict of columns maps each name to a list of values, but "
                    f"{single[0]!r} holds one value ({value[single[0]]!r}): for one row, "
                    f"return {{{single[0]!r}: [{value[single[0]]!r}], ...}}")
            return pa.table(value)
        if isinstance(value, list) and all(isinstance(row, dict) for row in value):
            return pa.Table.from_pylist(value)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise OutputTypeError(
            f"fn's {type(value).__name__} could not be made a table: {exc}") from exc
    raise OutputTypeError(
        f"with output=, fn must return {ACCEPTED}; it returned "
        f"{type(value).__qualname__} {_preview(value)}")


def _named_index_as_columns(frame: Any) -> Any:
    """A frame whose named index levels (set_index("week"), groupby keys) are columns: they
    are data. Unnamed levels are row numbers (a RangeIndex, what a filter leaves): dropped."""
    named = [name for name in frame.index.names if name is not None]
    copies = [name for name in named if name in frame.columns  # set_index(..., drop=False)
              and frame[[name]].set_index(name).index.equals(frame.index.get_level_values(name))]
    clashing = [name for name in named if name in frame.columns and name not in copies]
    if clashing:
        raise ValueError(f"index level {clashing[0]!r} has the name of a column; rename one "
                         "(df.rename_axis(...)) or drop the index (df.reset_index(drop=True))")
    kept = [name for name in named if name not in copies]
    return frame.reset_index(level=kept) if kept else frame


def _stored(table: pa.Table) -> pa.Table:
    """The table in types a Delta Lake table holds, casting where no value changes:
    dictionaries (a pandas categorical) as their values, so one task's categorical and
    another's strings unify (Parquet dictionary-encodes them on disk all the same); times in
    microseconds (s, ms, and ns that are whole microseconds) and zones as UTC, the same
    instants;
    unsigned integers as the next wider signed type, half floats as floats. A type Delta
    cannot hold, or a value the cast would change, is an OutputTypeError naming the column."""
    for index, field in enumerate(table.schema):
        try:
            kind = _storable(field.type)
        except TypeError as exc:
            raise OutputTypeError(f"column {field.name!r} is {field.type}, which a Delta Lake "
                                  f"table cannot hold: {exc}") from None
        if kind == field.type:
            continue
        column = table.column(index)
        try:
            column = column.cast(kind)
        except pa.ArrowInvalid as exc:
            hint = (": round them to microseconds (Series.dt.floor('us'))"
                    if pa.types.is_timestamp(field.type) else "")
            raise OutputTypeError(f"column {field.name!r} ({field.type}) holds values a Delta "
                                  f"Lake table's {kind} cannot hold ({exc}){hint}") from None
        except pa.ArrowException as exc:
            raise OutputTypeError(f"column {field.name!r} ({field.type}) could not be stored "
                                  f"as {kind}: {exc}") from exc
        table = table.set_column(index, field.with_type(kind), column)
    return table


#: Unsigned integers as the signed type that holds every value (uint64: those up to 2**63)
_SIGNED = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
           pa.uint64(): pa.int64()}


def _storable(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(kind):
        return _storable(kind.value_type)
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", "UTC" if kind.tz else None)
    if kind in _SIGNED:
        return _SIGNED[kind]
    if pa.types.is_float16(kind):
        return pa.float32()
    if (pa.types.is_time(kind) or pa.types.is_duration(kind) or pa.types.is_interval(kind)
            or pa.types.is_decimal256(kind)):
        raise TypeError("store it as text, or as a number (seconds, say)")
    if pa.types.is_union(kind) or pa.types.is_run_end_encoded(kind):
        raise TypeError("store each kind of value in a column of its own")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = kind.value_field.with_type(_storable(kind.value_type))
        return pa.list_(item) if pa.types.is_list(kind) else pa.large_list(item)
    if pa.types.is_fixed_size_list(kind):
        item = kind.value_field.with_type(_storable(kind.value_type))
        return pa.list_(item, kind.list_size)
    if pa.types.is_map(kind):
        return pa.map_(kind.key_field.with_type(_storable(kind.key_type)),
                       kind.item_field.with_type(_storable(kind.item_type)),
                       kind.keys_sorted)
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_storable(field.type)) for field in kind])
    return kind


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Written(NamedTuple):
    """A file write_table wrote: its size, and its Delta statistics (see delta_stats)."""

    size: int
    stats: str


def write_table(table: pa.Table, path: str, filesystem: Any,
                cluster_by: Sequence[str] = ()) -> Written:
    """Write ``table`` as one Parquet file with the tuned options.

    With ``cluster_by``, the rows are sorted by those columns first, so each row group and each
    page holds a narrow range of them, and a query filtering on them skips most groups by their
    statistics (and, in DuckDB 2.0 and later, most pages by the page index).
    """
    options = parquet_options(table.schema)
    footer: list[pq.FileMetaData] = []
    with filesystem.open_output_stream(path) as stream:
        with pq.ParquetWriter(stream, table.schema, metadata_collector=footer,
                              **options) as writer:
            if not cluster_by:
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            else:
                # Sorted SORTED_ROWS at a time: a worker holds that many sorted rows, not a
                # sorted copy of a larger file. One chunk first: taking rows across a batch's
                # chunks (one per element) costs 1.2-1.5 x as much.
                table = table.combine_chunks()
                order = pc.sort_indices(table, [(name, "ascending") for name in cluster_by])
                for start in range(0, len(order), SORTED_ROWS):
                    rows = table.take(order[start:start + SORTED_ROWS])
                    writer.write_table(rows, row_group_size=ROW_GROUP_ROWS)
        return Written(stream.tell(), delta_stats(footer[0], table.schema))


def delta_stats(footer: pq.FileMetaData, schema: pa.Schema) -> str:
    """The file's statistics as a Delta Lake add action carries them: its rows, and per
    top-level column its nulls and, for integers, text and dates, its minimum and maximum,
    from the row groups' own. Readers skip files by them, so a column whose bounds are
    missing from any group with values, or whose type has no exact JSON form here, gets
    none."""
    by_column: dict[str, list[Any]] = {}
    for group in range(footer.num_row_groups):
        row_group = footer.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            by_column.setdefault(chunk.path_in_schema, []).append(chunk.statistics)
    low, high, nulls = {}, {}, {}
    for field in schema:
        statistics = by_column.get(field.name)
        if not statistics or any(each is None or not each.has_null_count for each in statistics):
            continue
        nulls[field.name] = sum(each.null_count for each in statistics)
        kind = field.type
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind)
                or pa.types.is_large_string(kind) or pa.types.is_date32(kind)):
            continue  # floats too: Parquet's bounds leave NaN out, which some readers sort last
        if any(each.num_values and not each.has_min_max for each in statistics):
            continue  # a group with values but no bounds (pyarrow drops long strings')
        bounded = [each for each in statistics if each.has_min_max]
        if bounded:
            low[field.name] = _json_value(min(each.min for each in bounded))
            high[field.name] = _json_value(max(each.max for each in bounded))
    return json.dumps({"numRecords": footer.num_rows, "minValues": low, "maxValues": high,
                       "nullCount": nulls})


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.date) else value


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """pyarrow.parquet.write_table's options for a table of ``schema`` (see the constants)."""
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    others = [f.name for f in schema if not pa.types.is_floating(f.type)]
    nested = any(pa.types.is_nested(field.type) for field in schema)
    compression = COMPRESSION if nested else {  # per column names only top-level columns
        name: FLOAT_COMPRESSION if name in floats else COMPRESSION for name in schema.names}
    return {"compression": compression, "use_dictionary": others,
            "write_page_index": True, "max_rows_per_page": ROWS_PER_PAGE}
