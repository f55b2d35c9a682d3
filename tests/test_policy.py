"""The scheduling policy alone: events and a fake clock in, decisions out. No Ray."""

import pytest

from gpar.policy import Policy, Rules, default_max_failures
from gpar.records import ElementError, HandedOff, InFn, Lost, Reported, Running
from gpar.split import BatchSizer
from gpar.stragglers import BACKUP_MIN_S, BACKUP_SLOWDOWN, TAIL_SLOWDOWN, WRITING_PATIENCE

CRASH = ElementError("WorkerCrashedError", "worker died", "", "system", retryable=True)
FN_ERROR = ElementError("ValueError", "bad", "tb", "error", retryable=False)
TRANSIENT = ElementError("ConnectionError", "flaky", "tb", "error", retryable=True)


def policy(elements, **rules):
    rules.setdefault("max_workers", 2)
    rules.setdefault("max_failures", default_max_failures(elements))
    return Policy(elements, Rules(**rules), BatchSizer(rules["max_workers"]))


def killed(stopped):
    return [each.batch for each in stopped if each.killed]


def launch_all(p, limit=100):
    return list(p.launches(limit))


def finish(p, launch, errors=None, seconds=0.01):
    return p.on_reported(Reported(launch.batch, 0, len(launch.indices), errors or {}, seconds))


def test_one_element_per_batch_while_elements_fit_the_workers():
    p = policy(2)
    launches = launch_all(p)
    assert [list(launch.indices) for launch in launches] == [[0], [1]]


def test_success_accepts_the_elements_and_finishes_the_job():
    p = policy(2)
    for launch in launch_all(p):
        assert finish(p, launch) == [launch.indices]
    assert p.over and p.stop is None and p.ledger.failures == {}


def test_fn_exception_not_in_retry_on_is_final_at_once():
    p = policy(2)
    first, second = launch_all(p, limit=2)
    finish(p, first, errors={0: FN_ERROR})
    failure = p.ledger.failures[0]
    assert (failure.attempts, failure.reason, failure.message) == (1, "error", "bad")
    assert launch_all(p) == []


def test_retryable_failure_is_retried_alone_until_the_element_budget_is_spent():
    p = policy(1, task_retries=2)
    launch = launch_all(p)[0]
    for attempt in range(3):
        assert launch.attempt == attempt
        finish(p, launch, errors={0: TRANSIENT})
        launches = launch_all(p)
        if attempt < 2:
            launch = launches[0]
    assert launches == [] and p.ledger.failures[0].attempts == 3 and p.counts.retries == 2


def test_total_budget_tolerates_max_failures_and_stops_at_one_more():
    p = policy(20, max_workers=20, max_failures=2)
    launches = launch_all(p)
    for launch in launches[:2]:
        finish(p, launch, errors={0: TRANSIENT})
    assert p.stop is None and not killed(p.tick(1.0))  # two failures: the budget itself
    finish(p, launches[2], errors={0: TRANSIENT})
    assert p.stop == "budget"
    assert sorted(killed(p.tick(2.0))) == sorted(launch.batch for launch in launches[3:])


def test_default_total_budget_grows_with_the_job():
    assert default_max_failures(10) == 10 and default_max_failures(1000) == 50


def test_deadline_stops_and_marks_the_unfinished():
    p = policy(3, max_workers=3, deadline_at=10.0)
    a, b, c = launch_all(p)
    finish(p, a)
    assert not p.tick(9.9)
    assert sorted(killed(p.tick(10.0))) == [b.batch, c.batch] and p.stop == "deadline"
    assert {i: f.reason for i, f in p.ledger.failures.items()} == {1: "deadline", 2: "deadline"}


def test_task_timeout_kills_the_batch_charges_the_element_and_requeues_the_rest():
    timeout = BACKUP_MIN_S / 2  # a timeout, not a straggler's preemption
    p = policy(100, max_workers=1, task_timeout_s=timeout)
    p.sizer.observe(10, 0.01)  # make batches larger than one element
    launch = launch_all(p, limit=1)[0]
    assert len(launch.indices) > 3
    p.on_reported(Reported(launch.batch, 0, 2, {}, 0.002))
    p.on_running(Running(launch.batch, InFn(2, 1.0)))
    assert not p.tick(1.0 + timeout - 0.01)
    (stopped,) = p.tick(1.0 + timeout + 0.1)
    assert stopped.batch == launch.batch and stopped.killed
    assert (stopped.ended.index, stopped.ended.outcome) == (2, "timeout")
    assert stopped.unstarted == (launch.indices[3:],)  # queued again, uncharged
    retry = launch_all(p, limit=1)[0]
    assert list(retry.indices) == [2] and retry.attempt == 1 and p.counts.timeouts == 1
    finish(p, retry)
    rest = []
    while not p.over:
        for launch in launch_all(p, limit=1):
            rest.extend(launch.indices)
            finish(p, launch)
    assert sorted(rest) == list(range(3, 100))  # elements 0 and 1 reported before the kill


def test_quorum_stops_once_enough_elements_are_final():
    p = policy(10, max_workers=10, quorum=0.8)
    launches = launch_all(p)
    for launch in launches[:7]:
        finish(p, launch)
    assert p.stop is None
    finish(p, launches[7])
    assert p.stop == "quorum"
    assert sorted(p.ledger.failures) == [8, 9] and p.ledger.failures[8].reason == "quorum"


def test_a_straggler_gets_one_backup_and_the_first_finisher_wins():
    p = policy(10, max_workers=1)  # its one slot is busy: not the tail
    launches = launch_all(p)
    for launch in launches[:9]:
        finish(p, launch, seconds=0.2)
    slow = launches[9]
    threshold = max(BACKUP_MIN_S, BACKUP_SLOWDOWN * 0.2)  # the median element took 0.2 s
    p.on_running(Running(slow.batch, InFn(0, 0.0)))
    p.tick(threshold - 0.05)
    assert launch_all(p) == []  # not slow enough yet
    p.tick(threshold + 0.05)
    (backup,) = launch_all(p)
    assert backup.backup and list(backup.indices) == [9] and backup.attempt == 1
    assert finish(p, backup) == [range(9, 10)]
    (loser,) = p.tick(2.1)
    assert loser.batch == slow.batch and loser.ended.outcome == "cancelled"
    assert finish(p, slow) == []  # and its late result is never accepted twice
    assert p.over and p.counts.backups == 1


def test_at_the_tail_a_shorter_straggle_earns_a_backup():
    def slow_attempt_after_nine_of_one_second(max_workers):
        p = policy(10, max_workers=max_workers)
        launches = launch_all(p)
        for launch in launches[:9]:
            finish(p, launch, seconds=1.0)
        p.on_running(Running(launches[9].batch, InFn(0, 0.0)))
        return p

    tail = TAIL_SLOWDOWN * 1.0 + 0.05
    idle_slots = slow_attempt_after_nine_of_one_second(max_workers=10)
    idle_slots.tick(tail)
    assert [launch.backup for launch in launch_all(idle_slots)] == [True]
    busy = slow_attempt_after_nine_of_one_second(max_workers=1)
    busy.tick(tail)
    assert launch_all(busy) == []  # every slot busy: the usual BACKUP_SLOWDOWN applies
    busy.tick(BACKUP_SLOWDOWN * 1.0 + 0.05)
    assert [launch.backup for launch in launch_all(busy)] == [True]


def test_elements_a_worker_hands_back_are_queued_again_uncharged():
    p = policy(100, max_workers=1, backups=False)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    assert only.handoff_after_s == BACKUP_MIN_S  # what the worker is told: 3x a tiny median
    p.on_reported(Reported(only.batch, 0, 10, {}, 0.01))
    p.on_running(Running(only.batch, InFn(10, 1.0)))
    p.on_handed_off(HandedOff(only.batch, 11))  # it gives back what is behind element 10
    launches = launch_all(p, limit=10)
    handed_off = [i for launch in launches for i in launch.indices]
    assert handed_off[:len(only.indices) - 11] == list(only.indices[11:])
    assert {launch.attempt for launch in launches} == {0}  # never started: not an attempt
    assert p.counts.failed_attempts == 0 and not any(launch.backup for launch in launches)
    rest = len(only.indices) - 10  # a report past the batch's end accepts only what it kept
    assert p.on_reported(Reported(only.batch, 10, rest, {}, 0.5)) == [range(10, 11)]
    assert only.batch not in p.flight.batches


def test_no_backups_when_turned_off():
    p = policy(10, max_workers=10, backups=False)
    launches = launch_all(p)
    for launch in launches[:9]:
        finish(p, launch, seconds=0.1)
    p.on_running(Running(launches[9].batch, InFn(0, 0.0)))
    p.tick(100.0)
    assert launch_all(p) == []


def test_a_lost_batch_with_one_unreported_element_charges_it():
    p = policy(1)
    launch = launch_all(p)[0]
    stopped = p.on_lost(Lost(launch.batch, CRASH))
    assert (stopped.ended.index, stopped.ended.outcome) == (0, "system")
    assert not stopped.killed and p.counts.failed_attempts == 1
    assert launch_all(p)[0].attempt == 1


def test_elements_finished_but_not_yet_written_are_requeued_uncharged_with_their_batch():
    """With output=, a worker reports elements once their tables are in a file; those before
    the element in fn that had not been written die with a lost batch, and run again."""
    p = policy(200, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    p.on_reported(Reported(only.batch, 0, 10, {}, 0.01))
    p.on_running(Running(only.batch, InFn(30, 1.0)))  # 10..29 finished in fn, not yet written
    stopped = p.on_lost(Lost(only.batch, CRASH))
    assert stopped.ended.index == 30 and p.counts.failed_attempts == 1
    assert stopped.unstarted == (only.indices[10:30], only.indices[31:])
    again = sorted(i for launch in launch_all(p) for i in launch.indices)
    assert again == list(only.indices[10:])  # 30 retried alone, the rest uncharged
    assert p.ledger.failed_count == {30: 1}


def test_a_lost_batch_with_nothing_seen_in_fn_is_split_uncharged():
    p = policy(100, max_workers=1)
    p.sizer.observe(10, 0.01)
    launch = launch_all(p, limit=1)[0]
    stopped = p.on_lost(Lost(launch.batch, CRASH))
    assert stopped.ended is None and stopped.unstarted == (launch.indices,)
    halves = launch_all(p, limit=2)
    assert [i for h in halves for i in h.indices] == list(launch.indices)
    assert {h.attempt for h in halves} == {0}
    assert p.ledger.failed_count == {} and p.counts.failed_attempts == 0
    assert p.counts.batches_lost == 1


def test_a_lost_batch_charges_the_element_in_fn_and_requeues_the_unstarted():
    p = policy(200, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    p.on_reported(Reported(only.batch, 0, 50, {}, 0.01))
    p.on_running(Running(only.batch, InFn(50, 1.0)))
    stopped = p.on_lost(Lost(only.batch, CRASH))
    assert (stopped.ended.index, stopped.ended.attempt) == (50, 0)
    assert stopped.unstarted == (only.indices[51:],) and p.counts.failed_attempts == 1
    suspect = launch_all(p, limit=1)[0]
    assert list(suspect.indices) == [50] and suspect.attempt == 1  # alone, first
    rest = [i for launch in launch_all(p, limit=10) for i in launch.indices]
    assert rest[:len(only.indices) - 51] == list(only.indices[51:])
    assert p.ledger.failed_count == {50: 1}  # the never-started elements are charged nothing


def test_a_lost_batch_charges_the_element_its_note_names_even_unseen_in_fn():
    """Element 2 of 5 killed its worker before any progress message: the note names it."""
    p = policy(5, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    assert list(only.indices) == [0, 1, 2, 3, 4]
    stopped = p.on_lost(Lost(only.batch, CRASH, at=2))
    assert (stopped.ended.index, stopped.ended.outcome) == (2, "system")
    assert stopped.ended.started_at is None  # never seen in fn: its start is not known
    assert stopped.ran == (range(0, 2),) and stopped.unstarted == (range(3, 5),)
    assert p.counts.failed_attempts == 1 and p.ledger.failed_count == {2: 1}
    assert p.counts.batches_lost == 0
    again = {i: launch.attempt for launch in launch_all(p) for i in launch.indices}
    assert again == {2: 1, 0: 1, 1: 1, 3: 0, 4: 0}  # what ran runs as a new attempt


def test_a_lost_batch_keeps_the_start_the_driver_saw():
    p = policy(200, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    p.on_reported(Reported(only.batch, 0, 50, {}, 0.01))
    p.on_running(Running(only.batch, InFn(50, 1.5)))
    stopped = p.on_lost(Lost(only.batch, CRASH, at=50))
    assert (stopped.ended.index, stopped.ended.started_at) == (50, 1.5)
    assert stopped.ran == (range(50, 50),) and stopped.unstarted == (only.indices[51:],)


def test_a_rerun_after_a_lost_batch_is_numbered_past_a_backup():
    p = policy(3, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    p.ledger.next_attempt(1, only.attempt)  # element 1 got a backup: attempt 1
    p.on_lost(Lost(only.batch, CRASH, at=2))
    attempts = {i: launch.attempt for launch in launch_all(p) for i in launch.indices}
    assert attempts == {2: 1, 0: 2, 1: 2}


def test_a_worker_lost_between_elements_splits_what_ran_from_the_rest_uncharged():
    p = policy(6, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    stopped = p.on_lost(Lost(only.batch, CRASH, at=~3))  # 0..2 finished, none in fn
    assert stopped.ended is None and p.counts.failed_attempts == 0
    assert stopped.ran == (range(0, 3),) and stopped.unstarted == (range(3, 6),)
    launches = launch_all(p)
    assert [(list(w.indices), w.attempt) for w in launches] == [([0, 1, 2], 1), ([3, 4, 5], 0)]
    assert p.counts.batches_lost == 1


def test_a_lone_element_lost_after_it_finished_is_charged():
    """A crash outside fn that repeats (a value whose pickling kills the worker) must end."""
    p = policy(1)
    (only,) = launch_all(p)
    stopped = p.on_lost(Lost(only.batch, CRASH, at=~1))
    assert (stopped.ended.index, stopped.ended.outcome) == (0, "system")
    assert stopped.ran == () and p.counts.failed_attempts == 1


def test_a_batch_lost_with_its_node_says_its_element_is_not_known():
    p = policy(200, max_workers=1)
    p.sizer.observe(1, 1e-6)
    (only,) = launch_all(p, limit=1)
    p.on_running(Running(only.batch, InFn(7, 1.0)))
    stopped = p.on_lost(Lost(only.batch, CRASH, at=None))
    assert stopped.ended.index == 7 and "not known" in stopped.ended.message


def test_errors_raise_stops_at_the_first_final_failure():
    p = policy(3, max_workers=3, errors="raise")
    a, b, c = launch_all(p)
    finish(p, a, errors={0: FN_ERROR})
    assert p.stop == "raise" and p.ledger.failures[0].reason == "error"
    assert p.ledger.failures[1].reason == "cancelled"


@pytest.mark.parametrize("elements", [1, 7, 1000])
def test_every_element_is_launched_exactly_once_without_faults(elements):
    p = policy(elements)
    p.sizer.observe(1, 1e-4)
    seen = []
    while not p.over:
        for launch in launch_all(p, limit=2):
            seen.extend(launch.indices)
            finish(p, launch)
    assert sorted(seen) == list(range(elements))


def test_stragglers_are_reported_once_each():
    p = policy(4, max_workers=4)
    launches = p.launches(4)
    for launch in launches:
        p.on_running(Running(launch.batch, InFn(0, 0.0)))
    p.on_reported(Reported(launches[0].batch, 0, 1, {}, 0.1))
    p.tick(5.0)
    assert sorted(p.take_stragglers()) == [1, 2, 3]
    p.tick(6.0)
    assert not p.take_stragglers()


@pytest.mark.parametrize("held", [0, 2])
def test_a_straggler_whose_worker_still_writes_finished_elements_is_preempted_later(held):
    """With output=, the elements before a straggler may be finished but not yet written: its
    batch gets WRITING_PATIENCE times the patience before preemption, so they are reported
    rather than lost."""
    p = policy(100, max_workers=1)
    p.sizer.observe(1, 0.01)
    (only,) = launch_all(p, limit=1)  # the rest of the elements wait
    p.on_reported(Reported(only.batch, 0, 3, {}, 0.03))
    p.on_running(Running(only.batch, InFn(3 + held, 10.0)))
    first = p.tick(10.0 + BACKUP_MIN_S + 0.1)
    if not held:
        assert [stopped.ended.outcome for stopped in first] == ["preempted"]
        return
    assert first == []
    assert not p.tick(10.0 + 2 * BACKUP_MIN_S + 0.1)
    (stopped,) = p.tick(10.0 + WRITING_PATIENCE * BACKUP_MIN_S + 0.1)
    assert stopped.ended.outcome == "preempted"
    assert stopped.unstarted[0] == only.indices[3:3 + held]  # queued again, uncharged


def test_a_quorum_given_as_a_fraction_of_the_elements_means_that_many():
    p = policy(35, max_workers=35, quorum=29 / 35)  # 29 / 35 * 35 == 29.000000000000004
    p.sizer.observe(1, 0.01)
    for launch in launch_all(p)[:29]:
        finish(p, launch)
    assert p.stop == "quorum"


def test_a_batch_writing_its_last_tables_has_no_element_in_fn_to_straggle():
    """With output=, a worker whose elements all finished reports no element in fn while it
    writes their tables: the write is not an element straggling in fn."""
    p = policy(100, max_workers=1)
    p.sizer.observe(1, 0.01)
    (only,) = launch_all(p, limit=1)  # the rest of the elements wait
    last = len(only.indices) - 1
    p.on_reported(Reported(only.batch, 0, 3, {}, 0.03))
    p.on_running(Running(only.batch, InFn(last, 10.0)))  # the last element in fn...
    p.on_running(Running(only.batch, None))  # ...finished: its tables are written
    assert not p.tick(10.0 + 100 * BACKUP_MIN_S)  # neither preempted nor backed up
    finish(p, only)
    assert p.ledger.final_count == len(only.indices)


def test_cancel_kills_what_runs_and_marks_each_open_element_cancelled():
    p = policy(4, max_workers=2)
    first, second = launch_all(p, limit=2)
    finish(p, first)
    p.cancel()
    assert p.stop == "cancelled" and p.over
    assert killed(p.tick(1.0)) == [second.batch] and not p.launches(2)
    assert [(f.index, f.reason) for f in p.ledger.failures.values()] == [
        (1, "cancelled"), (2, "cancelled"), (3, "cancelled")]


def test_cancel_after_the_job_stopped_keeps_why_it_stopped():
    p = policy(4, max_workers=2, quorum=0.25)
    finish(p, launch_all(p)[0])
    p.tick(1.0)
    p.cancel()
    assert p.stop == "quorum" and {f.reason for f in p.ledger.failures.values()} == {"quorum"}


def test_an_input_read_as_the_job_goes_is_over_only_once_it_ended():
    p = Policy(0, Rules(max_workers=2, max_failures=10), BatchSizer(2), input_ended=False)
    assert not p.over and not p.launches(2)
    p.extend(2)
    for launch in launch_all(p, limit=2):
        finish(p, launch)
    assert p.ledger.final_count == 2 and not p.over  # more may come
    p.end_input(max_failures=default_max_failures(2))
    assert p.over


def test_the_default_budget_is_its_floor_until_the_input_ends_then_scales_with_it():
    p = Policy(0, Rules(max_workers=1, max_failures=default_max_failures(0)), BatchSizer(1),
               input_ended=False)
    p.extend(1000)
    assert p.rules.max_failures == 10
    p.end_input(max_failures=default_max_failures(p.elements))
    assert p.rules.max_failures == 50


def test_held_back_launches_nothing_but_the_element_the_stream_waits_for():
    p = policy(600, max_workers=2)
    p.sizer.observe(10, 0.01)  # 1 ms per element: batches of a hundred or more
    assert not p.launches(2, most_elements=0)
    p.held_back = True
    (launch,) = p.launch_alone(3)
    assert launch.indices == range(3, 4) and not p.launch_alone(3)  # in flight: not again
    launches = p.launches(4, most_elements=30)
    assert [launch.indices for launch in launches] == [range(0, 3), range(4, 31)]


def test_a_parked_head_leaves_the_parked_line_at_once():
    p = policy(6, max_workers=2)
    p.queue.take(5)  # as a preempted element is: out of the input, parked
    p.queue.park(5, 1)
    assert not p.launch_alone(4, parked_only=True)  # queued in its turn: stays there
    (launch,) = p.launch_alone(5, parked_only=True)
    assert (launch.indices, launch.attempt) == (range(5, 6), 1)
