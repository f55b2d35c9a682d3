"""Scheduling under faults on the session's cluster: every fault comes from a table."""

import os
import select
import signal
import threading
from pathlib import Path

import pytest
from faults import alive, attempts_of, faulty, hanging, pids, wait_until

import gpar

pytestmark = pytest.mark.usefixtures("cluster")


def run(xs, table, marker_dir, **options):
    options.setdefault("progress", False)
    return gpar.apply(xs, faulty, table, str(marker_dir), **options)


def faulty_once_running(task, table, marker_dir, running=()):
    """``faulty``, but a task not in ``running`` first waits until each task in ``running`` has
    started (its first marker exists): what must be running when another fails is running."""
    if task not in running:
        wait_until(lambda: all(Path(marker_dir, f"{other}.0").exists() for other in running),
                   120)
    return faulty(task, table, marker_dir)


def run_once_running(xs, table, marker_dir, running, **options):
    options.setdefault("progress", False)
    return gpar.apply(xs, faulty_once_running, table, str(marker_dir), running, **options)


def pid_of(marker_dir, task, attempt=0):
    return int(Path(marker_dir, f"{task}.{attempt}").read_text())


def test_a_worker_killed_by_sigkill_mid_job_loses_no_result(tmp_path):
    table = {(0, 0): ("sleep", 30)}  # task 0 waits to be killed
    # backups off: a backup of the sleeping task could finish before the kill
    marker = tmp_path / "0.0"  # task 0's first attempt: holds its pid once claimed
    killer = threading.Thread(target=lambda: (
        wait_until(lambda: marker.exists() and marker.read_text(), 60),
        os.kill(int(marker.read_text()), signal.SIGKILL)))
    killer.start()
    results = run(range(2), table, tmp_path, max_workers=2, backups=False)
    killer.join()
    assert results == [0, 1]
    rows = [(a.attempt, a.outcome) for a in results.report.attempts if a.task == 0]
    assert rows == [(0, "system"), (1, "ok")]


def test_a_hung_attempt_is_killed_at_task_timeout_and_retried(tmp_path):
    results = run(range(2), {(1, 0): "hang"}, tmp_path, max_workers=2, task_timeout=2,
                  backups=False)  # a backup would rescue the hung task first
    assert results == [0, 1]
    # the hung attempt ended as a timeout (it did not sleep its hour out), and its process died
    assert outcomes_of(results.report, 1) == [(0, "timeout"), (1, "ok")]
    assert results.report.timeouts == 1
    hung_pid = pid_of(tmp_path, 1)
    assert wait_until(lambda: not alive(hung_pid), 30)


def batch_spans(report):
    """Seconds from each batch's first element start to its last element's end."""
    spans = {}
    for row in report.attempts:  # a batch: one worker process, one submission
        first, last = spans.get((row.pid, row.submitted), (row.started, row.finished))
        spans[row.pid, row.submitted] = (min(first, row.started), max(last, row.finished))
    return [last - first for first, last in spans.values()]


def test_task_timeout_bounds_one_element_not_its_batch(tmp_path):
    # Elements 0 and 1 run alone and take no time, so the batches cut from that measurement
    # hold a quarter of the rest each (split.py): 35 elements of 40 ms, a batch of 1.4 s,
    # while each element stays 25 times under task_timeout.
    table = {(task, 0): ("sleep", 0.04) for task in range(2, 142)}
    results = run(range(142), table, tmp_path, max_workers=2, task_timeout=1.0)
    assert results == list(range(142)) and results.report.timeouts == 0
    assert max(batch_spans(results.report)) > 1.0  # a timeout of the batch would have fired


def test_a_hung_element_holds_back_only_itself(tmp_path):
    table = {(5, 0): "hang"}
    # The other slot needs at least 195 x 10 ms for the rest, so work still waits when the
    # hung element straggles (0.5 s): it is preempted, not charged. task_timeout only ends
    # the test if preemption fails; its outcome would then be "timeout".
    results = run(range(200), table, tmp_path, max_workers=2, task_timeout=60, work_s=0.01,
                  backups=False)
    assert results == list(range(200))
    assert outcomes_of(results.report, 5) == [(0, "preempted"), (1, "ok")]
    assert results.report.failed_attempts == 0 and results.report.preemptions == 1


def test_exactly_max_failures_failed_attempts_do_not_stop_the_job(tmp_path):
    """max_failures is the number of failed attempts tolerated: the job goes on at it."""
    table = {(0, 0): "raise", (1, 0): "raise"}
    results = run(range(4), table, tmp_path, max_failures=2, retry_on=RuntimeError)
    assert results == [0, 1, 2, 3]
    assert results.report.failed_attempts == 2 and results.report.retries == 2


def test_total_failure_budget_stops_the_job_and_kills_the_rest(tmp_path):
    """One failure more than max_failures: what runs is killed, not waited for."""
    # Two slots: task 0 sleeps in one while task 1 fails three times in the other, each
    # attempt once task 0 has started, so the budget is crossed while the sleeper runs.
    table = {(0, 0): ("sleep", 120)}
    table.update({(1, attempt): "raise" for attempt in range(3)})
    with pytest.raises(gpar.FailureBudgetExceeded) as caught:
        run_once_running(range(2), table, tmp_path, (0,), max_workers=2, max_failures=2,
                         retry_on=RuntimeError)
    partial = caught.value.partial
    assert partial.report.failed_attempts == 3
    assert outcomes_of(partial.report, 1) == [(0, "error"), (1, "error"), (2, "error")]
    # the sleeper was cancelled, not waited for (it never finished), and its process dies
    assert isinstance(partial[0], gpar.TaskFailure) and partial[0].reason == "cancelled"
    assert outcomes_of(partial.report, 0) in ([], [(0, "cancelled")])
    sleeper = pid_of(tmp_path, 0)
    assert wait_until(lambda: not alive(sleeper), 60)


def test_deadline_returns_what_finished_and_marks_the_rest(tmp_path):
    table = {(task, 0): "hang" for task in (2, 3)}
    # two slots, one element per batch: 2 and 3 start only once 0 and 1 have finished (a
    # busy machine may take seconds to start their workers: the deadline leaves them time)
    with pytest.warns(gpar.IncompleteResultsWarning, match="deadline"):
        results = run(range(4), table, tmp_path, max_workers=2, deadline=6, backups=False)
    assert results[:2] == [0, 1]
    assert [results[i].reason for i in (2, 3)] == ["deadline", "deadline"]
    # what hung was cancelled at the deadline, not waited for: its processes die
    hung = [outcomes_of(results.report, task) for task in (2, 3)]
    assert all(rows in ([], [(0, "cancelled")]) for rows in hung), hung
    hung_pids = [int(p.read_text()) for p in tmp_path.glob("[23].0")]
    assert wait_until(lambda: not any(alive(pid) for pid in hung_pids), 30)


def test_deadline_with_nothing_finished_raises(tmp_path):
    with pytest.raises(gpar.DeadlineExceeded) as caught:
        run(range(2), {(0, 0): "hang", (1, 0): "hang"}, tmp_path, max_workers=2, deadline=1.5)
    assert [f.reason for f in caught.value.partial] == ["deadline", "deadline"]


#: Two of twenty elements hang whenever they run, the rest are quick.
HUNG = hanging((4, 9))


def rows_per_task(report):
    counts = {}
    for row in report.attempts:
        counts[row.task] = counts.get(row.task, 0) + 1
    return counts


def assert_each_run_is_reported(results, marker_dir, tasks):
    """fn ran as often as the report has attempts of it. The one gap: an element a killed
    batch had started since its last progress message, which the report lists as unstarted."""
    rows = rows_per_task(results.report)
    unstarted = results.report.unstarted
    for task in tasks:
        runs, reported = attempts_of(marker_dir, task), rows.get(task, 0)
        assert reported <= runs <= reported + unstarted.count(task), task


@pytest.mark.parametrize("backups", [True, False])
def test_quorum_is_not_held_back_by_hung_elements(tmp_path, backups):
    with pytest.warns(gpar.IncompleteResultsWarning, match="quorum"):
        results = run(range(20), HUNG, tmp_path, quorum=0.9, backups=backups)
    # not waited for: no attempt of a hung element ran to its end
    hung = {row.outcome for row in results.report.attempts if row.task in (4, 9)}
    assert hung and hung <= {"preempted", "cancelled"}
    assert [results[i] for i in range(20) if i not in (4, 9)] == [
        i for i in range(20) if i not in (4, 9)]
    assert [results[i].reason for i in (4, 9)] == ["quorum", "quorum"]
    assert results.report.preemptions >= 1 and results.report.failed_attempts == 0
    assert_each_run_is_reported(results, tmp_path, range(20))


@pytest.mark.parametrize("backups", [True, False])
def test_a_deadline_sees_every_quick_element_finished(tmp_path, backups):
    with pytest.warns(gpar.IncompleteResultsWarning, match="deadline"):
        results = run(range(20), HUNG, tmp_path, deadline=15, backups=backups)
    assert [results[i] for i in range(20) if i not in (4, 9)] == [
        i for i in range(20) if i not in (4, 9)]
    assert [results[i].reason for i in (4, 9)] == ["deadline", "deadline"]
    assert_each_run_is_reported(results, tmp_path, range(20))
    # Whether a hung attempt gave up its slot (when work waited behind both), and whether a
    # parked one ran again before the deadline, is the order batches met the machine in; no
    # end of a hung attempt is charged.
    hung = {row.outcome for row in results.report.attempts if row.task in (4, 9)}
    assert hung and hung <= {"preempted", "cancelled"}
    assert results.report.failed_attempts == 0


@pytest.mark.parametrize("backups", [True, False])
def test_elements_behind_a_straggler_run_once(tmp_path, backups):
    """Tiny elements batched behind one that sleeps: those handed back run elsewhere, once."""
    table = {(30, 0): ("sleep", 3)}
    results = run(range(300), table, tmp_path, work_s=0.002, backups=backups)
    assert results == list(range(300))
    assert_each_run_is_reported(results, tmp_path, range(300))
    assert all(attempts_of(tmp_path, task) == 1 for task in range(300) if task != 30)


def assert_every_run_is_a_row(report, marker_dir, tasks):
    rows = rows_per_task(report)
    assert {task: rows.get(task, 0) for task in tasks} == {
        task: attempts_of(marker_dir, task) for task in tasks}


def outcomes_of(report, task):
    return [(row.attempt, row.outcome) for row in report.attempts if row.task == task]


def test_a_worker_that_dies_as_element_2_of_5_starts_is_charged_to_it(tmp_path):
    """The crash comes before any progress message: the worker's note names the element."""
    results = run(range(5), {(2, 0): "exit"}, tmp_path, task_retries=2)
    assert results == list(range(5))
    report = results.report
    assert outcomes_of(report, 2) == [(0, "system"), (1, "ok")]
    assert report.failed_attempts == 1 and report.batches_lost == 0
    assert_every_run_is_a_row(report, tmp_path, range(5))
    for task in (0, 1, 3, 4):  # what ran before it is "lost" and ran again, uncharged
        assert outcomes_of(report, task) in ([(0, "ok")], [(0, "lost"), (1, "ok")])


def test_a_crashed_batch_reports_its_lost_attempt_and_charges_no_bystander(tmp_path):
    table = {(150, 0): "exit"}  # os._exit inside a batch of many tiny elements
    results = run(range(300), table, tmp_path, work_s=0.001)
    assert results == list(range(300))
    report = results.report
    assert outcomes_of(report, 150) == [(0, "system"), (1, "ok")]
    assert report.failed_attempts == 1 and report.batches_lost == 0
    assert_every_run_is_a_row(report, tmp_path, range(300))
    assert {row.outcome for row in report.attempts if row.task != 150} <= {"ok", "lost"}


def test_an_element_that_kills_its_worker_every_time_fails_and_is_charged(tmp_path):
    table = {(2, attempt): "exit" for attempt in range(3)}
    # three failed attempts: exactly the total budget (tolerated), then one over it
    with pytest.warns(gpar.TaskFailedWarning, match="task 2 failed after 3 attempts"):
        results = run(range(5), table, tmp_path, task_retries=2, max_failures=3)
    failure = results[2]
    assert isinstance(failure, gpar.TaskFailure)
    assert (failure.reason, failure.attempts) == ("system", 3)
    assert outcomes_of(results.report, 2) == [(0, "system"), (1, "system"), (2, "system")]
    assert [results[i] for i in (0, 1, 3, 4)] == [0, 1, 3, 4]
    (tmp_path / "again").mkdir()
    with pytest.raises(gpar.FailureBudgetExceeded):
        run(range(5), table, tmp_path / "again", task_retries=2, max_failures=2)


def test_raise_mode_cancels_the_rest(tmp_path):
    table = {(0, 0): ("sleep", 60), (1, 0): "raise"}  # 1 raises once 0 runs
    with pytest.raises(gpar.TaskError, match="as the table says"):
        run_once_running(range(2), table, tmp_path, (0,), max_workers=2, errors="raise")
    sleeper = pid_of(tmp_path, 0)
    assert wait_until(lambda: not alive(sleeper), 30)


@pytest.mark.parametrize("backups", [True, False])
def test_a_straggler_in_the_middle_is_preempted_while_work_waits(tmp_path, backups):
    table = {(17, 0): ("sleep", 30)}
    results = run(range(40), table, tmp_path, max_workers=2, backups=backups, work_s=0.2)
    assert results == list(range(40))
    # its 30 s were not waited out: the attempt was preempted, its process killed
    assert outcomes_of(results.report, 17) == [(0, "preempted"), (1, "ok")]
    assert results.report.backups == 0
    straggler = pid_of(tmp_path, 17)
    assert wait_until(lambda: not alive(straggler), 30)


@pytest.mark.slow
@pytest.mark.parametrize("backups", [True, False])
def test_backups_rescue_a_straggler_at_the_tail(tmp_path, backups):
    table = {(39, 0): ("sleep", 30)}  # the last element: nothing waits behind it
    results = run(range(40), table, tmp_path, max_workers=2, backups=backups, work_s=0.2)
    assert results == list(range(40)) and results.report.preemptions == 0
    straggler = [(a.attempt, a.backup, a.outcome) for a in results.report.attempts
                 if a.task == 39]
    if backups:  # the backup won; the straggler was cancelled, not waited for
        assert results.report.backups == 1
        assert straggler == [(0, False, "cancelled"), (1, True, "ok")]
    else:  # the straggler was waited for: it finished
        assert results.report.backups == 0 and straggler == [(0, False, "ok")]


def test_ctrl_c_cancels_the_jobs_tasks_and_leaves_no_worker_running(run_script, tmp_path):
    """SIGINT to a driver that survives it, as a notebook kernel does: its workers must die."""
    markers = tmp_path / "markers"
    markers.mkdir()
    script = f"""
        import faulthandler, signal, sys, time, gpar
        from faults import faulty
        faulthandler.register(signal.SIGUSR1)  # the test's question: where are you?
        # Ctrl-C raises KeyboardInterrupt, as in a script started from a terminal: in full runs
        # the test process has handed its children SIGINT ignored, and Python keeps that.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            gpar.apply(range(2), faulty, {{(0, 0): ("sleep", 120), (1, 0): ("sleep", 120)}},
                       {str(markers)!r}, max_workers=2, progress=False)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            time.sleep(120)  # stay alive: the workers must be gone while the driver lives
    """
    import shutil
    import subprocess
    import sys
    import textwrap

    import faults

    (tmp_path / "driver.py").write_text(textwrap.dedent(script))
    shutil.copy(faults.__file__, tmp_path)  # beside the script, as a user's helper module is
    env = {**os.environ, "RAY_ADDRESS": run_script.address}
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:  # the driver's own copy stays open
        driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], env=env,
                                  stdout=subprocess.PIPE, stderr=sink, text=True)
    try:
        assert wait_until(lambda: len(pids(markers)) == 2, 60)  # both CPUs busy
        workers = pids(markers)
        driver.send_signal(signal.SIGINT)
        answered = select.select([driver.stdout], [], [], 30)[0]
        line = driver.stdout.readline().strip() if answered else "(nothing in 30 s)"
        if not answered:  # say where the driver is, rather than wait out its 120 s
            driver.send_signal(signal.SIGUSR1)
            wait_until(lambda: "File" in stderr.read_text(), 10)
        assert line == "interrupted", (
            f"{line}; exit code {driver.poll()}; the driver's stderr:\n"
            f"{stderr.read_text()[-10_000:]}")
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 10)
        assert driver.poll() is None  # the driver is still alive
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()


def test_deadline_may_be_a_datetime(tmp_path):
    import datetime

    deadline = datetime.datetime.now() + datetime.timedelta(seconds=1.5)  # naive: local time
    # a deadline read hours late would let the 60 s element finish: no DeadlineExceeded
    with pytest.raises(gpar.DeadlineExceeded) as caught:
        run(range(1), {(0, 0): ("sleep", 60)}, tmp_path, deadline=deadline)
    assert [failure.reason for failure in caught.value.partial] == ["deadline"]
