"""A job you can hold (gpar.submit): it runs while the caller does something else, and can be
looked at, waited for with a bound, and cancelled, from any thread."""

import threading

import pytest
from faults import alive, faulty, hanging, pids, wait_until

import gpar

pytestmark = pytest.mark.usefixtures("cluster")


def gated(tasks, gate):
    """A fault table in which ``tasks`` wait until the file ``gate`` exists."""
    return {(task, 0): ("wait_for", str(gate)) for task in tasks}


def submit(xs, table, marker_dir, **options):
    options.setdefault("progress", False)
    return gpar.submit(xs, faulty, table, str(marker_dir), **options)


def test_submit_returns_while_the_job_runs_and_its_progress_and_report_grow(tmp_path):
    gate = tmp_path / "go"
    job = submit(range(4), gated([1, 2, 3], gate), tmp_path, max_workers=2)
    assert not job.done()  # every element but 0 waits for the gate this test opens
    assert wait_until(lambda: job.progress.finished == 1, 60)
    progress, report = job.progress, job.report
    assert (progress.total, progress.failed) == (4, 0)
    assert [(row.task, row.outcome) for row in report.attempts] == [(0, "ok")]
    assert not job.done()
    gate.touch()
    assert job.result(timeout=120) == [0, 1, 2, 3]
    assert job.done() and job.progress.finished == 4 and len(job.report.attempts) == 4
    assert len(report.attempts) == 1  # a copy: what the loop wrote later is not in it


def test_result_with_a_timeout_raises_and_the_job_keeps_running(tmp_path):
    gate = tmp_path / "go"
    job = submit(range(2), gated([0, 1], gate), tmp_path)
    with pytest.raises(TimeoutError, match="keeps running"):
        job.result(timeout=0.5)
    gate.touch()
    assert job.result(timeout=120) == [0, 1]


def test_cancel_from_another_thread_kills_what_runs_and_marks_the_rest(tmp_path):
    never = tmp_path / "never"
    job = submit(range(4), gated(range(4), never), tmp_path, max_workers=2)
    assert wait_until(lambda: len(pids(tmp_path)) == 2, 60)  # both slots hold an element
    running = pids(tmp_path)
    canceller = threading.Thread(target=job.cancel)
    canceller.start()
    with pytest.warns(gpar.IncompleteResultsWarning, match="cancelling the job ended it"):
        results = job.result(timeout=120)
    canceller.join()
    assert [failure.reason for failure in results] == ["cancelled"] * 4
    assert wait_until(lambda: not any(alive(pid) for pid in running), 30)
    assert job.cancel() is False  # it had ended


def idle_workers():
    """The embedded cluster's worker processes waiting for a task (Ray titles them so)."""
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    idle = set()
    for child in psutil.Process(raylet).children():
        try:
            if child.cmdline()[:1] == ["ray::IDLE"]:
                idle.add(child.pid)
        except psutil.Error:  # ended meanwhile
            pass
    return idle


def getpid(x):
    import os

    return os.getpid()


def test_a_cancel_starts_workers_in_place_of_those_it_killed(tmp_path):
    """A cancel kills the processes of what runs; the next job must not wait for new ones."""
    job = submit(range(4), hanging(range(4)), tmp_path, max_workers=2)
    assert wait_until(lambda: len(pids(tmp_path)) == 2, 60)
    # both CPUs busy: Ray ends the idle workers earlier tests left (past its soft limit of a
    # worker per CPU), so what is idle after the cancel was started for it
    assert wait_until(lambda: not idle_workers(), 60)
    killed, before = pids(tmp_path), idle_workers()
    job.cancel()
    with pytest.warns(gpar.IncompleteResultsWarning):
        job.result(timeout=120)
    assert wait_until(lambda: not any(alive(pid) for pid in killed), 30)
    assert wait_until(lambda: len(idle_workers() - before) >= 2, 60)  # two new, waiting
    ready = idle_workers()
    assert set(gpar.apply(range(2), getpid, max_workers=2, progress=False)) <= ready


def test_two_jobs_at_once_each_keep_their_own_report_and_budget(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gate = tmp_path / "go"  # the failing job's elements wait until the other has finished
    failing = submit(range(3), {(0, 0): ("wait_for", str(gate)), (1, 0): "raise",
                                (2, 0): ("wait_for", str(gate))}, tmp_path / "a",
                     max_failures=0, max_workers=1)
    quiet = submit(range(5), {}, tmp_path / "b", max_workers=1)
    assert quiet.result(timeout=120) == [0, 1, 2, 3, 4]
    assert not failing.done()  # both ran at once, on the cluster's two slots
    gate.touch()
    with pytest.raises(gpar.FailureBudgetExceeded):
        failing.result(timeout=120)
    assert quiet.report.failed_attempts == 0 and quiet.report.elements == 5
    assert failing.report.failed_attempts == 1


def test_warnings_are_issued_in_the_thread_that_waits(tmp_path):
    job = submit(range(3), {(1, 0): "raise"}, tmp_path)
    assert wait_until(job.done, 120)  # with filterwarnings=error, a warning in the job's
    with pytest.warns(gpar.TaskFailedWarning, match="task 1 failed"):  # thread would break it
        results = job.result()
    assert results[0] == 0 and results[1].reason == "error" and job.failures == [results[1]]


def test_an_exception_in_the_with_block_cancels_the_job(tmp_path):
    never = tmp_path / "never"
    with pytest.raises(KeyError), submit(range(2), gated([0, 1], never), tmp_path,
                                         max_workers=2) as job:
        assert wait_until(lambda: len(pids(tmp_path)) == 2, 60)
        raise KeyError("the caller's own error")
    assert job.done()
    running = pids(tmp_path)
    assert wait_until(lambda: not any(alive(pid) for pid in running), 30)


def test_a_normal_exit_of_the_with_block_waits_for_the_job(tmp_path):
    with submit(range(3), {}, tmp_path) as job:
        pass
    assert job.done() and job.result() == [0, 1, 2]


def run_with_two_hung_elements(run_script, tmp_path, then: str):
    """A script that submits two elements that hang, waits until both run, then does
    ``then``; what it printed, and the hung elements' pids."""
    import shutil

    import faults

    markers = tmp_path / "markers"
    markers.mkdir()
    shutil.copy(faults.__file__, tmp_path)
    completed = run_script(f"""
        import gpar
        from faults import faulty, wait_until, pids
        job = gpar.submit(range(2), faulty, {{(0, 0): "hang", (1, 0): "hang"}},
                          {str(markers)!r}, max_workers=2, progress=False)
        assert wait_until(lambda: len(pids({str(markers)!r})) == 2, 60)
        {then}
    """)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip(), pids(markers)


def test_a_script_that_exits_with_a_job_running_cancels_it(run_script, tmp_path):
    out, hung = run_with_two_hung_elements(run_script, tmp_path,
                                           'print("leaving", flush=True)')
    assert out == "leaving"
    assert len(hung) == 2 and wait_until(lambda: not any(alive(pid) for pid in hung), 30)


def test_as_completed_yields_each_element_as_it_finishes_and_the_job_keeps_them(tmp_path):
    gate = tmp_path / "go"
    job = submit(range(4), gated([0], gate), tmp_path, max_workers=2)
    stuck = threading.Timer(120, job.cancel)  # the gate never opened: end, and fail below
    stuck.start()
    seen = []
    for index, value in job.as_completed():
        seen.append((index, value))
        if len(seen) == 3:
            gate.touch()  # element 0 finishes only once the three others were yielded
    stuck.cancel()
    assert sorted(seen[:3]) == [(1, 1), (2, 2), (3, 3)] and seen[3] == (0, 0)
    assert job.result() == [0, 1, 2, 3]


def test_as_completed_yields_a_failure_in_place_and_warns_at_its_end(tmp_path):
    job = submit(range(3), {(1, 0): "raise"}, tmp_path)
    with pytest.warns(gpar.TaskFailedWarning, match="task 1 failed"):
        seen = dict(job.as_completed())
    assert (seen[0], seen[2], seen[1].reason) == (0, 2, "error")


def test_a_job_dropped_without_waiting_keeps_running(tmp_path):
    import gc

    gate = tmp_path / "go"
    job = submit(range(2), gated([0], gate), tmp_path, max_workers=1)
    assert wait_until(lambda: (tmp_path / "0.0").exists(), 60)
    del job
    gc.collect()
    gate.touch()  # element 1 starts only after 0 ends, on the one slot: the job went on
    assert wait_until(lambda: (tmp_path / "1.0").exists(), 60)


def test_shutdown_cancels_the_processs_jobs_first(run_script, tmp_path):
    out, hung = run_with_two_hung_elements(run_script, tmp_path, "gpar.shutdown(); print("
                                           "job.done(), [f.reason for f in job.failures])")
    assert out == "True ['cancelled', 'cancelled']"
    assert wait_until(lambda: not any(alive(pid) for pid in hung), 30)


def test_a_job_cancelled_at_once_runs_nothing(tmp_path):
    job = submit(range(4), {}, tmp_path)
    job.cancel()
    with pytest.warns(gpar.IncompleteResultsWarning, match="cancelling"):
        results = job.result(timeout=120)
    done = [value for value in results if not isinstance(value, gpar.TaskFailure)]
    assert len(done) + len(results.failures) == 4  # what ran before the cancel was seen, ran
    assert {failure.reason for failure in results.failures} == {"cancelled"}


def test_a_finished_job_is_freed_at_once_not_at_a_garbage_collection():
    """Nothing of a job keeps itself alive in a cycle (its loop, its page's timer): what it
    holds (the environment's reference, its results) goes as soon as the caller drops it."""
    import gc
    import weakref

    gc.disable()
    try:
        job = gpar.submit(range(4), abs, progress=False)
        assert job.result(timeout=120) == [0, 1, 2, 3]
        dropped = weakref.ref(job)
        control = weakref.ref(job._control)
        del job
        assert dropped() is None and control() is None
    finally:
        gc.enable()
