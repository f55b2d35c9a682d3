"""gpar.imap: results while the job runs, an iterator read a window ahead, and no more held
unread than the bound."""

import itertools
import threading

import pytest
from faults import alive, faulty, hanging, pids, wait_until

import gpar
from gpar.feed import MAX_READ_AHEAD

pytestmark = pytest.mark.usefixtures("cluster")


def make_bytes(x, size):
    return bytes(size)


def counted(xs, read):
    for x in xs:
        read.append(x)
        yield x


def test_an_endless_generator_is_read_a_window_ahead_and_unread_results_pause_launches():
    read = []
    stream = gpar.imap(counted(itertools.count(), read), abs, max_unread=50, progress=False)
    head = list(itertools.islice(stream, 10))  # then the reader stops reading
    job = stream.job
    # what finished and was not read reaches the bound, and stays there: nothing more starts
    assert head == list(range(10))
    assert wait_until(lambda: job.progress.finished == 10 + 50, 120)
    assert not wait_until(lambda: job.progress.finished > 10 + 50, 2)
    assert len(read) - job.progress.finished <= MAX_READ_AHEAD  # read a window ahead, no more
    assert list(itertools.islice(stream, 5)) == list(range(10, 15))  # reading on resumes it
    stream.close()
    assert wait_until(job.done, 60)


def test_unordered_yields_a_quick_element_before_a_slow_one_launched_earlier(tmp_path):
    gate = tmp_path / "go"
    stream = gpar.imap(range(4), faulty, {(0, 0): ("wait_for", str(gate))}, str(tmp_path),
                       ordered=False, max_workers=2, progress=False)
    stuck = threading.Timer(120, gate.touch)  # never yielded before it: fail, not hang
    stuck.start()
    first = [next(stream) for _ in range(3)]
    gate.touch()  # element 0 finishes only once three others were yielded
    stuck.cancel()
    assert sorted(first) == [(1, 1), (2, 2), (3, 3)] and list(stream) == [(0, 0)]


def test_values_larger_than_the_byte_bound_still_come_one_at_a_time():
    values = gpar.imap(counted(range(12), []), make_bytes, 5_000, ordered=False,
                       max_unread_bytes=1_000, progress=False)
    stuck = threading.Timer(120, values.job.cancel)  # held back for good: end, and fail
    stuck.start()
    indices = sorted(index for index, _ in values)
    stuck.cancel()
    assert indices == list(range(12))


def test_an_ordered_head_that_straggles_comes_back_before_the_rest_of_the_job(tmp_path):
    """Preempted while work waits, the head is parked; parked work would leave only once
    nothing else waits, while every result behind it waits for it."""
    stream = gpar.imap(range(200), faulty, {(0, 0): "hang"}, str(tmp_path), work_s=0.05,
                       max_workers=2, backups=False, progress=False)
    assert next(stream) == 0
    assert stream.job.progress.finished < 150  # not once nearly everything else was done
    assert list(stream) == list(range(1, 200))


def test_errors_raise_raises_from_the_loop_after_the_values_before_it(tmp_path):
    seen = []
    with pytest.raises(gpar.TaskError, match="task 3 failed"):
        for value in gpar.imap(range(8), faulty, {(3, 0): "raise"}, str(tmp_path),
                               max_workers=1, errors="raise", progress=False):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_a_deadline_ends_a_stream_of_unknown_length_without_what_was_read_ahead(tmp_path):
    table = hanging([5])
    seen = []
    with pytest.warns(gpar.IncompleteResultsWarning, match="deadline"):
        for value in gpar.imap(counted(itertools.count(), []), faulty, table, str(tmp_path),
                               max_workers=2, deadline=8, backups=False, progress=False):
            seen.append(value)
    assert seen[:5] == [0, 1, 2, 3, 4] and len(seen) == 5  # the stream ended at 5


def test_a_stream_dropped_unread_cancels_its_job(tmp_path):
    stream = gpar.imap(counted(itertools.count(), []), faulty, hanging([0, 1]),
                       str(tmp_path), max_workers=2, progress=False)
    job = stream.job
    assert wait_until(lambda: len(pids(tmp_path)) >= 2, 60)
    hung = pids(tmp_path)
    del stream
    assert wait_until(job.done, 60) and wait_until(lambda: not any(map(alive, hung)), 60)


def test_an_ordered_stream_whose_head_hangs_still_finishes(tmp_path):
    """The hung head holds back the stream, the unread results reach their bound and no new
    batch starts: the head is still preempted and run again, as if work waited."""
    elements = counted(range(40), [])
    stream = gpar.imap(elements, faulty, {(0, 0): "hang"}, str(tmp_path), work_s=0.02,
                       max_unread=5, max_workers=2, backups=False, progress=False)
    assert list(stream) == list(range(40))
    rows = [(row.attempt, row.outcome) for row in stream.job.report.attempts if row.task == 0]
    assert rows == [(0, "preempted"), (1, "ok")]


def test_breaking_out_cancels_what_runs_and_the_cluster_stays_usable(tmp_path):
    table = hanging(range(10, 40))  # the rest hang: the loop must not wait for them
    for count, value in enumerate(gpar.imap(counted(range(40), []), faulty, table,
                                            str(tmp_path), max_workers=2, progress=False)):
        assert value == count
        if count == 9:
            assert wait_until(lambda: len(pids(tmp_path)) >= 12, 60)  # two hang in the slots
            break
    hung = [int((tmp_path / f"{task}.0").read_text()) for task in range(10, 40)
            if (tmp_path / f"{task}.0").exists()]
    assert hung and wait_until(lambda: not any(alive(pid) for pid in hung), 60)
    assert gpar.apply([-1], abs, progress=False) == [1]


def test_failures_come_in_place_and_a_crossed_budget_raises_after_what_finished(tmp_path):
    with pytest.warns(gpar.TaskFailedWarning, match="task 2 failed"):
        values = list(gpar.imap(range(5), faulty, {(2, 0): "raise"}, str(tmp_path),
                                max_workers=1, progress=False))
    assert values[:2] == [0, 1] and values[2].reason == "error" and values[3:] == [3, 4]
    (tmp_path / "again").mkdir()
    seen = []
    with pytest.raises(gpar.FailureBudgetExceeded):
        for value in gpar.imap(counted(range(5), []), faulty, {(2, 0): "raise"},
                               str(tmp_path / "again"), max_workers=1, max_failures=0,
                               progress=False):
            seen.append(value)
    # what finished with or before the failure comes, and nothing the stop cancelled
    assert seen[:2] == [0, 1] and seen[2].index == 2
    assert all(isinstance(value, int) for value in seen[3:])


@pytest.mark.parametrize(("call", "refusal"), [
    (lambda: gpar.imap(range(3), abs, output="out"), "imap does not write outputs"),
    (lambda: gpar.imap(iter(range(3)), abs, quorum=0.5), "quorum needs the number of"),
    (lambda: gpar.imap(range(3), abs, ordered="yes"), "ordered takes True or False"),
    (lambda: gpar.imap(range(3), abs, max_unread=0), "max_unread must be a positive int"),
    (lambda: gpar.imap(3, abs), "xs must be iterable"),
])
def test_what_imap_cannot_do_is_refused_before_anything_runs(call, refusal):
    with pytest.raises((TypeError, ValueError), match=refusal):
        call()


def record_score(record):
    return record[1] % 7


@pytest.mark.slow
def test_a_million_records_stream_through_in_memory_bounded_by_what_is_unread():
    """A reader slower than the workers at first: the driver holds no more than the bound
    of results, reads the generator no further than the window, and keeps a few dozen bytes
    per element read (README: about 45)."""
    import tracemalloc

    elements, bound = 1_000_000, 1000
    read = [0]  # how many were read: a count, so that the test itself keeps nothing of them

    def records():
        for i in range(elements):
            read[0] += 1
            yield "record", i

    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        stream = gpar.imap(records(), record_score, max_unread=bound, progress=False)
        most_held = most_ahead = consumed = total = 0
        for value in stream:
            consumed += 1
            total += value
            if consumed <= 10_000:
                sum(range(2000))  # slower than the workers: what finishes waits for it
            if consumed % 1000 == 0:
                most_held = max(most_held, stream.job.progress.finished - consumed)
                most_ahead = max(most_ahead, read[0] - consumed)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert consumed == elements and total == sum(i % 7 for i in range(elements))
    assert bound // 2 <= most_held <= bound  # the bound was reached, and held
    assert most_ahead <= bound + MAX_READ_AHEAD
    assert peak <= 64 * elements, peak / elements


@pytest.mark.parametrize("stream", [
    "gpar.imap((x for x in range(2)), faulty, table, {markers!r}, max_workers=1, "
    "progress=False)",
    "gpar.submit(range(2), faulty, table, {markers!r}, max_workers=1, "
    "progress=False).as_completed()"], ids=["imap", "as_completed"])
def test_ctrl_c_while_iterating_cancels_that_stream_and_not_another_job(run_script, tmp_path,
                                                                         stream):
    import os
    import select
    import shutil
    import signal
    import subprocess
    import sys
    import textwrap

    import faults

    markers = tmp_path / "markers"
    markers.mkdir()
    shutil.copy(faults.__file__, tmp_path)
    (tmp_path / "driver.py").write_text(textwrap.dedent(f"""
        import os, signal, sys, time, gpar
        from faults import faulty
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
        other = gpar.submit(range(2), faulty, {{}}, {str(markers / "other")!r},
                            max_workers=1, progress=False)
        table = {{(0, 0): ("sleep", 120), (1, 0): ("sleep", 120)}}
        try:
            for value in {stream.format(markers=str(markers))}:
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(other.result(timeout=120), flush=True)
        for _ in range(2400):  # the test says when to leave: an exit cancels jobs too
            if os.path.exists({str(tmp_path / "leave")!r}):
                break
            time.sleep(0.05)
    """))
    (markers / "other").mkdir()
    env = {**os.environ, "RAY_ADDRESS": run_script.address}
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:  # the driver's own copy stays open
        driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], env=env,
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=sink, text=True)
    try:
        assert wait_until(lambda: (markers / "0.0").exists() or driver.poll() is not None, 60)
        assert driver.poll() is None, stderr.read_text()
        streaming = int((markers / "0.0").read_text())
        driver.send_signal(signal.SIGINT)
        answered = select.select([driver.stdout], [], [], 60)[0]
        line = driver.stdout.readline().strip() if answered else "(nothing in 60 s)"
        assert line == "interrupted", stderr.read_text()[-5000:]
        assert wait_until(lambda: not alive(streaming), 30)  # the stream's task was killed
        assert driver.stdout.readline().strip() == "[0, 1]"  # the other job ran on
        (tmp_path / "leave").touch()
        assert driver.wait(60) == 0, stderr.read_text()[-5000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
        driver.stdout.close()


def test_an_iterator_bound_to_the_callers_thread_streams():
    import sqlite3

    rows = sqlite3.connect(":memory:").execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29999) "
        "SELECT i FROM n")  # more than the first window, read before the job starts
    assert list(gpar.imap(rows, sum, progress=False)) == list(range(30_000))


def test_the_input_is_read_by_the_thread_that_iterates_and_its_error_ends_the_job_there():
    readers = set()

    def records():
        for i in range(50_000):
            readers.add(threading.current_thread())
            yield i
        raise OSError("the file was truncated")

    stream = gpar.imap(records(), abs, progress=False)
    seen = []
    with pytest.raises(OSError, match="truncated"):
        for value in stream:
            seen.append(value)
    assert seen == list(range(len(seen))) and readers == {threading.current_thread()}
    assert wait_until(stream.job.done, 60) and stream.job.progress.running == 0
    assert list(stream) == []  # the stream has ended
    assert gpar.apply(range(3), abs, progress=False) == [0, 1, 2]  # the cluster is usable
