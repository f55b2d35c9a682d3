"""The work queue alone: order, cutting to the sizer's size, and parked elements last."""

from gpar.split import BatchSizer
from gpar.workqueue import Work, WorkQueue


def drain(queue):
    taken = []
    while (work := queue.pop()) is not None:
        taken.append(work)
    return taken


def indices(work):
    """What pop() returns is (indices, attempt, backup)."""
    return work[0]


def test_the_input_leaves_in_order_one_element_at_a_time_before_any_timing():
    queue = WorkQueue(3, BatchSizer(2))
    assert drain(queue) == [(range(0, 1), 0, False), (range(1, 2), 0, False),
                            (range(2, 3), 0, False)]
    assert queue.queued == 0 and not queue


def test_recuttable_work_is_cut_to_the_sizers_size_and_whole_work_never():
    sizer = BatchSizer(1)
    sizer.observe(1, 0.001)  # 1 ms per element: batches of hundreds
    queue = WorkQueue(1000, sizer)
    queue.push(Work(range(2000, 2010), 1, whole=True), front=True)
    first, second = queue.pop(), queue.pop()
    assert first == (range(2000, 2010), 1, False)  # whole: as it was queued
    assert 1 < len(indices(second)) < 1000 and indices(second).start == 0
    assert queue.queued == 1000 - len(indices(second))


def test_retries_go_first_and_elements_given_back_go_last():
    queue = WorkQueue(2, BatchSizer(2))
    queue.push(Work(range(7, 8), 0, whole=False))
    queue.push(Work(range(5, 6), 2, whole=True), front=True)
    assert [indices(w).start for w in drain(queue)] == [5, 0, 1, 7]


def test_parked_elements_wait_until_the_queue_is_empty():
    queue = WorkQueue(1, BatchSizer(1))
    queue.park(9, attempt=3)
    assert queue.waiting == 2 and queue.has_queued
    assert indices(queue.pop()) == range(0, 1)
    assert not queue.has_queued and queue  # the parked one still waits
    assert queue.pop() == (range(9, 10), 3, False)
    assert queue.pop() is None and queue.waiting == 0


def test_a_backup_keeps_its_flag():
    queue = WorkQueue(0, BatchSizer(1))
    queue.push(Work(range(4, 5), 1, whole=True, backup=True), front=True)
    assert queue.pop() == (range(4, 5), 1, True)


def test_input_read_later_joins_the_inputs_run_still_queued():
    sizer = BatchSizer(1)
    sizer.observe(1, 0.001)
    queue = WorkQueue(10, sizer)
    queue.extend_input(range(10, 30))
    assert queue.queued == 30 and indices(queue.pop()) == range(0, 20)  # across both
    queue.extend_input(range(30, 32))
    assert drain(queue) == [(range(20, 32), 0, False)]


def test_one_element_is_taken_out_of_its_work_and_the_rest_keeps_its_place():
    queue = WorkQueue(0, BatchSizer(1))
    queue.push(Work(range(0, 5), 0, whole=False))
    queue.push(Work(range(9, 10), 2, whole=True))
    queue.park(7, 1)
    assert queue.take(2) == (range(2, 3), 0, False)
    assert queue.take(7) == (range(7, 8), 1, False)  # parked: out of the parked line
    assert queue.take(8) is None and queue.queued == 5
    assert [indices(work) for work in drain(queue)] == [
        range(0, 1), range(1, 2), range(3, 4), range(4, 5), range(9, 10)]
