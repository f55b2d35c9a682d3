"""``reduce-sql URI "SELECT … FROM data …"``: query a committed output from the shell.

    reduce-sql out/ "SELECT model, avg(abs(error)) AS mape FROM data GROUP BY model"
    reduce-sql s3://bucket/evals "SELECT …" -o mape.csv      (or .parquet)
    reduce-sql out/ --schema
"""

from __future__ import annotations

import argparse
import sys

import pyarrow as pa

from reduce_sql.dataset import Dataset
from reduce_sql.errors import ReduceSqlError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reduce-sql", description="Run DuckDB SQL over a gpar output, in place; the "
        "output is the table named data.")
    parser.add_argument("uri", help="the output: a directory or s3://bucket/prefix")
    parser.add_argument("sql", nargs="?", help='the query, e.g. "SELECT count(*) FROM data"')
    parser.add_argument("-o", "--output", help="write the result to this .csv or .parquet file")
    parser.add_argument("--schema", action="store_true", help="describe the dataset and exit")
    parser.add_argument("--max-rows", type=int, default=50, help="rows to print (default 50)")
    args = parser.parse_args(argv)
    if not args.schema and not args.sql:
        parser.error("give a query, or --schema")
    if args.output and not args.output.endswith((".csv", ".parquet")):
        parser.error("-o must name a .csv or .parquet file")
    try:
        dataset = Dataset(args.uri)
        if args.schema:
            print(describe(dataset))
            return 0
        result = dataset.sql(args.sql)
    except (ReduceSqlError, ValueError, OSError) as exc:
        print(f"reduce-sql: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # DuckDB's errors (a typo in the SQL) carry their own message
        if type(exc).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
            raise
        print(f"reduce-sql: {exc}", file=sys.stderr)
        return 1
    if args.output:
        _write(result, args.output)
        print(f"{result.num_rows:,} rows written to {args.output}")
    else:
        print(render(result, args.max_rows))
    return 0


def describe(dataset: Dataset) -> str:
    manifest = dataset.manifest
    size = sum(file.bytes for file in manifest.files)
    lines = [f"{dataset.location.uri}: {dataset.num_rows:,} rows in {len(manifest.files)} "
             f"files ({size / 1e6:.1f} MB), {len(manifest.tasks):,} tasks committed"]
    lines += [f"  {field.name}: {field.type}" for field in dataset.schema]
    return "\n".join(lines)


def render(table: pa.Table, max_rows: int) -> str:
    shown = table.slice(0, max_rows).to_pandas().to_string(index=False)
    more = table.num_rows - max_rows
    return shown + (f"\n… {more:,} more rows (use -o to write them all)" if more > 0 else "")


def _write(table: pa.Table, path: str) -> None:
    if path.endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)


if __name__ == "__main__":
    sys.exit(main())
