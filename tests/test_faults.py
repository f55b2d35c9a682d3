"""Scheduling under faults on the session's cluster: every fault comes from a table."""

import os
import select
import signal
import threading
import time

import pytest
from faults import HANG_S, alive, attempts_of, faulty, hanging, pids, wait_until

import gpar

pytestmark = pytest.mark.usefixtures("cluster")


def run(xs, table, marker_dir, **options):
    options.setdefault("progress", False)
    return gpar.apply(xs, faulty, table, str(marker_dir), **options)


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
    started = time.monotonic()
    results = run(range(2), {(1, 0): "hang"}, tmp_path, max_workers=2, task_timeout=2,
                  backups=False)  # a backup would rescue the hung task first
    assert results == [0, 1] and time.monotonic() - started < HANG_S  # "hang" is an hour
    rows = [(a.attempt, a.outcome) for a in results.report.attempts if a.task == 1]
    assert rows == [(0, "timeout"), (1, "ok")]
    assert results.report.timeouts == 1
    hung_pid = int((tmp_path / "1.0").read_text())
    assert wait_until(lambda: not alive(hung_pid), 5)


def test_task_timeout_bounds_one_element_not_its_batch(tmp_path):
    # 60 elements of 50 ms in batches: a batch lasts far longer than task_timeout
    results = run(range(60), {}, tmp_path, max_workers=2, task_timeout=1.0, work_s=0.05)
    assert results == list(range(60)) and results.report.timeouts == 0
    assert results.report.batches < 60


def test_a_hung_element_holds_back_only_itself(tmp_path):
    table = {(5, 0): "hang"}
    results = run(range(200), table, tmp_path, max_workers=2, task_timeout=3, work_s=0.01,
                  backups=False)
    assert results == list(range(200))
    hung = [a for a in results.report.attempts if a.task == 5]
    # ~1 s of work waits behind it: preempted long before its timeout, and not charged
    assert [(a.attempt, a.outcome) for a in hung] == [(0, "preempted"), (1, "ok")]
    assert results.report.failed_attempts == 0 and results.report.preemptions == 1


def test_total_failure_budget_stops_the_job_quickly_with_partial_results(tmp_path):
    table = {(task, 0): "raise" for task in range(3)}
    table.update({(task, 0): ("sleep", 60) for task in range(3, 6)})
    with pytest.raises(gpar.FailureBudgetExceeded) as caught:
        run(range(6), table, tmp_path, max_workers=6, max_failures=2,
            retry_on=RuntimeError)
    raised_at = time.time()
    # a failing attempt claims its marker just before it raises: the last of three crossed it
    crossing = max((tmp_path / f"{task}.0").stat().st_mtime for task in range(3))
    assert raised_at - crossing < 2.0
    partial = caught.value.partial
    assert len(partial) == 6 and all(isinstance(v, gpar.TaskFailure) for v in partial)
    sleepers = [int(p.read_text()) for p in tmp_path.glob("[345].0")]
    assert wait_until(lambda: not any(alive(pid) for pid in sleepers), 5)


def test_deadline_returns_what_finished_and_marks_the_rest(tmp_path):
    table = {(task, 0): "hang" for task in (2, 3)}
    started = time.monotonic()
    # two slots: 0 and 1 run first (a busy machine may take seconds to start their workers)
    with pytest.warns(gpar.IncompleteResultsWarning, match="deadline"):
        results = run(range(4), table, tmp_path, max_workers=2, deadline=6, backups=False)
    assert time.monotonic() - started < 6 + 1
    assert results[:2] == [0, 1]
    assert [results[i].reason for i in (2, 3)] == ["deadline", "deadline"]


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
    started = time.monotonic()
    with pytest.warns(gpar.IncompleteResultsWarning, match="quorum"):
        results = run(range(20), HUNG, tmp_path, quorum=0.9, backups=backups)
    assert time.monotonic() - started < HANG_S  # not waited for
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
    with pytest.warns(gpar.TaskFailedWarning, match="task 2 failed after 3 attempts"):
        results = run(range(5), table, tmp_path, task_retries=2)
    failure = results[2]
    assert isinstance(failure, gpar.TaskFailure)
    assert (failure.reason, failure.attempts) == ("system", 3)
    assert outcomes_of(results.report, 2) == [(0, "system"), (1, "system"), (2, "system")]
    assert [results[i] for i in (0, 1, 3, 4)] == [0, 1, 3, 4]
    (tmp_path / "again").mkdir()
    with pytest.raises(gpar.FailureBudgetExceeded):
        run(range(5), table, tmp_path / "again", task_retries=2, max_failures=2)


def test_raise_mode_cancels_the_rest(tmp_path):
    table = {(0, 0): ("sleep", 60), (1, 0): ("raise_after", 1.0)}  # 0 runs when 1 raises
    with pytest.raises(gpar.TaskError, match="as the table says"):
        run(range(2), table, tmp_path, max_workers=2, errors="raise")
    sleeper = int((tmp_path / "0.0").read_text())
    assert wait_until(lambda: not alive(sleeper), 5)


@pytest.mark.parametrize("backups", [True, False])
def test_a_straggler_in_the_middle_is_preempted_while_work_waits(tmp_path, backups):
    table = {(17, 0): ("sleep", 30)}
    started = time.monotonic()
    results = run(range(40), table, tmp_path, max_workers=2, backups=backups, work_s=0.2)
    assert time.monotonic() - started < 20 and results == list(range(40))
    rows = [(a.attempt, a.outcome) for a in results.report.attempts if a.task == 17]
    assert rows == [(0, "preempted"), (1, "ok")] and results.report.backups == 0


@pytest.mark.slow
@pytest.mark.parametrize("backups", [True, False])
def test_backups_rescue_a_straggler_at_the_tail(tmp_path, backups):
    table = {(39, 0): ("sleep", 30)}  # the last element: nothing waits behind it
    started = time.monotonic()
    results = run(range(40), table, tmp_path, max_workers=2, backups=backups, work_s=0.2)
    elapsed = time.monotonic() - started
    assert results == list(range(40)) and results.report.preemptions == 0
    if backups:
        assert elapsed < 20 and results.report.backups == 1
        straggler = [(a.attempt, a.backup, a.outcome) for a in results.report.attempts
                     if a.task == 39]
        assert straggler == [(0, False, "cancelled"), (1, True, "ok")]
    else:
        assert elapsed >= 30 and results.report.backups == 0


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
    started = time.monotonic()
    with pytest.raises(gpar.DeadlineExceeded):
        run(range(1), {(0, 0): "hang"}, tmp_path, deadline=deadline)
    assert time.monotonic() - started < 1.5 + 1
