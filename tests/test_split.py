"""Batch sizing, without Ray."""

from gpar.split import BATCHES_PER_SLOT, MIN_BATCH_S, TARGET_BATCH_S, BatchSizer


def test_one_element_per_task_until_timed():
    sizer = BatchSizer(slots=2)
    assert sizer.next_size(remaining=10_000) == 1


def test_no_more_elements_than_slots_means_one_per_task():
    sizer = BatchSizer(slots=4)
    sizer.observe(elements=100, seconds=1e-5)
    assert sizer.next_size(remaining=4) == 1


def test_tiny_elements_get_large_batches():
    sizer = BatchSizer(slots=2)
    sizer.observe(elements=1000, seconds=1000 * 1e-7)
    # load balance alone would make batches of 100,000 / 4: each would last under MIN_BATCH_S
    assert sizer.next_size(remaining=400_000) == round(MIN_BATCH_S / 1e-7)
    # and of 10**8 / 4 here: each would last over TARGET_BATCH_S
    assert sizer.next_size(remaining=10**8) == round(TARGET_BATCH_S / 1e-7)


def test_slow_elements_run_one_per_task():
    sizer = BatchSizer(slots=2)
    sizer.observe(elements=2, seconds=1.0)
    assert sizer.next_size(remaining=10_000) == 1


def test_medium_elements_leave_batches_for_every_slot():
    sizer = BatchSizer(slots=2)
    sizer.observe(elements=10, seconds=10 * 0.001)  # 1 ms each: target is 200 per batch
    assert sizer.next_size(remaining=100_000) == int(TARGET_BATCH_S / 0.001)
    # near the end, load balance wins over the target duration
    assert sizer.next_size(remaining=400) == 400 // (2 * BATCHES_PER_SLOT)


def test_batch_never_exceeds_what_remains():
    sizer = BatchSizer(slots=2)
    sizer.observe(elements=10, seconds=1e-8)
    assert sizer.next_size(remaining=7) == 7
