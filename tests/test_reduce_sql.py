"""apply(output=) and reduce_sql: one suite, run against a local directory and a real S3 server.

Every test that writes runs twice (the ``output`` fixture): each commit and query behaviour must
hold on both stores.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import types
import uuid
import warnings
from pathlib import Path

import deltalake
import duckdb
import pandas as pd
import polars
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import s3server
from faults import attempts_of, claim_attempt, hanging, wait_until
from outputs import ROWS, expected_table, mapper, write_late

import gpar
import reduce_sql
from reduce_sql import commit as commit_module
from reduce_sql.store import locate

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture(scope="session")
def s3_environment():
    with s3server.seaweedfs() as environment:
        yield environment


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path, monkeypatch) -> str:
    """A fresh output URI: a local directory, or a prefix in the S3 server's bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    for name, value in request.getfixturevalue("s3_environment").items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/out"


def run(xs, output, marker_dir, table=None, **options):
    options.setdefault("progress", False)
    return gpar.apply(xs, mapper, table or {}, str(marker_dir), locate(output), output=output,
                      **options)


def assert_exactly_once(dataset: reduce_sql.Dataset, tasks: range) -> None:
    """Every task's rows once, compared with a direct computation: count, keys, checksum."""
    got = dataset.sql("SELECT count(*) AS n, count(DISTINCT (task, k)) AS keys, "
                      "sum(value) AS total FROM data").to_pylist()[0]
    expected = pd.concat([expected_table(task) for task in tasks])
    assert got == {"n": len(expected), "keys": len(expected), "total": expected.value.sum()}


def test_outputs_are_committed_once_and_queried_in_place(output, tmp_path):
    dataset = run(range(10), output, tmp_path)
    assert isinstance(dataset, reduce_sql.Dataset) and dataset.num_rows == 10 * ROWS
    assert_exactly_once(dataset, range(10))
    assert_exactly_once(reduce_sql.Dataset(output), range(10))  # a fresh reader sees the same
    assert dataset.report.elements == 10 and not dataset.failures


def test_duckdb_agrees_with_pandas_on_the_same_data(output, tmp_path):
    dataset = run(range(12), output, tmp_path)
    sql = ("SELECT task % 3 AS bucket, avg(value) AS mean, max(k) AS top FROM data "
           "WHERE k >= $low GROUP BY bucket ORDER BY bucket")
    got = dataset.sql(sql, params={"low": 1}).to_pandas()
    frame = pd.concat([expected_table(task) for task in range(12)])
    frame = frame[frame.k >= 1].assign(bucket=lambda f: f.task % 3)
    want = frame.groupby("bucket").agg(mean=("value", "mean"), top=("k", "max")).reset_index()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_a_retry_after_a_worker_died_mid_write_adds_and_loses_no_row(output, tmp_path):
    dataset = run(range(6), output, tmp_path, {(3, 0): "partial_exit"}, backups=False)
    assert attempts_of(tmp_path, 3) == 2
    assert_exactly_once(dataset, range(6))
    assert not any("killed" in path for path in locate(output).files())  # the orphan is gone


def waits_for_its_backup(task: int, marker_dir: str) -> pd.DataFrame:
    """The last element straggles until its backup has started (claimed attempt 1): then both
    attempts finish, each writing the same rows."""
    attempt = claim_attempt(marker_dir, task)
    if task == 11 and attempt == 0:
        assert wait_until(lambda: attempts_of(marker_dir, task) > 1, timeout_s=120)
    return expected_table(task)


def test_a_backup_racing_the_original_counts_once(output, tmp_path, monkeypatch):
    """Both attempts of the last element write their file; the driver stops the loser only
    after that (a cancel that arrives late, as from a loaded driver), so the commit must take
    one attempt's file and leave the other's out."""
    from gpar.raytasks import RayTasks

    location, written = locate(output), set()
    cancel = RayTasks.cancel

    def files_of_task_11() -> set[str]:
        return {path for path in location.files("data") if "-000000011-a" in path}

    def late_cancel(self, key):
        if attempts_of(tmp_path, 11) > 1:  # both started: let each write before one is stopped
            wait_until(lambda: len(files_of_task_11()) > 1, timeout_s=120)
            written.update(files_of_task_11())
        return cancel(self, key)

    monkeypatch.setattr(RayTasks, "cancel", late_cancel)
    # the last element straggles: nothing waits behind it, so it gets a backup
    dataset = gpar.apply(range(12), waits_for_its_backup, str(tmp_path), output=output,
                         max_workers=2, progress=False)
    # a loaded machine may back up the backup too: two attempts at least, each wrote its file
    assert attempts_of(tmp_path, 11) >= 2 and dataset.report.backups >= 1
    assert len(written) >= 2
    assert len(written & {file.path for file in dataset.manifest.files}) == 1
    assert_exactly_once(dataset, range(12))


def test_an_abandoned_attempt_that_writes_late_is_never_read(output, tmp_path):
    dataset = run(range(4), output, tmp_path, {(1, 0): "hang"}, task_timeout=2, backups=False)
    assert attempts_of(tmp_path, 1) == 2
    assert_exactly_once(dataset, range(4))
    stray = write_late(locate(output), 1)  # the abandoned attempt's file lands after the commit
    assert_exactly_once(reduce_sql.Dataset(output), range(4))
    run(range(4), output, tmp_path, {(1, 0): "hang"}, task_timeout=2, backups=False)
    assert stray not in locate(output).files()  # the next run of the job removes it


CHECKPOINTED_JOB = """
import os, pathlib, sys, time
import gpar, gpar.raybackend, reduce_sql.commit

gpar.raybackend.CHECKPOINT_S = 0.2
reduce_sql.commit.COMPACT_ABOVE_FILES = 2  # the last commit merges all eight tasks' files
output, markers = sys.argv[1], pathlib.Path(sys.argv[2])

def fn(task):  # the same job in both runs: the flag is a file, not a global fn reads
    (markers / f"{task}-{time.time_ns()}").touch()
    if task >= 4 and (markers.parent / "hang").exists():
        time.sleep(300)
    return {"task": [task], "value": [task * 10.0]}

gpar.apply(range(8), fn, output=output, max_workers=2, progress=False)
print("done")
"""


def test_a_driver_killed_mid_job_resumes_from_its_last_checkpoint(output, tmp_path, cluster):
    (tmp_path / "job.py").write_text(CHECKPOINTED_JOB)
    env = {**os.environ, "RAY_ADDRESS": cluster}

    markers = tmp_path / "markers"
    markers.mkdir()

    def driver() -> subprocess.Popen:
        command = [sys.executable, "job.py", output, str(markers)]
        return subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE)

    def ran(names: set[str]) -> list[int]:
        return sorted(int(name.split("-")[0]) for name in names)

    def checkpointed() -> set[int]:
        manifest = commit_module.read_manifest(locate(output))
        return manifest.tasks if manifest is not None else set()

    (tmp_path / "hang").touch()
    first = driver()  # tasks 0-3 finish, 4-7 hang
    try:
        assert wait_until(lambda: checkpointed() == {0, 1, 2, 3}, 60)
    finally:
        first.kill()  # SIGKILL: no commit at the end, no cleanup
        first.wait()
        first.stdout.close()
    with pytest.warns(reduce_sql.PartialOutputWarning, match="4 tasks committed so far"):
        assert reduce_sql.Dataset(output).num_rows == 4
    first_run = {marker.name for marker in markers.iterdir()}
    (tmp_path / "hang").unlink()  # the second run's attempts of 4-7 return

    second = driver()
    assert second.communicate(timeout=120)[0].strip() == "done"
    second_run = {marker.name for marker in markers.iterdir()} - first_run
    assert {0, 1, 2, 3} <= set(ran(first_run))  # a slow first write may be preempted
    # what the checkpoint held never ran again (a backup may run a straggler twice)
    assert set(ran(second_run)) == {4, 5, 6, 7}
    dataset = reduce_sql.Dataset(output)
    assert dataset.manifest.finished
    assert dataset.sql("SELECT task, value FROM data ORDER BY task").to_pylist() == [
        {"task": task, "value": task * 10.0} for task in range(8)]
    assert len(dataset.files) == 1  # the checkpoint's files merged with the new ones


def test_a_manifest_replaced_while_it_is_read_is_read_whole(s3_environment, monkeypatch):
    """An S3 read sizes the object when it opens: a checkpoint that rewrites the manifest just
    then must not hand a reader the new manifest cut at the old one's length."""
    from reduce_sql import store

    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    location = locate(f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/out")
    location.write_atomically("manifest.json", b"{}")
    real = location.filesystem

    class ReplacedOnOpen:
        replaced = False

        def __getattr__(self, name):
            return getattr(real, name)

        def open_input_stream(self, path):
            stream = real.open_input_stream(path)  # the old object's size, now
            if not self.replaced:
                self.replaced = True
                real.delete_file(path)
                with real.open_output_stream(path) as replacement:
                    replacement.write(b'{"a": "longer"}')
            return stream

    monkeypatch.setattr(store, "_filesystem", lambda options: ReplacedOnOpen())
    assert location.read_bytes("manifest.json") == b'{"a": "longer"}'


def test_replacing_an_output_writes_no_checkpoint_so_it_stays_readable(tmp_path):
    from gpar import output as gpar_output

    out = str(tmp_path / "out")
    gpar.apply(range(2), returns, [{"a": [1]}, {"a": [2]}], output=out, progress=False)
    replacing = gpar_output.begin(gpar_output.target(
        out, range(2), returns, ([{"a": [8]}, {"a": [9]}],), {}, overwrite=True), overwrite=True)
    accepted = parts_of(replacing.location, [{"a": [8]}], job=replacing.job)
    replacing.checkpoint([*accepted, None])
    assert reduce_sql.Dataset(out).sql("SELECT a FROM data ORDER BY a").to_pylist() == [
        {"a": 1}, {"a": 2}]
    fresh = gpar_output.begin(gpar_output.target(  # nothing there to replace: checkpoints
        str(tmp_path / "fresh"), range(2), returns, ([],), {}, overwrite=True), overwrite=True)
    fresh.checkpoint(parts_of(fresh.location, [{"a": [8]}], job=fresh.job))
    with pytest.warns(reduce_sql.PartialOutputWarning, match="1 tasks committed"):
        reduce_sql.Dataset(tmp_path / "fresh")


def test_an_output_that_is_not_a_part_is_an_error_not_a_dropped_task(tmp_path):
    from gpar import output as gpar_output

    claim = gpar_output.begin(
        gpar_output.target(str(tmp_path / "out"), range(2), returns, ([],), {}, False), False)
    with pytest.raises(gpar.EnvironmentMismatch, match="not a reduce_sql Part: the workers run"):
        claim.commit(parts_of(claim.location, [{"a": [1]}], job=claim.job) + [{"a": [2]}])


def test_a_rerun_of_the_same_job_runs_only_what_was_not_committed(output, tmp_path):
    table = {(5, 0): "raise"}
    with pytest.warns(gpar.TaskFailedWarning):
        first = run(range(8), output, tmp_path, table, task_retries=0)
    assert [f.index for f in first.failures] == [5] and first.num_rows == 7 * ROWS
    second = run(range(8), output, tmp_path, table, task_retries=0)
    assert second.report.elements == 1 and attempts_of(tmp_path, 0) == 1
    assert [(a.task, a.outcome) for a in second.report.attempts] == [(5, "ok")]
    assert_exactly_once(second, range(8))


def test_a_rerun_of_a_finished_job_answers_without_a_cluster(tmp_path):
    """The script run again after its job wrote every element: the output is the answer, at
    once, with no cluster asked (none answers at this address) and nothing rewritten."""
    out = tmp_path / "out"
    first = gpar.apply(range(3), rows_of, output=out, progress=False)
    written = {path: path.stat().st_mtime_ns for path in out.rglob("*")}

    again = gpar.apply(range(3), rows_of, output=out, address="127.0.0.1:1", progress=False)

    assert again.sql("SELECT sum(x) AS s FROM data").column("s")[0].as_py() == 0 + 1 + 2
    assert again.manifest == first.manifest and not again.failures
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == written
    with pytest.raises(gpar.ClusterConnectionError):  # with overwrite=True it is rewritten
        gpar.apply(range(3), rows_of, output=out, overwrite=True, address="127.0.0.1:1",
                   progress=False)


def test_a_rerun_meeting_the_same_failures_is_judged_as_the_first_run(tmp_path):
    """The default failure budget scales with len(xs), not with what a re-run has left: 12
    failures of 400 elements warn (budget 20) in the first run and in the re-run alike."""
    out = tmp_path / "out"
    for _ in range(2):
        with pytest.warns(gpar.TaskFailedWarning):
            dataset = gpar.apply(range(400), rows_unless_small, output=out, progress=False)
        assert len(dataset.failures) == 12 and dataset.num_rows == 388


def test_another_job_into_the_same_output_is_refused_unless_overwrite(output, tmp_path):
    run(range(3), output, tmp_path)
    with pytest.raises(reduce_sql.OutputExistsError, match="overwrite=True"):
        run(range(4), output, tmp_path)
    assert_exactly_once(reduce_sql.Dataset(output), range(3))  # the refusal lost nothing
    replaced = run(range(4), output, tmp_path, overwrite=True)
    assert_exactly_once(replaced, range(4))


def test_an_output_of_the_manifest_format_is_refused_until_written_again(tmp_path):
    """Outputs of the format before Delta tables (gpar's own manifest): no converter, a clear
    error, and overwrite=True writes the output again as a table."""
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    old_file = out / "data" / "part-0123456789ab-000000000-a0-0123abcd.parquet"
    pq.write_table(pa.table({"x": [5]}), old_file)
    (out / "_gpar_manifest.json").write_text('{"format": 1}')
    with pytest.raises(reduce_sql.NoDatasetError, match="write it again"):
        reduce_sql.Dataset(out)
    with pytest.raises(reduce_sql.NoDatasetError, match="overwrite=True"):
        gpar.apply(range(2), rows_of, output=out, progress=False)
    dataset = gpar.apply(range(2), rows_of, output=out, overwrite=True, progress=False)
    assert dataset.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 1}]
    assert not old_file.exists() and not (out / "_gpar_manifest.json").exists()


def test_a_job_that_never_reached_a_cluster_leaves_its_output_unclaimed(tmp_path):
    """A typo in the address, then the script mended and run again with fn edited: nothing
    was written, so the output is not another job's."""
    out = tmp_path / "out"
    with pytest.raises(gpar.ClusterConnectionError):
        gpar.apply(range(3), rows_of, output=out, address="127.0.0.1:1", progress=False)
    assert not out.exists() or not any(out.iterdir())
    dataset = gpar.apply(range(3), rows_plus_one, output=out, progress=False)
    assert dataset.sql("SELECT sum(x) AS s FROM data").column("s")[0].as_py() == 1 + 2 + 3


def test_a_location_holding_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(reduce_sql.OutputExistsError, match="not empty"):
        gpar.apply([1], rows_of, output=tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def rows_of(x):
    return {"x": [x]}


def rows_plus_one(x):
    return {"x": [x + 1]}


def rows_unless_small(x):
    if x < 12:
        raise ValueError(f"{x} is too small")
    return {"x": [x]}


def returns(x, values):
    return values[x]


def test_each_accepted_table_shape_and_zero_rows(output):
    frames = [pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), pa.table({"a": [3], "b": ["z"]}),
              {"a": [4], "b": ["w"]}, [{"a": 5, "b": "v"}], pd.DataFrame({"a": [], "b": []})]
    dataset = gpar.apply(range(5), returns, frames, output=output, progress=False)
    assert sorted(dataset.sql("SELECT a FROM data").column("a").to_pylist()) == [1, 2, 3, 4, 5]


def test_an_output_of_zero_rows_is_still_a_table_with_columns(output):
    empty = [pd.DataFrame({"a": pd.Series([], dtype="int64")})] * 2
    dataset = gpar.apply(range(2), returns, empty, output=output, progress=False)
    assert dataset.num_rows == 0
    assert dataset.sql("SELECT count(*) AS n, sum(a) AS s FROM data").to_pylist() == [
        {"n": 0, "s": None}]


def test_a_wrong_return_type_fails_that_task_saying_what_is_accepted(output):
    values = [{"a": [1]}, 42, "text"]
    with pytest.warns(gpar.TaskFailedWarning, match="must return a pandas DataFrame"):
        dataset = gpar.apply(range(3), returns, values, output=output, progress=False)
    assert [(f.index, f.reason, f.attempts) for f in dataset.failures] == [
        (1, "error", 1), (2, "error", 1)]
    assert "returned int 42" in dataset.failures[0].message
    assert dataset.sql("SELECT a FROM data").to_pylist() == [{"a": 1}]


def test_schemas_that_drift_safely_are_unified(output):
    categorical = pd.DataFrame({"a": [4], "b": pd.Categorical(["y"])})
    values = [{"a": [1], "b": ["x"]}, {"a": [2.5]}, {"a": [3], "c": [True]}, categorical]
    dataset = gpar.apply(range(4), returns, values, output=output, progress=False)
    assert dataset.schema.field("a").type == pa.float64()
    assert dataset.schema.field("b").type in (pa.string(), pa.large_string())  # not dictionary
    got = dataset.sql("SELECT a, b, c FROM data ORDER BY a").to_pylist()
    assert got == [{"a": 1.0, "b": "x", "c": None}, {"a": 2.5, "b": None, "c": None},
                   {"a": 3.0, "b": None, "c": True}, {"a": 4.0, "b": "y", "c": None}]


def test_categoricals_also_inside_lists_maps_and_structs_are_stored_as_their_values():
    from reduce_sql.tables import as_table

    codes = pa.array(["a", "b", None]).dictionary_encode()
    keys = pa.array(["k1", "k2", "k3"])
    table = pa.table({"l": pa.ListArray.from_arrays([0, 2, 3, 3], codes),
                      "s": pa.StructArray.from_arrays([codes], ["x"]), "c": codes,
                      "m": pa.MapArray.from_arrays([0, 1, 3, 3], keys, codes),
                      "f": pa.FixedSizeListArray.from_arrays(pa.concat_arrays(
                          [codes, codes, codes]), 3)})
    plain = as_table(table)
    assert plain.schema == pa.schema([("l", pa.list_(pa.string())),
                                      ("s", pa.struct([("x", pa.string())])),
                                      ("c", pa.string()),
                                      ("m", pa.map_(pa.string(), pa.string())),
                                      ("f", pa.list_(pa.string(), 3))])
    assert plain.to_pylist() == table.to_pylist()


def test_conflicting_schemas_are_a_clear_error(output):
    values = [{"a": [1]}, {"a": ["one"]}]
    with pytest.raises(reduce_sql.SchemaConflictError, match=r"'a' is int64 in \[0\]"):
        gpar.apply(range(2), returns, values, output=output, progress=False)


def everything_outside(location, around: str) -> dict[str, tuple[int, float]]:
    """(size, mtime) of every file under ``around`` but the output root's own."""
    selector = pafs.FileSelector(around, allow_not_found=True, recursive=True)
    return {info.path: (info.size, info.mtime.timestamp())
            for info in location.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File and not info.path.startswith(location.root + "/")}


def test_names_and_values_from_tasks_are_data_never_paths(output, tmp_path):
    hostile = ["../../escape", "/etc/passwd", "a/b", "x\0y", "n" * 5000]
    values = [{name.replace("\0", ""): [name]} for name in hostile] + [{"x\0y": [1]}]
    if not locate(output).is_s3:  # deep enough that any "../" of a name lands in tmp_path
        output = str(tmp_path / "d1" / "d2" / "d3" / "out")
    location = locate(output)
    around = s3server.BUCKET if location.is_s3 else str(tmp_path)  # the whole bucket
    before, passwd = everything_outside(location, around), Path("/etc/passwd").read_bytes()
    with pytest.warns(gpar.TaskFailedWarning, match="must not contain NUL"):
        dataset = gpar.apply(range(len(values)), returns, values, output=output,
                             progress=False)
    hostile[3] = "xy"
    assert dataset.schema.names == hostile
    for name in hostile:
        column = dataset.to_arrow().column(name).drop_null().to_pylist()
        assert column == [name if name != "xy" else "x\0y"]
    assert all(path.startswith(("data/", "_gpar_", "_delta_log/"))
               for path in location.files())
    assert everything_outside(location, around) == before  # nothing written beside the root
    assert Path("/etc/passwd").read_bytes() == passwd


def test_a_batch_writes_its_elements_into_one_file_and_each_row_once(output, tmp_path):
    dataset = run(range(40), output, tmp_path)
    assert_exactly_once(dataset, range(40))
    batches = dataset.report.batches
    assert len(dataset.manifest.files) <= batches < 40  # a file per batch, not per element
    assert set(locate(output).files("data")) == {f.path for f in dataset.manifest.files}
    resumed = run(range(40), output, tmp_path)
    assert resumed.report.elements == 0 and resumed.manifest.tasks == set(range(40))


def test_many_small_files_are_merged_by_the_commit(tmp_path):
    location = locate(tmp_path / "out")
    parts = parts_of(location, [expected_table(task) for task in range(40)])
    manifest = commit_module.commit(location, "j" * 64, parts)
    assert len(manifest.files) == 1 and manifest.tasks == set(range(40))
    assert_exactly_once(reduce_sql.Dataset(location), range(40))
    # committed, then merged in a transaction of its own: the small files are retired, kept
    # for the version that listed them
    assert {path for path, _ in manifest.retired} == {part.path for part in parts}
    assert set(location.files("data")) == {manifest.files[0].path, *(p.path for p in parts)}
    assert engines_read(location, manifest.version - 1) == engines_read(location)
    merge = log_actions(location)[manifest.version]
    assert {action["dataChange"] for kind in ("add", "remove") for action in merge[kind]} == {
        False}  # a stream reading the table's changes reads no row twice


def test_compaction_into_several_files_runs_on_the_cluster(output, tmp_path, monkeypatch):
    """Elements that each run long are written one file each (heldtables.py); the commit merges
    them on the cluster, several merges at once."""
    monkeypatch.setattr(commit_module, "COMPACT_FILE_ROWS", 5 * ROWS)  # several merges
    monkeypatch.setattr(commit_module, "COMPACT_ABOVE_FILES", 4)
    slow = {(task, 0): ("sleep", 0.3) for task in range(10)}
    dataset = run(range(10), output, tmp_path, slow)
    assert_exactly_once(dataset, range(10))
    assert len(dataset.manifest.files) == 2
    assert sorted(dataset.manifest.files[0].tasks) == [0, 1, 2, 3, 4]
    assert all("compact-" in file.path for file in dataset.manifest.files)


def test_a_merge_that_fails_leaves_the_files_committed_and_says_so(output, tmp_path,
                                                                   monkeypatch, caplog):
    def storage_fails(*args):
        raise OSError("the store refused the merged file")

    monkeypatch.setattr(commit_module, "COMPACT_ABOVE_FILES", 4)
    monkeypatch.setattr(commit_module, "_compacted", storage_fails)
    slow = {(task, 0): ("sleep", 0.3) for task in range(6)}  # a file each
    dataset = run(range(6), output, tmp_path, slow)
    assert_exactly_once(dataset, range(6))
    assert len(dataset.manifest.files) == 6
    assert "merging the small files" in caplog.text and "refused the merged file" in caplog.text


def test_a_checkpoint_that_fails_is_logged_and_the_job_goes_on(tmp_path, monkeypatch, caplog):
    import reduce_sql.commit
    from gpar import output as gpar_output

    def storage_fails(*args):
        raise OSError("the store is away")

    monkeypatch.setattr(reduce_sql.commit, "checkpoint", storage_fails)
    monkeypatch.setattr(gpar_output, "_parts", lambda values: values)
    job = types.SimpleNamespace(checkpoints=True, location=locate(tmp_path), job="j",
                                previous=None, lease=None, elements=1)
    gpar_output.OutputJob.checkpoint(job, ["a part"])
    assert "checkpoint of the output" in caplog.text and "the store is away" in caplog.text


def test_query_joins_datasets_by_name(tmp_path):
    left = gpar.apply(range(3), rows_of, output=tmp_path / "left", progress=False)
    right = gpar.apply(range(2, 5), rows_of, output=tmp_path / "right", progress=False)
    joined = reduce_sql.query("SELECT l.x FROM l JOIN r USING (x)", l=left,
                              r=str(tmp_path / "right"))
    assert joined.to_pylist() == [{"x": 2}] and len(right) == 3


def test_bad_locations_and_names_are_clear_errors(tmp_path):
    with pytest.raises(reduce_sql.NoDatasetError, match="no committed output"):
        reduce_sql.Dataset(tmp_path)
    for uri in ("", "ftp://host/x", "s3://", "a\0b"):
        with pytest.raises(ValueError):
            locate(uri)
    (tmp_path / "file").write_text("")
    with pytest.raises(reduce_sql.OutputExistsError, match="is a file"):
        gpar.apply([1], rows_of, output=tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="only applies with output"):
        gpar.apply([1], rows_of, overwrite=True, progress=False)
    gpar.apply([1], rows_of, output=tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="identifiers"):
        reduce_sql.query("SELECT 1", **{"x; DROP": str(tmp_path / "d")})
    with pytest.raises(TypeError, match="no table can be named params"):
        reduce_sql.query("SELECT 1", data=str(tmp_path / "d"), params=str(tmp_path / "d"))


def test_output_accepts_a_path_object(tmp_path):
    dataset = gpar.apply([1, 2], rows_of, output=Path(tmp_path) / "p", progress=False)
    assert dataset.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]


def reduce_sql_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "reduce-sql"), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_cli_prints_writes_and_describes(tmp_path):
    out = tmp_path / "out"
    gpar.apply(range(5), rows_of, output=out, progress=False)
    printed = reduce_sql_cli(str(out), "SELECT x, x * 2 AS y FROM data ORDER BY x", "--max-rows",
                             "3")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].split() == ["x", "y"] and lines[1].split() == ["0", "0"]
    assert lines[3].split() == ["2", "4"] and "2 more rows" in lines[4]
    for name in ("r.csv", "r.parquet"):
        written = reduce_sql_cli(str(out), "SELECT sum(x) AS s FROM data", "-o",
                                 str(tmp_path / name))
        assert written.returncode == 0 and "1 rows written" in written.stdout
    assert (tmp_path / "r.csv").read_text().splitlines() == ['"s"', "10"]
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [{"s": 10}]
    schema = reduce_sql_cli(str(out), "--schema")
    assert re.search(r"5 rows in \d files", schema.stdout) and "  x: int64" in schema.stdout
    missing = reduce_sql_cli(str(tmp_path / "nothing"), "SELECT 1")
    assert missing.returncode == 1 and "no committed output" in missing.stderr
    typo = reduce_sql_cli(str(out), "SELEC x FROM data")
    assert typo.returncode == 1 and "syntax error" in typo.stderr.lower()


def parts_of(location, tables, job="j" * 64, first=0):
    """A Part for each table (tasks ``first`` on), written one file each (as elements that
    each ran long are)."""
    from reduce_sql.parts import Sink

    writer = Sink(location, job, 0, list(range(first, first + len(tables)))).open()
    return [part for task, table in enumerate(tables)
            for _, part in writer.write([[(task, writer.table_for(table))]])]


def test_a_failed_merge_commits_the_files_as_they_are(tmp_path):
    location = locate(tmp_path / "out")
    parts = parts_of(location, [{"x": [task]} for task in range(20)])

    def failing(fn, groups):
        raise OSError("the store went away")

    manifest = commit_module.commit(location, "j" * 64, parts, run_all=failing)
    assert len(manifest.files) == 20 and manifest.tasks == set(range(20))


def test_a_zero_row_task_on_resume_never_conflicts(tmp_path):
    location = locate(tmp_path / "out")
    first = commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [1.5]}]))
    empty = pa.table({"x": pa.array([], pa.string())})
    task_1 = parts_of(location, [{"x": [1.5]}, empty])[1:]
    resumed = commit_module.commit(location, "j" * 64, task_1, previous=first)
    assert resumed.schema.field("x").type == pa.float64() and resumed.tasks == {0, 1}


def test_files_are_read_by_column_name_unless_all_share_one_schema(tmp_path):
    """A run resumed with a column more: its files and the first run's differ, and a query
    still finds each column by name (the first run's rows hold nulls in the new one)."""
    location = locate(tmp_path / "out")
    first = commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [1], "y": [2]}]))
    assert first.uniform
    later = parts_of(location, [{}, {"y": [3], "z": ["new"], "x": [4]}])[1:]
    resumed = commit_module.commit(location, "j" * 64, later, previous=first)
    assert not resumed.uniform
    got = reduce_sql.Dataset(location).sql("SELECT x, y, z FROM data ORDER BY x").to_pylist()
    assert got == [{"x": 1, "y": 2, "z": None}, {"x": 4, "y": 3, "z": "new"}]


def test_overwrite_never_deletes_files_gpar_did_not_write(tmp_path):
    """Not even Parquet files named as pyarrow's and polars' writers name theirs."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.csv").write_text("a,b\n")
    pq.write_to_dataset(pa.table({"mine": [1, 2]}), tmp_path / "data",
                        basename_template="part-{i}.parquet")
    gpar.apply([1, 2], rows_of, output=tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "data" / "mine.csv").read_text() == "a,b\n"
    assert pq.read_table(tmp_path / "data" / "part-0.parquet")["mine"].to_pylist() == [1, 2]


def weekly_means(task):
    frame = pd.DataFrame({"week": pd.date_range("2024-01-07", periods=3, freq="W").repeat(2),
                          "y": [task, 1, 2, 3, 4, 5]})
    return frame[frame.y > 0].groupby("week").y.mean().to_frame()  # indexed by week


def test_a_frames_named_index_is_written_as_a_column(tmp_path):
    """A groupby's keys (or set_index's) are data; an unnamed index is row numbers."""
    dataset = gpar.apply([0, 7], weekly_means, output=tmp_path / "o", progress=False)
    assert dataset.schema.names == ["week", "y"]
    got = dataset.sql("SELECT strftime(week, '%m-%d') AS week, y FROM data ORDER BY y, week")
    assert list(zip(*got.to_pydict().values(), strict=True)) == [
        ("01-07", 1.0), ("01-14", 2.5), ("01-14", 2.5), ("01-07", 4.0), ("01-21", 4.5),
        ("01-21", 4.5)]
    from reduce_sql.tables import as_table

    filtered = pd.DataFrame({"v": [1, 2, 3]}).query("v > 1")
    assert as_table(filtered).column_names == ["v"]
    kept_too = pd.DataFrame({"k": [1.0, None], "v": [3, 4]}).set_index("k", drop=False)
    assert as_table(kept_too).column_names == ["k", "v"]
    clash = pd.DataFrame({"k": [1]}, index=pd.Index([5], name="k"))
    with pytest.raises(reduce_sql.OutputTypeError, match="index level 'k' has the name of a"):
        as_table(clash)


def no_output_for_task_2(task):
    if task == 2:
        raise ValueError("no data for this series")
    return {"task": [task]}


def test_an_output_missing_tasks_says_so_to_whoever_opens_it_later(tmp_path):
    with pytest.warns(gpar.TaskFailedWarning) as caught:
        gpar.apply(range(4), no_output_for_task_2, output=tmp_path / "o", progress=False)
    assert not [w for w in caught if w.category is reduce_sql.PartialOutputWarning]
    with pytest.warns(reduce_sql.PartialOutputWarning, match="3 of its job's 4 tasks"):
        assert reduce_sql.Dataset(tmp_path / "o").num_rows == 3


def test_a_frame_arrow_cannot_convert_is_an_output_type_error():
    from reduce_sql.tables import as_table

    with pytest.raises(reduce_sql.OutputTypeError, match="could not be made a table"):
        as_table(pd.DataFrame({"mixed": [1, "x"]}))


def test_an_output_without_columns_says_so_when_queried(tmp_path):
    dataset = gpar.apply([], rows_of, output=tmp_path / "none", progress=False)
    with pytest.raises(reduce_sql.NoDatasetError, match="no columns"):
        dataset.sql("SELECT count(*) FROM data")


def test_a_reader_keeps_the_version_it_opened_while_a_job_commits(output, tmp_path, monkeypatch):
    """An analyst opens the output while the job is still writing (a checkpoint); the job's
    commit merges the files that version lists. The reader keeps reading what it opened; a
    reader opened after the commit sees all of it."""
    location = locate(output)
    parts = parts_of(location, [expected_table(task) for task in range(40)])
    commit_module.checkpoint(location, "j" * 64, parts[:30])
    with pytest.warns(reduce_sql.PartialOutputWarning):
        early = reduce_sql.Dataset(output)
    assert_exactly_once(early, range(30))

    final = commit_module.commit(location, "j" * 64, parts)
    assert len(final.files) == 1  # the 30 files early reads were merged away...
    assert_exactly_once(early, range(30))  # ...and early still reads them
    assert_exactly_once(reduce_sql.Dataset(output), range(40))
    # the 30 a version listed, and the 10 the commit listed before it merged them
    assert {path for path, _ in final.retired} == {p.path for p in parts}

    monkeypatch.setattr(commit_module, "RETAIN_S", 0.0)  # the grace period has passed
    commit_module.commit(location, "j" * 64, [], previous=final)  # the next commit removes them
    assert set(location.files("data")) == {final.files[0].path}
    with pytest.raises(reduce_sql.StaleDatasetError, match="open Dataset"):
        early.sql("SELECT count(*) FROM data")
    assert_exactly_once(reduce_sql.Dataset(output), range(40))


def test_a_reader_of_an_output_being_replaced_keeps_reading_it(output, tmp_path):
    old = run(range(6), output, tmp_path)
    reader = reduce_sql.Dataset(output)
    replaced = gpar.apply(range(2), returns, [{"a": [1]}, {"a": [2]}], output=output,
                          overwrite=True, progress=False)
    assert_exactly_once(reader, range(6))
    assert replaced.sql("SELECT sum(a) AS s FROM data").to_pylist() == [{"s": 3}]
    assert old.manifest.files[0].path in locate(output).files("data")  # retired, kept


WAITING_DRIVER = """
import pathlib, sys, time
import gpar

output, release = sys.argv[1], pathlib.Path(sys.argv[2])

def fn(task):
    while not release.exists():
        time.sleep(0.05)
    return {"task": [task]}

gpar.apply(range(4), fn, output=output, progress=False)
print("done")
"""


def test_a_second_driver_is_refused_while_the_first_writes_the_output(output, tmp_path,
                                                                      cluster):
    (tmp_path / "job.py").write_text(WAITING_DRIVER)
    release = tmp_path / "release"
    first = subprocess.Popen([sys.executable, "job.py", output, str(release)], cwd=tmp_path,
                             env={**os.environ, "RAY_ADDRESS": cluster}, text=True,
                             stdout=subprocess.PIPE)
    try:
        from reduce_sql.lease import LEASE

        assert wait_until(lambda: locate(output).read_bytes(LEASE) is not None, 60)
        with pytest.raises(gpar.GparError, match="being written by another driver") as busy:
            run(range(3), output, tmp_path)
        assert isinstance(busy.value, reduce_sql.OutputBusyError)
        release.touch()
        assert first.communicate(timeout=120)[0].strip() == "done"
    finally:
        first.kill()
        first.wait()
    dataset = run(range(3), output, tmp_path, overwrite=True)  # the lease was released
    assert_exactly_once(dataset, range(3))


def test_a_lease_expires_or_dies_with_its_driver_on_this_host(tmp_path):
    import json
    import socket

    from reduce_sql.lease import LEASE, Lease

    location = locate(tmp_path / "out")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    held = {"holder": "other", "host": "elsewhere", "pid": 1, "expires_at": time.time() + 60}
    for lease, refused in [(held, True), ({**held, "expires_at": time.time() - 1}, False),
                           ({**held, "host": socket.gethostname(), "pid": int(dead)}, False)]:
        location.write_atomically(LEASE, json.dumps(lease).encode())
        if refused:
            with pytest.raises(reduce_sql.OutputBusyError, match="elsewhere, pid 1"):
                Lease.acquire(location)
        else:
            taken = Lease.acquire(location)
            taken.check()
            taken.release()
            assert location.read_bytes(LEASE) is None
    location.write_atomically(LEASE, json.dumps(held).encode())
    lost = Lease(location)  # a driver whose lease another took after it expired
    with pytest.raises(reduce_sql.OutputBusyError, match="lost its lease"):
        commit_module.checkpoint(location, "j" * 64, [], lease=lost)


def test_an_element_that_runs_long_is_written_in_a_file_of_its_own(output, tmp_path):
    """Only an element that ran long can get a backup, and the commit takes a file whole: so
    that element never shares a file with others."""
    from gpar import heldtables
    from gpar.stragglers import BACKUP_MIN_S

    assert heldtables.WRITE_ALONE_AFTER_S < BACKUP_MIN_S
    dataset = run(range(12), output, tmp_path, {(5, 0): ("sleep", 0.6)}, max_workers=1)
    assert_exactly_once(dataset, range(12))
    holding = [file for file in dataset.manifest.files if 5 in file.tasks]
    assert [file.tasks for file in holding] == [(5,)]


def test_a_file_is_committed_whole_or_not_at_all(tmp_path):
    """Should a file ever hold a task whose winning attempt is elsewhere, neither it nor its
    other tasks are committed: they are written again by the next run of the job."""
    from reduce_sql.parts import Sink

    location = locate(tmp_path / "out")
    writer = Sink(location, "j" * 64, 0, [0, 1, 2]).open()
    shared = [part for _, part in writer.write(
        [[(task, writer.table_for(expected_table(task))) for task in range(3)]])]
    winner = parts_of(location, [expected_table(task) for task in range(3)])[2]
    manifest = commit_module.commit(location, "j" * 64, [*shared[:2], winner])
    assert manifest.tasks == {2} and location.files("data") == [winner.path]


def test_cluster_by_sorts_each_file_so_filters_skip_row_groups(output, tmp_path):
    def rows(task):
        return pd.DataFrame({"horizon": [h for h in range(52, 0, -1) for _ in range(3)],
                             "series": f"s{task}", "error": 0.1 * task})

    dataset = gpar.apply(range(20), rows, output=output, cluster_by=["horizon", "series"],
                         progress=False)
    location = locate(output)
    for file in dataset.manifest.files:
        with location.filesystem.open_input_file(location.path(file.path)) as stream:
            table = pq.read_table(stream)
        assert table.column("horizon").to_pylist() == sorted(table.column("horizon").to_pylist())
    assert dataset.sql("SELECT count(*) AS n FROM data WHERE horizon = 52").to_pylist() == [
        {"n": 60}]


def test_a_clustered_file_of_several_row_groups_is_sorted_across_them(tmp_path, monkeypatch):
    """A batch's file is sorted SORTED_ROWS at a time and written in row groups: the order must
    hold across both, so each group covers its own narrow range of the key. (Groups of 4,096
    rows here, sorted 8,192 at a time, so the test writes three quickly.)"""
    from reduce_sql import tables
    from reduce_sql.tables import write_table

    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 4096)
    monkeypatch.setattr(tables, "SORTED_ROWS", 8192)
    rows = 3 * tables.ROW_GROUP_ROWS
    elements = [pa.table({"horizon": [(i * 7919) % 52 for i in range(start, start + rows // 4)],
                          "value": list(range(start, start + rows // 4))})
                for start in range(0, rows, rows // 4)]  # one chunk per element, keys mixed
    path = tmp_path / "clustered.parquet"
    write_table(pa.concat_tables(elements), str(path), pa.fs.LocalFileSystem(), ["horizon"])
    written = pq.ParquetFile(path)
    horizons = written.read().column("horizon").to_pylist()
    assert horizons == sorted(horizons) and written.read().num_rows == rows
    ranges = [(group.column(0).statistics.min, group.column(0).statistics.max)
              for group in map(written.metadata.row_group, range(written.num_row_groups))]
    assert len(ranges) == 3 and all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))


def clustered_file(tmp_path) -> str:
    """One group of 104,000 rows sorted by horizon, as cluster_by writes it."""
    from reduce_sql import tables

    horizons = pa.table({"horizon": [h for h in range(1, 53) for _ in range(2000)],
                         "error": [float(i) for i in range(104_000)]})
    path = tmp_path / "clustered.parquet"
    tables.write_table(horizons, str(path), pa.fs.LocalFileSystem(), ["horizon"])
    return str(path)


def test_each_file_has_a_page_index(tmp_path):
    """Pages' min/max are in a page index, which a reader uses to skip pages within a group
    (below: one group of 104,000 rows, so what is skipped is pages)."""
    metadata = pq.ParquetFile(clustered_file(tmp_path)).metadata
    group = metadata.row_group(0)
    assert metadata.num_row_groups == 1 and group.num_rows == 104_000
    assert all(group.column(i).has_column_index and group.column(i).has_offset_index
               for i in range(group.num_columns))


def test_duckdb_reads_the_page_index_so_a_filter_skips_pages_within_a_group(tmp_path):
    """On the DuckDB a plain install gets, with the settings a Dataset's database has (2.0
    prefetches a column chunk whole unless told not to)."""
    from reduce_sql import dataset as dataset_module

    path = clustered_file(tmp_path)
    profile = dataset_module._new_database().sql(
        f"EXPLAIN ANALYZE SELECT sum(error) FROM '{path}' WHERE horizon = 52").fetchall()
    read = re.search(r"Data Read:\s+([\d.]+) (\w+)", profile[0][1])
    assert read is not None and float(read[1]) * {"B": 1, "kB": 1e3, "MB": 1e6}[read[2]] < (
        104_000 * 8 / 4)  # about a page of 104,000 doubles, not all of them


def test_cluster_by_needs_output_and_columns_every_table_has(tmp_path):
    with pytest.raises(ValueError, match="cluster_by only applies with output="):
        gpar.apply([1], abs, cluster_by="x")
    with pytest.raises(ValueError, match="cluster_by takes a column name or a list"):
        gpar.apply([1], abs, output=tmp_path / "a", cluster_by=[3])
    with pytest.warns(gpar.TaskFailedWarning, match="cluster_by names \\['missing'\\]"):
        dataset = gpar.apply([0, 1], returns, [{"a": [1]}, {"a": [2], "missing": [0]}],
                             output=tmp_path / "b", cluster_by="missing", progress=False)
    assert [failure.index for failure in dataset.failures] == [0]
    assert dataset.failures[0].attempts == 1  # fn's to fix: not retried
    with pytest.warns(gpar.TaskFailedWarning, match="'tags', whose values .* cannot be sorted"):
        dataset = gpar.apply([0, 1], returns, [{"tags": [["a", "b"]]}, {"tags": [None]}],
                             output=tmp_path / "c", cluster_by="tags", progress=False)
    assert [(failure.index, failure.attempts) for failure in dataset.failures] == [(0, 1)]


def test_a_dict_of_single_values_says_how_to_make_one_row():
    from reduce_sql.tables import as_table

    with pytest.raises(reduce_sql.OutputTypeError, match="'x' holds one value .*\\{'x': \\[1\\]"):
        as_table({"x": 1, "y": [2]})


def test_a_dataset_on_a_file_or_not_a_path_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("a\n")
    with pytest.raises(reduce_sql.NoDatasetError, match="is a file; a Dataset is the directory"):
        reduce_sql.Dataset(tmp_path / "results.csv")
    with pytest.raises(ValueError, match="an output is a directory path or an s3:// URI"):
        reduce_sql.Dataset(123)


def test_with_output_the_quick_elements_around_hung_ones_are_written_once(output, tmp_path):
    """The issue-11 scenario with output=: elements 4 and 9 hang. The tables an element's batch
    held before it are written as soon as it has run long, so quorum sees them and none is
    lost with the batch when the hung element is preempted (each quick element runs once)."""
    with pytest.warns(gpar.IncompleteResultsWarning, match="quorum"):
        dataset = run(range(20), output, tmp_path, hanging((4, 9)), quorum=0.9)
    # the quorum ended the job: it waited for neither hung element
    assert sorted((failure.index, failure.reason) for failure in dataset.failures) == [
        (4, "quorum"), (9, "quorum")]
    quick = [task for task in range(20) if task not in (4, 9)]
    assert dataset.manifest.tasks == set(quick)
    assert [attempts_of(tmp_path, task) for task in quick] == [1] * len(quick)
    assert_exactly_once(dataset, quick)


def committed(path, tables) -> reduce_sql.Dataset:
    """A Dataset over ``tables`` committed at ``path``, one file each (no cluster needed)."""
    location = locate(path)
    commit_module.commit(location, "j" * 64, parts_of(location, tables))
    return reduce_sql.Dataset(location)


def test_datasets_opened_per_query_share_one_duckdb_not_their_views(tmp_path, monkeypatch):
    """A notebook opens the output in each cell: every Dataset of the process queries one
    DuckDB (made once, its Parquet footers cached once), each through a view of its own."""
    from reduce_sql import dataset as dataset_module

    made = []
    new_database = dataset_module._new_database
    monkeypatch.setattr(dataset_module, "_shared", {})
    monkeypatch.setattr(dataset_module, "_new_database", lambda: made.append(1) or new_database())
    first = committed(tmp_path / "a", [{"x": [1, 2]}])
    other = committed(tmp_path / "b", [{"x": [10]}, {"x": [20]}])
    assert first.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]
    assert other.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 30}]
    assert first.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]
    for _ in range(5):
        fresh = reduce_sql.Dataset(tmp_path / "b")
        assert fresh.sql("SELECT count(*) AS n FROM data").to_pylist() == [{"n": 2}]
    got = reduce_sql.query("SELECT count(*) AS n FROM a, b", a=first, b=other).to_pylist()
    assert got == [{"n": 4}]
    assert len(made) == 1


def test_a_fresh_dataset_queries_with_the_footers_and_settings_earlier_ones_had(tmp_path):
    """The next cell's Dataset is a new cursor of the shared DuckDB: it runs with the Parquet
    footers cached and the database's settings, as a kept-open one would (a setting made with
    a plain SET would hold for the database's first connection alone)."""
    committed(tmp_path / "out", [{"x": list(range(1000))}, {"x": [7]}])
    first = reduce_sql.Dataset(tmp_path / "out")
    assert first.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 499_507}]
    chunks = ("disable_parquet_prefetching" if int(duckdb.__version__.split(".")[0]) >= 2
              else "prefetch_all_parquet_files")  # see dataset._new_database
    settings = reduce_sql.Dataset(tmp_path / "out").sql(
        f"SELECT current_setting('parquet_metadata_cache') AS footers, "
        f"current_setting('{chunks}') AS chunks")
    assert settings.to_pylist() == [{"footers": True, "chunks": True}]


def test_a_statement_with_no_answer_returns_a_table_of_no_columns(tmp_path):
    """SET, CREATE, INSERT: the same empty table on any DuckDB (2.0 answers them with a status
    column of its own); what does answer (RETURNING, EXPLAIN, CALL) is returned."""
    dataset = committed(tmp_path / "a", [{"x": [1]}])
    for statement in ("SET threads = 2", "CREATE TABLE t AS SELECT x FROM data",
                      "INSERT INTO t VALUES (2)", "UPDATE t SET x = 3 WHERE x = 2"):
        assert dataset.sql(statement).num_columns == 0, statement
    assert dataset.sql("INSERT INTO t VALUES (4) RETURNING x").to_pylist() == [{"x": 4}]
    assert dataset.sql("SELECT sum(x) AS Count FROM t").to_pylist() == [{"Count": 8}]
    assert dataset.sql("CALL pragma_version()").num_rows == 1


def test_a_statement_that_is_not_a_select_stays_in_its_dataset(tmp_path):
    """SET, CREATE and the like would reach every Dataset of the process through the shared
    DuckDB: the Dataset that runs one gets a DuckDB of its own, keeping its view."""
    setting = "SELECT current_setting('threads') AS t"
    tinkered = committed(tmp_path / "a", [{"x": [1]}])
    other = committed(tmp_path / "b", [{"x": [2]}])
    threads = other.sql(setting)[0][0].as_py()
    assert tinkered.sql("SET threads = $n", params={"n": threads + 1}).num_rows == 0
    tinkered.sql("CREATE TABLE scratch AS SELECT 7 AS y")
    assert tinkered.sql(setting)[0][0].as_py() == threads + 1  # its settings and tables last...
    assert tinkered.sql("SELECT x + y AS z FROM data, scratch").to_pylist() == [{"z": 8}]
    assert other.sql(setting)[0][0].as_py() == threads  # ...and reach no other Dataset
    fresh = reduce_sql.Dataset(tmp_path / "b")
    assert fresh.sql(setting)[0][0].as_py() == threads
    with pytest.raises(duckdb.CatalogException, match="scratch"):
        fresh.sql("SELECT * FROM scratch")
    with pytest.raises(duckdb.CatalogException, match="scratch"):
        reduce_sql.query("SELECT * FROM scratch", data=fresh)


def test_a_dataset_used_by_fn_travels_to_the_workers(tmp_path):
    """A second stage that queries the first one's output in each task: fn's Dataset goes to
    the workers as the version it opened, and each opens its own DuckDB there."""
    evals = committed(tmp_path / "evals", [{"model": ["ets", "ets", "theta"], "x": [1, 2, 3]}])
    assert evals.sql("SELECT count(*) AS n FROM data").to_pylist() == [{"n": 3}]  # connected

    def total(model: str) -> int:
        return evals.sql("SELECT sum(x) AS s FROM data WHERE model = $m",
                         params={"m": model}).to_pylist()[0]["s"]

    assert gpar.apply(["ets", "theta"], total, progress=False) == [3, 3]
    tinkered = committed(tmp_path / "other", [{"x": [5]}])
    setting = "SELECT current_setting('threads') AS t"
    threads = tinkered.sql(setting)[0][0].as_py()
    tinkered.sql("SET threads = $n", params={"n": threads + 1})
    sent = pickle.loads(pickle.dumps(tinkered))
    assert sent.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 5}]
    assert sent.sql(setting)[0][0].as_py() == threads  # the SET stayed where it was made
    tinkered.note = "a user's attribute"
    for kept in (copy.copy(tinkered), copy.deepcopy(tinkered)):  # in this process: all of it
        assert kept.note == "a user's attribute" and kept.sql(setting)[0][0].as_py() == threads


def test_the_dataset_apply_returns_carries_the_jobs_report_only_in_this_process(tmp_path):
    """reduce_sql knows nothing of gpar's jobs: the report and failures travel beside the
    Dataset apply returns, and a copy sent elsewhere is a plain Dataset of that version."""
    dataset = gpar.apply(range(3), rows_of, output=tmp_path / "out", progress=False)
    assert isinstance(dataset, reduce_sql.Dataset) and dataset.report.elements == 3
    assert dataset.failures == [] and copy.copy(dataset).report is dataset.report
    sent = pickle.loads(pickle.dumps(dataset))
    assert type(sent) is reduce_sql.Dataset and not hasattr(sent, "report")
    assert sent.num_rows == dataset.num_rows
    assert b"gpar.outputdataset" not in pickle.dumps(dataset)


def test_a_two_stage_script_run_again_resumes_its_second_stage(tmp_path):
    """Stage two's fn queries stage one's output. The script run again is the same two jobs
    (stage two depends on stage one's version, not on its report or the keys that read it), so
    nothing is rewritten; once stage one is rewritten, stage two is another job, whose output
    the earlier one must not stand in for."""
    def script(scale: int, overwrite: bool = False) -> reduce_sql.Dataset:
        evals = gpar.apply(range(3), lambda i: {"i": [i], "x": [i * scale]},
                           output=tmp_path / "evals", overwrite=overwrite, progress=False)

        def total(i: int) -> dict:
            return {"i": [i], "s": [evals.sql("SELECT sum(x) AS s FROM data WHERE i = $i",
                                              params={"i": i})[0][0].as_py()]}

        return gpar.apply(range(3), total, output=tmp_path / "sums", progress=False)

    first = script(10)
    again = script(10)
    assert again.manifest == first.manifest  # resumed: nothing ran again, nothing rewritten
    assert again.sql("SELECT sum(s) AS s FROM data").to_pylist() == [{"s": 30}]
    with pytest.raises(reduce_sql.OutputExistsError):
        script(20, overwrite=True)


def test_a_forked_child_queries_while_a_parent_thread_held_the_locks(tmp_path):
    """A fork (multiprocessing's default start on Linux) while another thread of the parent
    is inside a query: the child's Datasets, inherited or new, do not wait on that thread."""
    from reduce_sql import dataset as dataset_module
    from reduce_sql import httpfs

    inherited = committed(tmp_path / "out", [{"x": [1, 2, 3]}])
    assert inherited.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 6}]
    locks = [inherited._lock, dataset_module._shared_lock, httpfs._lock]
    child, ended = 0, False
    for lock in locks:  # as a query of another thread would at the fork
        lock.acquire()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover (the child reports through its exit status)
            try:
                fresh = reduce_sql.Dataset(tmp_path / "out")
                answers = [d.sql("SELECT sum(x) AS s FROM data")[0][0].as_py()
                           for d in (inherited, fresh)]
                os._exit(0 if answers == [6, 6] else 1)
            finally:
                os._exit(2)
        status = []
        ended = wait_until(lambda: status.append(os.waitpid(child, os.WNOHANG)) or
                           status[-1][0] == child, 60)
    finally:
        for lock in locks:
            lock.release()
        if child and not ended:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    assert ended, "the child waited on a lock a thread of its parent held"
    assert os.waitstatus_to_exitcode(status[-1][1]) == 0  # both answered, rightly


def test_a_forked_child_that_exits_as_scripts_do_ends_cleanly(tmp_path):
    """A child of os.fork that queries and then exits through sys.exit (not multiprocessing's
    os._exit): the interpreter's teardown leaves the parent's DuckDB alone (destroying it
    aborted the child, DuckDB 2.0)."""
    script = tmp_path / "fork.py"
    script.write_text(
        "import os, sys, reduce_sql\n"
        f"d = reduce_sql.Dataset({str(tmp_path / 'out')!r})\n"
        "d.sql('SELECT count(*) FROM data')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    d.sql('SELECT count(*) FROM data'); reduce_sql.Dataset({str(tmp_path / 'out')!r})"
        ".sql('SELECT 1')\n"
        "    sys.exit(0)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    committed(tmp_path / "out", [{"x": [1, 2, 3]}])
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert ran.stdout.strip() == "0", ran.stderr


def test_concurrent_queries_from_threads_each_get_their_own_answer(tmp_path):
    """Threads querying one Dataset, and threads each opening their own, at once."""
    from concurrent.futures import ThreadPoolExecutor

    for number in range(4):
        committed(tmp_path / str(number), [{"x": list(range(number * 1000, number * 1000 + 500))},
                                           {"x": [number]}])
    shared = reduce_sql.Dataset(tmp_path / "0")

    def total(job: int) -> tuple[int, int]:
        number = job % 4
        dataset = shared if number == 0 else reduce_sql.Dataset(tmp_path / str(number))
        return number, dataset.sql("SELECT sum(x) AS s FROM data")[0][0].as_py()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(total, range(64)))
    expected = {n: sum(range(n * 1000, n * 1000 + 500)) + n for n in range(4)}
    assert answers == [(job % 4, expected[job % 4]) for job in range(64)]


def reader_of(dataset: reduce_sql.Dataset) -> str:
    """Which reader the Dataset's view ``data`` uses: DuckDB's own, or a registered pyarrow
    scan (a view with no SQL). A SELECT, so the Dataset stays on the shared DuckDB."""
    view = dataset.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'data'")
    return "duckdb" if "read_parquet" in view.column("sql")[0].as_py() else "pyarrow"


@pytest.mark.httpfs
def test_an_s3_output_is_read_by_duckdb_and_the_bytes_kept_for_the_next_dataset(s3_environment,
                                                                                monkeypatch):
    """DuckDB reads an S3 output's files itself (httpfs, from gpar[s3]), as it reads local
    ones, and keeps the bytes it read for the process's later Datasets: a notebook's next
    cell reads memory, not the network (a committed file is never rewritten)."""
    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    location = locate(f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/out")
    commit_module.commit(location, "j" * 64,
                         parts_of(location, [{"x": list(range(1000))}, {"x": [7]}]))
    dataset = reduce_sql.Dataset(location)
    assert reader_of(dataset) == "duckdb"
    assert dataset.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 499_507}]
    cached = reduce_sql.Dataset(location).sql(
        "SELECT DISTINCT path FROM duckdb_external_file_cache() WHERE loaded").column("path")
    assert {f"s3://{path}" for path in dataset.files} <= set(cached.to_pylist())


@pytest.mark.httpfs
def test_s3_keys_become_a_secret_for_their_output_alone():
    """The keys a Location carries reach DuckDB as a secret scoped to that output's root:
    quoted, addressed as pyarrow addresses the endpoint, not used for a sibling prefix; and
    other keys for the same root are refused (their Dataset reads through pyarrow)."""
    from reduce_sql import httpfs
    from reduce_sql.store import Location

    connection, held = duckdb.connect(), {}
    options = (("endpoint_override", "http://127.0.0.1:9/"), ("access_key", "key'id"),
               ("secret_key", "se'cret"), ("region", "eu-west-1"))
    location = Location("s3://bucket/o'ut", "bucket/o'ut", options)
    assert httpfs.enable(connection, location, held)  # gpar[s3], which tests install, has httpfs

    def secret_for(url: str) -> tuple | None:
        return connection.sql("SELECT name FROM which_secret($url, 's3')",
                              params={"url": url}).fetchone()

    assert secret_for("s3://bucket/o'ut/data/part.parquet") is not None
    assert secret_for("s3://bucket/o'ut2/data/part.parquet") is None
    described = connection.sql("SELECT secret_string FROM duckdb_secrets()").fetchone()[0]
    for field in ("key_id=key'id", "endpoint=127.0.0.1:9;", "region=eu-west-1",
                  "url_style=path", "use_ssl=false"):
        assert field in described
    assert httpfs.enable(connection, location, held)  # the same keys again: the same secret
    other_keys = Location(location.uri, location.root, options[:1] + (("access_key", "k2"),))
    assert not httpfs.enable(connection, other_keys, held)
    assert "key_id=key'id" in connection.sql(
        "SELECT secret_string FROM duckdb_secrets()").fetchone()[0]
    assert not httpfs.enable(connection, Location("s3://bucket/x", "bucket/x", ()), held)
    assert not httpfs.enable(connection, Location("s3://bucket/r[1]", "bucket/r[1]", options),
                             held)  # DuckDB would read [1] as a glob


@pytest.mark.httpfs
def test_a_dataset_with_other_s3_options_for_an_open_root_reads_through_pyarrow(
        s3_environment, monkeypatch):
    """Two Datasets of one output whose options differ (here the endpoint, written with a
    slash): the first holds the root's secret in the shared DuckDB, the second reads through
    pyarrow with its own options; neither changes what the other reads with."""
    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    location = locate(f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/out")
    commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [1, 2]}]))
    first = reduce_sql.Dataset(location)
    assert first.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]
    options = tuple((name, value + "/" if name == "endpoint_override" else value)
                    for name, value in location.s3_options)
    second = reduce_sql.Dataset(dataclasses.replace(location, s3_options=options))
    assert second.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]
    assert reader_of(second) == "pyarrow" and reader_of(first) == "duckdb"
    assert first.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]


@pytest.mark.parametrize("name", ["run[1]", "r]", "a^b", "a|b", "a\\b", "a%20b", "s3:q?x",
                                  "s3:a#b"])
def test_a_path_deltalake_cannot_address_is_refused_naming_the_characters(name, tmp_path):
    """deltalake crashes the process on some of these (r[1]: an abort), refuses others,
    and reads %20 as a space or ? as a URL's query; a space, unicode, * and {} it takes."""
    uri = f"s3://{s3server.BUCKET}/{name[3:]}" if name.startswith("s3:") else str(
        tmp_path / name)
    with pytest.raises(ValueError, match="cannot address"):
        locate(uri)
    fine = locate(str(tmp_path / "a b ü*{x};c"))
    commit_module.commit(fine, "j" * 64, parts_of(fine, [{"x": [7]}]))
    assert reduce_sql.Dataset(fine).sql("SELECT sum(x) AS s FROM data").to_pylist() == [
        {"s": 7}]
    assert deltalake.DeltaTable(fine.root).to_pandas()["x"].to_list() == [7]


@pytest.mark.xfail(strict=True, reason="polars' scan_delta (2.2) opens the percent-encoded "
                   "file URIs deltalake gives (a%20b) as they are, so a table whose local "
                   "path holds a space or a non-ASCII letter is unreadable by polars alone "
                   "(a path, a file:// URI or a DeltaTable alike; its pyarrow dataset reads)")
def test_polars_reads_an_output_whose_path_holds_a_space(tmp_path):
    location = locate(str(tmp_path / "a b"))
    commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [7]}]))
    assert polars.scan_delta(location.root).collect()["x"].to_list() == [7]


def test_threads_querying_s3_outputs_each_get_their_own_answer(s3_environment, monkeypatch):
    """Threads each opening Datasets of S3 outputs at once: the first query of each makes
    the root's secret in the shared DuckDB, which DuckDB lets one statement write at a time."""
    from concurrent.futures import ThreadPoolExecutor

    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    prefix = f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}"
    for number in range(4):
        location = locate(f"{prefix}/{number}")
        commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [number, 10]}]))

    def total(job: int) -> tuple[int, int]:
        dataset = reduce_sql.Dataset(f"{prefix}/{job % 4}")
        return job % 4, dataset.sql("SELECT sum(x) AS s FROM data")[0][0].as_py()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(total, range(64)))
    assert answers == [(job % 4, job % 4 + 10) for job in range(64)]


def test_datasets_of_one_s3_version_share_its_scan_and_a_new_version_is_seen(s3_environment,
                                                                             monkeypatch):
    """Where DuckDB has no httpfs (no gpar[s3]), S3 files are scanned through pyarrow: footers
    read from the object store are kept by the version's scan, which Datasets of that version
    share; a Dataset opened after the next commit reads the new file list."""
    from reduce_sql import dataset as dataset_module
    from reduce_sql import httpfs

    monkeypatch.setattr(httpfs, "_loader", None)  # as where no way to load httpfs was found
    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    location = locate(f"s3://{s3server.BUCKET}/{uuid.uuid4().hex[:8]}/out")
    first = commit_module.commit(location, "j" * 64, parts_of(location, [{"x": [1]}]))
    early, again = reduce_sql.Dataset(location), reduce_sql.Dataset(location)
    assert early.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 1}]
    assert again.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 1}]

    def scan(dataset):
        return dataset_module._arrow_dataset(dataset.location, tuple(dataset.files),
                                             dataset.schema)

    assert scan(early) is scan(again)
    later = parts_of(location, [{}, {"x": [2]}])[1:]
    commit_module.commit(location, "j" * 64, later, previous=first)
    fresh = reduce_sql.Dataset(location)
    assert fresh.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 3}]
    assert early.sql("SELECT sum(x) AS s FROM data").to_pylist() == [{"s": 1}]
    assert scan(fresh) is not scan(early)


def test_a_cancelled_job_commits_what_finished_and_releases_the_output(output, tmp_path):
    gate = tmp_path / "never"
    table = {(task, 0): ("wait_for", str(gate)) for task in range(2, 6)}
    job = gpar.submit(range(6), mapper, table, str(tmp_path), locate(output), output=output,
                      max_workers=2, progress=False)
    assert wait_until(lambda: job.progress.finished == 2, 120)
    job.cancel()
    with pytest.warns(gpar.IncompleteResultsWarning, match="cancelling"):
        dataset = job.result(timeout=120)
    assert dataset.manifest.tasks == {0, 1}
    gate.touch()
    again = run(range(6), output, tmp_path, table)  # the lease was released: it resumes
    assert again.manifest.tasks == set(range(6)) and again.report.elements == 4
    assert_exactly_once(again, range(6))


def engines_read(location, version: int | None = None) -> dict[str, tuple[int, int]]:
    """(rows, distinct (task, k)) of the output's Delta table at ``version`` as each engine
    reads it: polars, deltalake's pandas, and DuckDB through a Dataset."""
    from reduce_sql import delta

    uri, options = delta.uri(location), delta.storage_options(location)
    frame = polars.scan_delta(uri, version=version, storage_options=options).collect()
    pandas = deltalake.DeltaTable(uri, version=version, storage_options=options).to_pandas()
    with warnings.catch_warnings():  # an older version may be a partial output: it says so
        warnings.simplefilter("ignore", reduce_sql.PartialOutputWarning)
        duck = reduce_sql.Dataset(location, version=version).sql(
            "SELECT count(*) AS n, count(DISTINCT (task, k)) AS keys FROM data").to_pylist()[0]
    return {"polars": (frame.height, frame.select("task", "k").n_unique()),
            "pandas": (len(pandas), len(pandas.drop_duplicates(["task", "k"]))),
            "duckdb": (duck["n"], duck["keys"])}


def test_a_resumed_and_compacted_job_is_read_exactly_by_every_engine_at_each_version(
        output, tmp_path):
    """A job cut by its deadline, then run again (resume), whose commit merges the first
    run's files with the new ones (the default threshold: the first run leaves as many files
    as it allows, the second one more): polars, pandas and DuckDB read exactly the job's rows
    at the latest version and the first run's rows at its version; the first run's files stay
    on disk for that version's readers (a Parquet glob of the directory would count them
    twice: no Delta reader does)."""
    slow = commit_module.COMPACT_ABOVE_FILES
    gate = tmp_path / "gate"
    table = {(task, 0): ("sleep", 0.3) for task in range(slow)}  # each a file of its own
    table |= {(task, attempt): ("wait_for", str(gate))  # whichever attempt: until the gate
              for task in range(slow, slow + 4) for attempt in range(4)}
    with pytest.warns(gpar.IncompleteResultsWarning, match="deadline"):
        first = run(range(slow + 4), output, tmp_path, table, deadline=20, backups=False)
    assert first.manifest.tasks == set(range(slow)) and len(first.files) == slow
    gate.touch()
    again = run(range(slow + 4), output, tmp_path, table)
    location = locate(output)
    assert again.report.elements == 4 and again.manifest.version > first.manifest.version
    assert all("compact-" in path for path in again.files)  # merged: the first run's retired
    assert set(first.files) <= {location.path(path) for path in location.files("data")}
    assert engines_read(location) == dict.fromkeys(("polars", "pandas", "duckdb"),
                                                   ((slow + 4) * ROWS, (slow + 4) * ROWS))
    assert engines_read(location, first.manifest.version) == dict.fromkeys(
        ("polars", "pandas", "duckdb"), (slow * ROWS, slow * ROWS))


def both_commit_at_once(monkeypatch) -> None:
    """Each commit waits, once it has read the table, until the other has too: both commit
    on top of the same version."""
    import threading

    from reduce_sql import delta

    together, commit = threading.Barrier(2, timeout=60), delta.commit

    def at_once(*args, **kwargs):
        together.wait()
        return commit(*args, **kwargs)

    monkeypatch.setattr(delta, "commit", at_once)


def test_two_compactions_at_once_never_duplicate_a_row(output, monkeypatch):
    """Two commits merging the same small files from the same version (the lease keeps a
    second driver out; here it is bypassed): one commits, the other is refused."""
    from concurrent.futures import ThreadPoolExecutor

    location = locate(output)
    monkeypatch.setattr(commit_module, "COMPACT_ABOVE_FILES", 100)
    tables = [{"task": [task] * ROWS, "k": list(range(ROWS))} for task in range(20)]
    committed_once = commit_module.commit(location, "j" * 64, parts_of(location, tables))
    monkeypatch.setattr(commit_module, "COMPACT_ABOVE_FILES", 4)
    both_commit_at_once(monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        attempts = [pool.submit(commit_module.commit, location, "j" * 64, [], committed_once)
                    for _ in range(2)]
    outcomes = sorted(type(attempt.exception()).__name__ for attempt in attempts)
    assert outcomes == ["NoneType", "OutputBusyError"]
    assert engines_read(location) == dict.fromkeys(("polars", "pandas", "duckdb"),
                                                   (20 * ROWS, 20 * ROWS))


def test_a_table_created_by_two_drivers_at_once_ends_with_one(output, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    location = locate(output)
    runs = [parts_of(location, [{"task": [task] * ROWS, "k": list(range(ROWS))}
                                for task in range(3)]) for _ in range(2)]
    both_commit_at_once(monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        attempts = [pool.submit(commit_module.commit, location, "j" * 64, parts)
                    for parts in runs]
    outcomes = sorted(type(attempt.exception()).__name__ for attempt in attempts)
    assert outcomes == ["NoneType", "OutputBusyError"]
    assert engines_read(location) == dict.fromkeys(("polars", "pandas", "duckdb"),
                                                   (3 * ROWS, 3 * ROWS))


def test_columns_are_stored_in_types_every_delta_reader_reads_with_the_same_values(tmp_path):
    """pandas' datetime64[s] (Delta has no seconds), uint8 (none unsigned: int8 would read 200
    as -56), zoned times and categoricals become types Delta holds, values unchanged; a type
    it cannot hold is refused naming the column."""
    import datetime

    import numpy as np

    frame = pd.DataFrame({
        "day": pd.to_datetime(["2020-01-02", "2021-03-04"]).astype("datetime64[s]"),
        "small": np.array([200, 7], dtype="uint8"),
        "at": pd.to_datetime(["2020-01-02 10:00", "2020-01-02 11:00"]).tz_localize("Europe/Paris"),
        "kind": pd.Categorical(["a", "b"]),
        "when": pd.to_datetime(["2020-01-01 00:00:00.000001"] * 2)})  # ns, whole µs
    location = locate(tmp_path / "out")
    commit_module.commit(location, "j" * 64, parts_of(location, [frame]))
    read = polars.scan_delta(location.root).collect().to_pandas()
    assert read["small"].tolist() == [200, 7] and read["kind"].tolist() == ["a", "b"]
    assert read["day"].tolist() == frame["day"].tolist()
    assert [value.timestamp() for value in read["at"]] == [
        value.timestamp() for value in frame["at"]]
    assert read["when"].tolist() == frame["when"].tolist()
    duck = reduce_sql.Dataset(location).to_pandas()
    assert duck["small"].tolist() == [200, 7] and duck["day"].tolist() == frame["day"].tolist()
    with pytest.raises(reduce_sql.OutputTypeError, match="'clock'.*cannot hold"):
        parts_of(location, [{"clock": [datetime.time(9, 30)]}])
    with pytest.raises(reduce_sql.OutputTypeError, match="'ns'.*round them to microseconds"):
        parts_of(location, [{"ns": pd.to_datetime(["2020-01-01 00:00:00.000000001"])}])


def log_actions(location) -> list[dict[str, list[dict]]]:
    """Each version's add and remove actions, as the table's log holds them."""
    import json

    versions = []
    for name in sorted(path for path in location.files("_delta_log") if path.endswith(".json")):
        actions = [json.loads(line) for line in location.read_bytes(name).splitlines()]
        versions.append({kind: [action[kind] for action in actions if kind in action]
                         for kind in ("add", "remove")})
    return versions


def assert_no_path_added_and_removed_at_once(location) -> None:
    """Delta readers other than delta-rs drop a file a version both adds and removes."""
    for version, actions in enumerate(log_actions(location)):
        both = ({action["path"] for action in actions["add"]}
                & {action["path"] for action in actions["remove"]})
        assert not both, f"version {version} adds and removes {both}"


def test_a_later_run_adding_a_column_and_widening_a_type_is_read_exactly(tmp_path):
    """Run 1 checkpoints integer values; run 2 (a resume) adds a column at a checkpoint and
    returns floats at its end: every engine reads every row with the widened type, no
    version both adds and removes a path, no file of integers is left in the float table."""
    location = locate(tmp_path / "out")

    def rows(task, value=int, **extra):
        return {"task": [task] * ROWS, "k": list(range(ROWS)),
                "value": [value(task * 1000 + k) for k in range(ROWS)], **extra}

    run1 = parts_of(location, [rows(task) for task in range(3)])
    begun = commit_module.checkpoint(location, "j" * 64, run1, elements=9)
    with_note = parts_of(location, [rows(task, note=["n"] * ROWS) for task in range(3, 6)],
                         first=3)
    commit_module.checkpoint(location, "j" * 64, with_note, begun, elements=9)
    floats = parts_of(location, [rows(task, float) for task in range(6, 9)], first=6)
    final = commit_module.commit(location, "j" * 64, [*with_note, *floats], begun,
                                 elements=9)
    assert final.tasks == set(range(9))
    assert engines_read(location) == dict.fromkeys(("polars", "pandas", "duckdb"),
                                                   (9 * ROWS, 9 * ROWS))
    table = polars.scan_delta(location.root).collect()
    assert table.schema["value"] == polars.Float64 and table["note"].null_count() == 6 * ROWS
    assert sorted(table["value"].to_list()) == sorted(
        float(task * 1000 + k) for task in range(9) for k in range(ROWS))
    assert_no_path_added_and_removed_at_once(location)


def test_a_table_another_writer_changed_is_not_resumed(tmp_path):
    """An optimize by another engine renames the files: which tasks they hold is unknown, so
    a re-run of the job is refused (it would write every task again beside them)."""
    location = locate(tmp_path / "out")
    tables = [{"task": [task] * ROWS, "k": list(range(ROWS))} for task in range(3)]
    commit_module.commit(location, "j" * 64, parts_of(location, tables), elements=3)
    deltalake.DeltaTable(location.root).optimize.compact()
    with pytest.raises(reduce_sql.OutputExistsError, match="writer other than gpar"):
        commit_module.begin(location, "j" * 64)
    assert engines_read(location)["duckdb"] == (3 * ROWS, 3 * ROWS)


def test_replacing_an_output_with_a_job_that_wrote_no_rows_leaves_no_old_rows(tmp_path):
    location = locate(tmp_path / "out")
    old = [{"task": [task] * ROWS, "k": list(range(ROWS))} for task in range(3)]
    commit_module.commit(location, "j" * 64, parts_of(location, old), elements=3)
    claim = commit_module.begin(location, "k" * 64, overwrite=True)
    try:
        commit_module.commit(location, "k" * 64, [], lease=claim.lease, elements=0)
    finally:
        claim.lease.release()
    assert polars.scan_delta(location.root).collect().height == 0
    assert reduce_sql.Dataset(location).manifest.job == "k" * 64


def test_an_integer_a_widened_float_cannot_hold_is_a_schema_conflict(tmp_path):
    location = locate(tmp_path / "out")
    parts = parts_of(location, [{"id": [2**53 + 1]}, {"id": [0.5]}])
    with pytest.raises(reduce_sql.SchemaConflictError, match="'id' is int64"):
        commit_module.commit(location, "j" * 64, parts)
    with pytest.raises(reduce_sql.OutputTypeError, match="'u'.*column of its own"):
        parts_of(location, [{"u": pa.UnionArray.from_sparse(
            pa.array([0], pa.int8()), [pa.array([1]), pa.array(["a"])])}])
