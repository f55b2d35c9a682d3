"""apply(output=) and reduce_sql against pandas and against other file layouts.

Evaluation-shaped rows (series, model, training_end, forecast_date, horizon, forecast, actual,
error), as the forecasting demo writes them. (a) the map: gpar.apply writing Parquet on the
workers and committing, against the same job returning DataFrames to the driver and writing one
file there with pandas; (b) the reduce: MAPE by model × horizon with DuckDB over the committed
dataset, over the uncompacted per-task files, and with pandas; (c) query time against the number
of files holding the same rows, which sets COMPACT_ABOVE_FILES; (d) the Parquet options of
reduce_sql.tables against pyarrow's defaults.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from timing import timed

import gpar
from reduce_sql import commit as commit_module
from reduce_sql.tables import write_table

TASKS = 400
ROWS_PER_TASK = 5_000  # 2 M rows in all
MODELS = ["snaive", "drift", "fourier", "ses", "theta", "ensemble"]
REPEATS = 5
MAPE = ("SELECT model, horizon, 100 * avg(abs(error)) AS mape FROM data "
        "GROUP BY model, horizon ORDER BY model, horizon")


def evaluation_rows(task: int) -> pd.DataFrame:
    """One series' rows: every model × training end × horizon."""
    rng = np.random.default_rng(task)
    n = ROWS_PER_TASK
    actual = rng.uniform(10, 1000, n)
    forecast = actual * rng.normal(1, 0.1, n)
    return pd.DataFrame({
        "series": f"M{task:04d}",
        "model": np.array(MODELS)[np.arange(n) % len(MODELS)],
        "training_end": pd.Timestamp("2000-01-01") + pd.to_timedelta(np.arange(n) // 108, "W"),
        "forecast_date": pd.Timestamp("2000-02-01") + pd.to_timedelta(np.arange(n) % 18, "W"),
        "horizon": (np.arange(n) // len(MODELS)) % 18 + 1,
        "forecast": forecast,
        "actual": actual,
        "error": (forecast - actual) / actual,
    })


def pandas_map(out: Path) -> None:
    frames = gpar.apply(range(TASKS), evaluation_rows, progress=False)
    pd.concat(frames).to_parquet(out / "all.parquet")


def pandas_mape(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path, columns=["model", "horizon", "error"])
    return (frame.assign(e=frame.error.abs()).groupby(["model", "horizon"]).e.mean() * 100)


def duckdb_over(files: list[str]) -> float:
    connection = duckdb.connect()
    connection.read_parquet(files).create_view("data")
    return timed(lambda: connection.sql(MAPE).to_arrow_table(), REPEATS)


def files_holding(table: pa.Table, count: int, directory: Path, **options) -> list[str]:
    directory.mkdir()
    step = -(-table.num_rows // count)
    paths = []
    for i in range(count):
        path = directory / f"{i}.parquet"
        chunk = table.slice(i * step, step)
        if options:
            pq.write_table(chunk, path, **options)
        else:
            write_table(chunk, str(path), pa.fs.LocalFileSystem())
        paths.append(str(path))
    return paths


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gpar-bench-reduce-"))
    try:
        gpar.apply(range(4), evaluation_rows, progress=False)  # warm the cluster
        rows = TASKS * ROWS_PER_TASK
        map_s = {}
        for round_ in range(3):  # interleaved: a slow spell hits both
            started = time.perf_counter()
            dataset = gpar.apply(range(TASKS), evaluation_rows, output=work / f"gpar{round_}",
                                 progress=False)
            map_s.setdefault("gpar", []).append(time.perf_counter() - started)
            (work / f"pandas{round_}").mkdir()
            started = time.perf_counter()
            pandas_map(work / f"pandas{round_}")
            map_s.setdefault("pandas", []).append(time.perf_counter() - started)
        gpar_map, pandas_map_s = (statistics.median(map_s[k]) for k in ("gpar", "pandas"))

        saved = commit_module.COMPACT_ABOVE_FILES
        commit_module.COMPACT_ABOVE_FILES = 10**9  # the same job, files left as the tasks wrote
        uncompacted = gpar.apply(range(TASKS), evaluation_rows, output=work / "uncompacted",
                                 progress=False)
        commit_module.COMPACT_ABOVE_FILES = saved

        duck = timed(lambda: dataset.sql(MAPE), REPEATS)
        duck_many = timed(lambda: uncompacted.sql(MAPE), REPEATS)
        pandas_q = timed(lambda: pandas_mape(work / "pandas0" / "all.parquet"), REPEATS)
        check = dataset.sql(MAPE).to_pandas().set_index(["model", "horizon"]).mape
        assert np.allclose(check.sort_index().to_numpy(),
                           pandas_mape(work / "pandas0" / "all.parquet").sort_index().to_numpy())

        table = dataset.to_arrow()
        by_count = {count: duckdb_over(files_holding(table, count, work / f"n{count}"))
                    for count in (1, 4, 16, 64, 400)}
        tuned = files_holding(table, 1, work / "tuned")
        default = files_holding(table, 1, work / "default", compression="snappy")
        sizes = {name: Path(paths[0]).stat().st_size for name, paths in
                 (("tuned", tuned), ("default", default))}
        layout_s = {"tuned": duckdb_over(tuned), "default": duckdb_over(default)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("## Outputs and the SQL reduce (`bench/bench_reduce.py`)\n")
    print(f"{TASKS} tasks × {ROWS_PER_TASK:,} evaluation rows = {rows / 1e6:.0f} M rows "
          "(series, model, training_end, forecast_date, horizon, forecast, actual, error); "
          f"medians of {REPEATS} warm queries (map: of 3 interleaved rounds).\n")
    print("### (a) The map: rows written as Parquet\n")
    print("| method | seconds | gpar is N× faster |\n|---|---|---|")
    print("| gpar.apply(output=): workers write, the commit merges small files on the cluster | "
          f"{gpar_map:.2f} | — |")
    print(f"| gpar.apply returning DataFrames, pandas concat + to_parquet on the driver | "
          f"{pandas_map_s:.2f} | {pandas_map_s / gpar_map:.2f} |\n")
    print("On one machine the driver path wins: every row is written twice by gpar (a file per "
          "task, then the merge), once by pandas. gpar's path keeps rows off the driver, so it "
          "is the one that still works when they do not fit there, and on an object store.\n")
    print("### (b) The reduce: MAPE by model × horizon\n")
    print("| method | seconds | DuckDB on the committed dataset is N× faster |\n|---|---|---|")
    print(f"| Dataset.sql (DuckDB, committed: {len(dataset.manifest.files)} compacted file) | "
          f"{duck:.3f} | — |")
    print(f"| Dataset.sql (DuckDB, {TASKS} per-task files, no compaction) | {duck_many:.3f} | "
          f"{duck_many / duck:.2f} |")
    print(f"| pandas read_parquet + groupby (one file) | {pandas_q:.3f} | {pandas_q / duck:.2f} |"
          "\n")
    print("DuckDB's and pandas' MAPE tables agree (checked in the run).\n")
    print("### (c) Query time against the number of files holding the same rows\n")
    print("| files | seconds | ms per extra file |\n|---|---|---|")
    for count, seconds in by_count.items():
        per_file = (seconds - by_count[1]) / (count - 1) * 1000 if count > 1 else 0
        print(f"| {count} | {seconds:.3f} | {per_file:.2f} |")
    print(f"\nCOMPACT_ABOVE_FILES = {commit_module.COMPACT_ABOVE_FILES}: below it the files add "
          "little to a query; above it a commit merges small files into ~1 M-row files.\n")
    print("### (d) Parquet options, one file of the same rows\n")
    print("| options | MB | query seconds |\n|---|---|---|")
    print(f"| reduce_sql (zstd, dictionary on non-floats, byte-stream-split floats) | "
          f"{sizes['tuned'] / 1e6:.1f} | {layout_s['tuned']:.3f} |")
    print(f"| pyarrow defaults (snappy, dictionary everywhere) | {sizes['default'] / 1e6:.1f} | "
          f"{layout_s['default']:.3f} |")
    gpar.shutdown()


if __name__ == "__main__":
    main()
