"""The straggler rules alone: thresholds from the median, when a scan may preempt or back up,
patience, the backup budget, and which nodes get no new work."""

import math

from gpar.stragglers import (
    BACKUP_MIN_S,
    BACKUP_SHARE,
    BACKUP_SLOWDOWN,
    PREEMPT_BACKOFF,
    TAIL_SLOWDOWN,
    WRITING_PATIENCE,
    SlowNodes,
    Stragglers,
)


def stragglers(elements=100, slots=4, backups=True, task_timeout_s=None, median_s=1.0):
    rules = Stragglers(elements, slots=slots, backups=backups, task_timeout_s=task_timeout_s)
    if median_s is not None:
        rules.on_median(median_s)
    return rules


def test_nothing_straggles_before_there_is_a_median():
    rules = stragglers(median_s=None)
    assert rules.threshold is None
    assert rules.scan(final=50, queued=False, waiting=0, in_flight=4) is None
    assert rules.check_after == math.inf


def test_thresholds_follow_the_median_with_a_floor():
    rules = stragglers(task_timeout_s=2.0, median_s=1.0)
    assert (rules.threshold, rules.tail_threshold) == (BACKUP_SLOWDOWN, TAIL_SLOWDOWN)
    assert rules.check_after == TAIL_SLOWDOWN  # before the timeout
    rules.on_median(0.001)  # a tiny median does not make a tiny element a straggler
    assert rules.threshold == rules.tail_threshold == BACKUP_MIN_S


def test_a_scan_preempts_only_when_every_slot_is_busy_and_work_waits():
    rules = stragglers(slots=4)
    assert rules.scan(final=10, queued=True, waiting=3, in_flight=4).may_preempt == 3
    assert rules.scan(final=10, queued=True, waiting=3, in_flight=2).may_preempt == 0


def test_backups_wait_for_half_the_elements_and_an_empty_queue():
    rules = stragglers(elements=100, slots=4)
    assert not rules.scan(final=49, queued=False, waiting=0, in_flight=4).backups
    # waiting work goes first
    assert not rules.scan(final=50, queued=True, waiting=0, in_flight=4).backups
    busy = rules.scan(final=50, queued=False, waiting=0, in_flight=4)
    assert busy.backups and busy.threshold == rules.threshold
    # a slot idles: a shorter straggle will do
    tail = rules.scan(final=50, queued=False, waiting=0, in_flight=3)
    assert tail.backups and tail.threshold == rules.tail_threshold
    without = stragglers(backups=False)
    assert not without.scan(final=100, queued=False, waiting=0, in_flight=3).backups


def test_patience_doubles_with_each_preemption_and_grows_while_tables_are_written():
    rules = stragglers()
    threshold = rules.threshold
    assert not rules.should_preempt(7, False, threshold - 0.1, threshold, writing=False)
    assert rules.should_preempt(7, False, threshold + 0.1, threshold, writing=False)
    rules.preempted(7)
    patience = threshold * PREEMPT_BACKOFF
    assert not rules.should_preempt(7, False, patience - 0.1, threshold, writing=False)
    assert rules.should_preempt(7, False, patience + 0.1, threshold, writing=False)
    assert not rules.should_preempt(7, False, patience + 0.1, threshold, writing=True)
    assert rules.should_preempt(7, False, WRITING_PATIENCE * patience + 0.1, threshold, True)
    assert rules.should_preempt(8, True, 0.0, threshold, writing=False)  # a backup: none


def test_one_backup_per_batch_within_the_share_of_elements():
    rules = stragglers(elements=30)
    budget = max(1, int(BACKUP_SHARE * 30))
    assert rules.take_backup(0) and not rules.take_backup(0)
    assert [rules.take_backup(batch) for batch in range(1, budget + 1)] == [True] * (
        budget - 1) + [False]


def test_a_node_with_two_stragglers_gets_no_new_work_but_never_the_last_nodes():
    slow = SlowNodes(nodes=5)
    assert not slow.on_straggler("a", 0)  # one straggler may be the element's fault
    assert slow.on_straggler("a", 0) and slow.avoided == {"a"}
    assert not slow.on_straggler("a", 0)  # already avoided
    for _ in range(2):
        slow.on_straggler("b", 1)
    assert slow.avoided == {"a", "b"}
    for _ in range(2):
        slow.on_straggler("c", 0)
    assert slow.avoided == {"a", "b"}  # at most half the nodes
    single = SlowNodes(nodes=1)
    assert not single.on_straggler("only", 0) and not single.on_straggler("only", 0)
    assert not single.avoided and not slow.on_straggler("", 0)  # unknown node: nothing


def test_stragglers_that_fall_at_random_do_not_make_a_node_slow():
    slow = SlowNodes(nodes=1000)
    assert not slow.on_straggler("n", 25) and not slow.on_straggler("n", 50)  # 2 of 52
    assert not slow.avoided
