"""apply(output=) and reduce_sql at the paper's scale, against a one-pass floor, polars and pandas.

The paper's forecast evaluation produced more than 20 million rows. Here: 1,000 tasks, each
returning 20,800 evaluation rows as a pandas DataFrame (8 models × 50 training ends × 52
horizons: series, model, training_end, forecast_date, horizon, forecast, actual, error), 20.8 M
rows in all.

(a) The write: gpar.apply(output=) against the same job returning nothing (the rows are built
    either way), and against a floor: the same rows, already built, converted from pandas and
    written as one zstd file by pyarrow in one pass on one core, halved for two cores; and the
    same floor with each million rows sorted by CLUSTER_BY first, as gpar's files are: the
    price of the clustered layout.
(b) The reduce, over the committed files: MAPE by model × horizon, and by model at horizon 52
    (on the clustered output and on the plain one), each as its users call it: a Dataset opened
    per query (Dataset(out).sql, DuckDB), a polars scan_delta made per query over the same
    Delta table, pandas reading the three columns; and a Dataset kept open. Medians after one
    warm-up; peak memory is the rise of the process's peak RSS. Also the first query of a new
    process, for gpar and for polars.
(c) The same write and queries on a real S3-compatible server (SeaweedFS on loopback).
(d) Layouts: the clustered output's files rewritten with other row-group sizes and page
    limits (with a page index, which DuckDB reads to skip pages and polars does not), queried
    by DuckDB and polars; this sets reduce_sql.tables.ROW_GROUP_ROWS and ROWS_PER_PAGE.
(e) Parquet options: the committed files rewritten under each set, as sorted: write time, size,
    and DuckDB's and polars' times for the first query (options that speed one reader may speed
    the other more); this sets reduce_sql.tables.parquet_options.
(f) The commit of 1,000 task files (20 rows each, written once): one Delta transaction.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from timing import timed

import gpar
import reduce_sql
from reduce_sql import tables
from reduce_sql.parts import FILE_ROWS

TASKS = 1_000
MODELS = ["snaive", "drift", "fourier", "ses", "theta", "stl", "damped", "ensemble"]
ENDS, HORIZONS = 50, 52
ROWS_PER_TASK = len(MODELS) * ENDS * HORIZONS  # 20,800
CLUSTER_BY = ["horizon"]  # what the second query filters on
ROUNDS, REPEATS = 3, 5
BY_MODEL_AND_HORIZON = ("SELECT model, horizon, 100 * avg(abs(error)) AS mape FROM data "
                        "GROUP BY model, horizon")
AT_HORIZON_52 = ("SELECT model, 100 * avg(abs(error)) AS mape FROM data WHERE horizon = 52 "
                 "GROUP BY model")


def evaluation_rows(task: int) -> pd.DataFrame:
    """One series' rows: every model × training end × horizon."""
    rng = np.random.default_rng(task)
    n = ROWS_PER_TASK
    model = np.repeat(np.arange(len(MODELS)), ENDS * HORIZONS)
    end = np.tile(np.repeat(np.arange(ENDS), HORIZONS), len(MODELS))
    horizon = np.tile(np.arange(1, HORIZONS + 1), len(MODELS) * ENDS)
    training_end = np.datetime64("2010-01-04") + (end * 7).astype("timedelta64[D]")
    actual = rng.uniform(10, 1000, n)
    forecast = actual * rng.normal(1, 0.1, n)
    return pd.DataFrame({
        "series": f"S{task:04d}",
        "model": np.array(MODELS, dtype=object)[model],
        "training_end": training_end,
        "forecast_date": training_end + (horizon * 7).astype("timedelta64[D]"),
        "horizon": horizon,
        "forecast": forecast,
        "actual": actual,
        "error": (forecast - actual) / actual,
    })


def nothing(task: int) -> None:
    evaluation_rows(task)


def one_pass_floor(path: Path, cluster_by: list[str] | None = None) -> float:
    """Seconds to convert the rows from pandas and write one zstd file, on one core; with
    ``cluster_by``, each FILE_ROWS rows sorted by it as they are written, as gpar's files are
    (sorting all 20.8 M rows at once took pyarrow 16 s: gathering rows from far apart)."""
    frames = [evaluation_rows(task) for task in range(TASKS)]
    pa.set_cpu_count(1)
    try:
        started = time.perf_counter()
        table = pa.concat_tables([pa.Table.from_pandas(frame, preserve_index=False)
                                  for frame in frames])
        if not cluster_by:
            pq.write_table(table, path, compression="zstd")
        else:
            with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
                for start in range(0, table.num_rows, FILE_ROWS):
                    writer.write_table(table.slice(start, FILE_ROWS).combine_chunks().sort_by(
                        [(name, "ascending") for name in cluster_by]))
        return time.perf_counter() - started
    finally:
        pa.set_cpu_count(os.cpu_count())


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measured(run) -> tuple[float, float]:
    """Warm median seconds of ``run`` and how far it raised the process's peak RSS (MB), from
    before its first (cold) run: what it reads, caches and computes."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the RSS now
    before = peak_rss()
    run()
    median = timed(run, REPEATS)
    return median, (peak_rss() - before) / 1e6


def queries(clustered: str, plain: str, polars_options: dict | None,
            pandas_filesystem) -> dict[str, tuple[float, float]]:
    """Each query as its users call it: a Dataset opened per query (a notebook cell, a script),
    a polars scan made per query, pandas reading the files; and an open Dataset beside."""
    def polars_scan(uri: str):  # the same Delta table, its latest version
        return pl.scan_delta(uri, storage_options=polars_options)

    mape = (pl.col("error").abs().mean() * 100).alias("mape")
    pandas_files = {uri: reduce_sql.Dataset(uri).files for uri in (clustered, plain)}

    def pandas_query(uri: str, at_52: bool):
        frame = pd.read_parquet(pandas_files[uri], columns=["model", "horizon", "error"],
                                filesystem=pandas_filesystem)
        if at_52:
            frame = frame[frame.horizon == 52]
        return frame.assign(e=frame.error.abs()).groupby(["model", "horizon"]).e.mean() * 100

    results = {}
    for key, uri, sql in (("all", clustered, BY_MODEL_AND_HORIZON),
                          ("52", clustered, AT_HORIZON_52), ("52 plain", plain, AT_HORIZON_52)):
        at_52 = sql == AT_HORIZON_52
        polars_query = (lambda uri=uri: polars_scan(uri).filter(pl.col("horizon") == 52)
                        .group_by("model").agg(mape).collect()) if at_52 else (
            lambda uri=uri: polars_scan(uri).group_by("model", "horizon").agg(mape).collect())
        opened = reduce_sql.Dataset(uri)
        results |= {
            f"duckdb_{key}": measured(lambda uri=uri, sql=sql: reduce_sql.Dataset(uri).sql(sql)),
            f"open_{key}": measured(lambda opened=opened, sql=sql: opened.sql(sql)),
            f"polars_{key}": measured(polars_query),
            f"pandas_{key}": measured(lambda uri=uri, at_52=at_52: pandas_query(uri, at_52)),
        }
    duck = (reduce_sql.Dataset(clustered).sql(BY_MODEL_AND_HORIZON).to_pandas()
            .set_index(["model", "horizon"]).mape)
    assert np.allclose(duck.sort_index().to_numpy(),
                       pandas_query(clustered, False).sort_index().to_numpy())
    return results


FIRST_QUERY = {  # what a new process pays for its first query, its imports included
    "gpar": "import reduce_sql\nreduce_sql.Dataset(URI).sql(SQL)",
    "polars": "import polars as pl\n"
              "pl.scan_delta(URI, storage_options=STORAGE).filter(pl.col('horizon') == 52)"
              ".group_by('model').agg(pl.col('error').abs().mean()).collect()",
}


def first_in_process(uri: str, polars_options: dict | None = None) -> dict[str, float]:
    """Median seconds of the one-horizon query as the first of a new process (3 processes
    each), its imports included (reduce_sql imports pyarrow and DuckDB on first use), for
    gpar (a first Dataset: its DuckDB made, footers read) and for polars."""
    header = (f"import time\nstarted = time.perf_counter()\n"
              f"URI, SQL = {str(uri)!r}, {AT_HORIZON_52!r}\n"
              f"STORAGE = {polars_options!r}\n")
    found = {}
    for engine, code in FIRST_QUERY.items():
        script = header + code + "\nprint(time.perf_counter() - started)\n"
        found[engine] = statistics.median(
            float(subprocess.run([sys.executable, "-c", script], check=True, text=True,
                                 capture_output=True).stdout) for _ in range(3))
    return found


#: (rows per row group, rows per page with a page index, or None: pyarrow's pages, no index)
LAYOUTS = [(131_072, None), (131_072, 16_384), (1_000_000, None), (1_000_000, 8_192),
           (1_000_000, 16_384)]


def by_layout(dataset: reduce_sql.Dataset, work: Path) -> dict[tuple, tuple[float, ...]]:
    """DuckDB's and polars' seconds for both queries over the clustered output's files (each
    sorted whole) rewritten with each row-group size and page limit."""
    import duckdb

    mape = (pl.col("error").abs().mean() * 100).alias("mape")
    timings = {}
    for rows, page_rows in LAYOUTS:
        directory = work / f"layout-{rows}-{page_rows}"
        directory.mkdir()
        for number, path in enumerate(dataset.files):
            table = pq.read_table(path)
            options = tables.parquet_options(table.schema)
            options.update(write_page_index=page_rows is not None, max_rows_per_page=page_rows)
            pq.write_table(table, directory / f"{number}.parquet", row_group_size=rows,
                           **options)
        connection = duckdb.connect()
        connection.execute("SET parquet_metadata_cache = true")
        connection.read_parquet(f"{directory}/*.parquet").create_view("data")
        scan = pl.scan_parquet(f"{directory}/*.parquet")
        timings[rows, page_rows] = (
            *(timed(lambda sql=sql, db=connection: db.sql(sql).fetchall(), REPEATS)
              for sql in (BY_MODEL_AND_HORIZON, AT_HORIZON_52)),
            timed(lambda scan=scan: scan.group_by("model", "horizon").agg(mape).collect(),
                  REPEATS),
            timed(lambda scan=scan: scan.filter(pl.col("horizon") == 52).group_by("model")
                  .agg(mape).collect(), REPEATS))
        shutil.rmtree(directory)
    return timings


def by_parquet_options(dataset: reduce_sql.Dataset, work: Path) -> dict[str, tuple]:
    """(write seconds, MB, DuckDB's and polars' seconds for the first query) of the committed
    files rewritten, file for file and as sorted, under each option set."""
    import duckdb

    read = [pq.read_table(path) for path in dataset.files]
    schema = read[0].schema
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    others = [name for name in schema.names if name not in floats]
    chosen = tables.parquet_options(schema)
    options = {
        "reduce_sql: floats plain, uncompressed; the rest dictionary + zstd": chosen,
        "floats plain + LZ4, the rest dictionary + zstd": dict(
            chosen, compression={name: "lz4" if name in floats else "zstd"
                                 for name in schema.names}),
        "floats byte-stream-split, uncompressed; the rest dictionary + zstd":
            {**chosen, "use_byte_stream_split": floats},
        "everything zstd, floats byte-stream-split": dict(
            compression="zstd", use_dictionary=others, use_byte_stream_split=floats),
        "pyarrow's defaults (snappy, dictionary everywhere)": {},
    }
    mape = (pl.col("error").abs().mean() * 100).alias("mape")
    found = {}
    for number, (label, each) in enumerate(options.items()):
        directory = work / f"options-{number}"
        directory.mkdir()
        started = time.perf_counter()
        for part, table in enumerate(read):
            pq.write_table(table, directory / f"{part}.parquet",
                           row_group_size=tables.ROW_GROUP_ROWS, **each)
        written = time.perf_counter() - started
        files = sorted(str(path) for path in directory.iterdir())
        connection = duckdb.connect()
        connection.execute("SET parquet_metadata_cache = true")
        connection.read_parquet(files).create_view("data")
        duck = timed(lambda db=connection: db.sql(BY_MODEL_AND_HORIZON).fetchall(), REPEATS)
        scan = pl.scan_parquet(files)
        polars_ = timed(lambda scan=scan: scan.group_by("model", "horizon").agg(mape).collect(),
                        REPEATS)
        megabytes = sum(Path(path).stat().st_size for path in files) / 1e6
        found[label] = (written, megabytes, duck, polars_)
        shutil.rmtree(directory)
    return found


COMMITTED_FILES = 1_000


def commit_seconds(work: Path) -> float:
    """Median seconds of committing COMMITTED_FILES task files, each its own, as one version of
    a new table (files written once; each round commits them to a table of its own)."""
    from reduce_sql import commit
    from reduce_sql.parts import Sink
    from reduce_sql.store import locate

    location = locate(work / "commit")
    writer = Sink(location, "c" * 64, 0, list(range(COMMITTED_FILES))).open()
    parts = [part for task in range(COMMITTED_FILES) for _, part in writer.write(
        [[(task, pa.table({"task": [task] * 20, "value": [1.0] * 20}))]])]
    times, merging_above = [], commit.COMPACT_ABOVE_FILES
    commit.COMPACT_ABOVE_FILES = COMMITTED_FILES  # the commit alone, no merge after it
    try:
        for _ in range(REPEATS):
            shutil.rmtree(work / "commit" / "_delta_log", ignore_errors=True)
            started = time.perf_counter()
            committed = commit.commit(location, "c" * 64, parts)
            times.append(time.perf_counter() - started)
            assert len(committed.files) == COMMITTED_FILES
    finally:
        commit.COMPACT_ABOVE_FILES = merging_above
    return statistics.median(times)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gpar-bench-reduce-"))
    try:
        gpar.apply(range(4), nothing, progress=False)  # warm the cluster
        write_s: dict[str, list[float]] = {}
        for round_ in range(ROUNDS):  # interleaved: a slow spell hits each alike
            write_s.setdefault("floor", []).append(one_pass_floor(work / "floor.parquet"))
            write_s.setdefault("sorted floor", []).append(
                one_pass_floor(work / "floor.parquet", CLUSTER_BY))
            for name, fn, options in (
                    ("nothing", nothing, {}),
                    ("clustered", evaluation_rows,
                     {"output": work / f"c{round_}", "cluster_by": CLUSTER_BY}),
                    ("plain", evaluation_rows, {"output": work / f"p{round_}"})):
                started = time.perf_counter()
                gpar.apply(range(TASKS), fn, progress=False, **options)
                write_s.setdefault(name, []).append(time.perf_counter() - started)
        write = {name: statistics.median(times) for name, times in write_s.items()}
        floor_one_core, sorted_floor_one_core = write["floor"], write["sorted floor"]
        load = [os.getloadavg()[0]]  # other processes on the machine (it is shared)
        dataset = reduce_sql.Dataset(work / "c0")
        local = queries(str(work / "c0"), str(work / "p0"), None, None)
        first = first_in_process(work / "c0")
        load.append(os.getloadavg()[0])
        committing = commit_seconds(work)
        layouts = by_layout(dataset, work)
        formats = by_parquet_options(dataset, work)

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import s3server  # the test suite's SeaweedFS launcher (not a global: fn ships none)

        with s3server.seaweedfs() as environment:
            os.environ.update(environment)
            uri = f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/evaluation"
            s3_write = seconds(lambda: gpar.apply(range(TASKS), evaluation_rows, output=uri,
                                                  cluster_by=CLUSTER_BY, progress=False))
            gpar.apply(range(TASKS), evaluation_rows, output=f"{uri}-plain", progress=False)
            on_s3 = reduce_sql.Dataset(uri)
            polars_s3 = {"aws_endpoint_url": environment["AWS_ENDPOINT_URL"],
                         "aws_access_key_id": environment["AWS_ACCESS_KEY_ID"],
                         "aws_secret_access_key": environment["AWS_SECRET_ACCESS_KEY"],
                         "aws_region": environment.get("AWS_REGION", "us-east-1"),
                         "aws_allow_http": "true"}
            remote = queries(uri, f"{uri}-plain", polars_s3, on_s3.location.filesystem)
            first_s3 = first_in_process(uri, polars_s3)
            load.append(os.getloadavg()[0])
            s3_files = len(on_s3.manifest.files)
            view = on_s3.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'data'")
            on_s3_natively = "read_parquet" in view.column("sql")[0].as_py()  # else registered
    finally:
        shutil.rmtree(work, ignore_errors=True)
        gpar.shutdown()

    floors = {"plain": floor_one_core / 2, "clustered": sorted_floor_one_core / 2}
    print("## Outputs and the SQL reduce at the paper's scale (`bench/bench_reduce.py`)\n")
    print(f"{TASKS:,} tasks × {ROWS_PER_TASK:,} evaluation rows = "
          f"{TASKS * ROWS_PER_TASK / 1e6:.1f} M rows, each task's a pandas DataFrame (series, "
          "model, training_end, forecast_date, horizon, forecast, actual, error); 2 cores. "
          f"Writes and floors: medians of {ROUNDS} interleaved rounds; queries: warm medians of "
          f"{REPEATS}.\n")
    print("### (a) The write\n")
    print("| job | seconds | over the job returning nothing | ÷ the one-pass floor | "
          "÷ the one-pass floor sorted alike |")
    print("|---|---|---|---|---|")
    print(f"| the same job returning nothing | {write['nothing']:.2f} | — | — | — |")
    for name, label in (("clustered", f"apply(output=, cluster_by={CLUSTER_BY})"),
                        ("plain", "apply(output=)")):
        overhead = write[name] - write["nothing"]
        print(f"| {label} | {write[name]:.2f} | {overhead:.2f} | "
              f"{overhead / floors['plain']:.2f} | {overhead / floors[name]:.2f} |")
    print(f"| floor: pyarrow from pandas + one zstd file, one pass | {floor_one_core:.2f} on one "
          f"core = {floors['plain']:.2f} on two | — | 1.00 | — |")
    print(f"| floor, each {FILE_ROWS:,} rows sorted by {CLUSTER_BY} as written | "
          f"{sorted_floor_one_core:.2f} on one core = {floors['clustered']:.2f} on two | — | "
          f"{floors['clustered'] / floors['plain']:.2f} | 1.00 |\n")
    print(f"Target: the write's overhead at most 1.2 × the floor. The committed dataset holds "
          f"{len(dataset.manifest.files)} files (a batch's elements share one; none merged). "
          "The sorted floor prices the layout itself: what cluster_by costs any writer.\n")
    print("### (b) The reduce over the committed files\n")
    _query_table(local, len(dataset.manifest.files))
    print(f"The first query of a new process (one horizon, clustered; medians of 3 processes, "
          f"their imports included): gpar {first['gpar']:.3f} s (pyarrow and DuckDB imported, "
          f"its DuckDB made, footers read), polars {first['polars']:.3f} s.\n")
    print("Targets: MAPE by model × horizon ≤ polars, ≥ 5 × pandas; at one horizon on the "
          "clustered output ≤ 0.03 s and ≤ polars; without cluster_by ≤ 1.5 × polars; on S3 "
          "each ≤ polars; peak memory ≤ 500 MB. DuckDB's and pandas' MAPE tables agree "
          "(checked in the run). The machine is shared: 1-minute load average "
          f"{' → '.join(f'{x:.1f}' for x in load)} (at the local queries, after them, after "
          "S3's) on 2 cores.\n")
    print("### (c) The same on an S3-compatible server (SeaweedFS on loopback)\n")
    print(f"apply(output=s3://…, cluster_by={CLUSTER_BY}): {s3_write:.2f} s "
          f"({s3_write - write['nothing']:.2f} s over the job returning nothing).\n")
    _query_table(remote, s3_files)
    print(f"The first query of a new process (as in (b)): gpar {first_s3['gpar']:.3f} s "
          f"(as there, and httpfs loaded), polars {first_s3['polars']:.3f} s. "
          f"DuckDB {duckdb.__version__}, reading S3 "
          f"{'itself (httpfs)' if on_s3_natively else 'through pyarrow (no httpfs)'}.\n")
    print("### (d) Layout of the clustered files: row groups and pages (local, seconds)\n")
    print("| rows per group | rows per page (page index) | MAPE by model × horizon: DuckDB | "
          "polars | at horizon 52: DuckDB | polars |\n|---|---|---|---|---|---|")
    for (rows, page_rows), (every, one, polars_every, polars_one) in layouts.items():
        chosen = (" (reduce_sql's)" if (rows, page_rows) == (tables.ROW_GROUP_ROWS,
                                                            tables.ROWS_PER_PAGE) else "")
        pages = f"{page_rows:,}" if page_rows else "pyarrow's, no index"
        print(f"| {rows:,} | {pages}{chosen} | {every:.3f} | {polars_every:.3f} | {one:.3f} | "
              f"{polars_one:.3f} |")
    print()
    print("### (e) Parquet options: the committed files rewritten (20.8 M rows)\n")
    print("| options | write s (one core) | MB | MAPE by model × horizon: DuckDB s | polars s |")
    print("|---|---|---|---|---|")
    for label, (written, megabytes, duck, polars_) in formats.items():
        print(f"| {label} | {written:.2f} | {megabytes:.0f} | {duck:.3f} | {polars_:.3f} |")
    print()
    print(f"### (f) The commit of {COMMITTED_FILES:,} task files\n")
    print(f"{committing:.3f} s (median of {REPEATS}): one Delta transaction adding the files "
          "with their statistics, the job's state beside it.\n")


def _query_table(results: dict[str, tuple[float, float]], files: int) -> None:
    print("| query | Dataset(out).sql, a new Dataset per query | an open Dataset | polars "
          "scan_delta, a new scan per query | pandas read + groupby | new Dataset ÷ polars "
          "/ pandas ÷ new Dataset |")
    print("|---|---|---|---|---|---|")
    for key, label in (("all", "MAPE by model × horizon"),
                       ("52", f"MAPE by model, horizon 52, cluster_by={CLUSTER_BY}"),
                       ("52 plain", "MAPE by model, horizon 52, without cluster_by")):
        duck, opened, polars_, pandas_ = (results[f"{engine}_{key}"]
                                          for engine in ("duckdb", "open", "polars", "pandas"))
        cells = [f"{s:.3f} s, {mb:.0f} MB" for s, mb in (duck, opened, polars_, pandas_)]
        print(f"| {label} | {' | '.join(cells)} | {duck[0] / polars_[0]:.2f} / "
              f"{pandas_[0] / duck[0]:.0f}× |")
    print(f"\n({files} files in the clustered output; memory: the rise of the process's peak "
          "RSS during the query.)\n")


if __name__ == "__main__":
    main()
