"""The batches in flight alone: numbering, the order of elements in fn, what a batch never
started."""

from gpar.inflight import InFlight
from gpar.records import InFn, Running


def test_batches_are_numbered_and_backups_contested():
    flight = InFlight()
    first = flight.launch(range(0, 5), 0, backup=False)
    second = flight.launch(range(5, 6), 1, backup=True)
    assert (first, second, len(flight)) == (0, 1, 2) and flight.contested == {1}
    assert flight.forget(second).backup and flight.contested == set()
    assert flight.forget(second) is None and len(flight) == 1


def test_the_walk_finds_those_in_fn_longest_first_and_stops_at_a_young_one():
    flight = InFlight()
    a, b, c = (flight.launch(range(i, i + 1), 0, False) for i in range(3))
    flight.on_running(Running(a, InFn(0, 1.0)))
    flight.on_running(Running(b, InFn(0, 2.0)))
    flight.on_running(Running(c, InFn(0, 3.0)))
    assert [batch for batch, _ in flight.in_fn_longer_than(3.5, 1.0)] == [a, b]
    assert flight.first_in_fn_since() == 1.0
    flight.on_running(Running(a, None))  # none in fn now (with output=, its tables are written)
    assert flight.first_in_fn_since() == 2.0
    flight.on_running(Running(b, InFn(1, 5.0)))  # its next element: last in the walk
    assert [batch for batch, _ in flight.in_fn_longer_than(9.0, 0.5)] == [c, b]
    flight.clear()
    assert flight.first_in_fn_since() is None and not flight.batches


def test_a_new_element_in_fn_is_not_straggling():
    flight = InFlight()
    batch = flight.launch(range(0, 3), 0, False)
    flight.on_running(Running(batch, InFn(0, 1.0)))
    flight.batches[batch].straggling = True
    flight.on_running(Running(batch, InFn(0, 1.0)))  # the same element, told again
    assert flight.batches[batch].straggling
    flight.on_running(Running(batch, InFn(1, 2.0)))
    assert not flight.batches[batch].straggling
    flight.on_running(Running(99, InFn(0, 1.0)))  # a batch over already: nothing


def test_what_a_batch_never_started_lies_around_its_element_in_fn():
    flight = InFlight()
    live = flight.batches[flight.launch(range(10, 20), 0, False)]
    assert live.unstarted() == (range(10, 20),) and live.cancelled("stop") is None
    live.reported, live.running = 3, InFn(6, 4.0)  # 13..15 finished, not yet written
    assert live.unstarted() == (range(13, 16), range(17, 20))
    ended = live.cancelled("stop")
    assert (ended.index, ended.started_at, ended.outcome) == (16, 4.0, "cancelled")
    live.end = 8  # the worker handed back 18 and 19
    assert live.unstarted() == (range(13, 16), range(17, 18))


def test_a_report_accepts_the_owned_positions_without_errors():
    flight = InFlight()
    live = flight.batches[flight.launch(range(0, 10), 0, False)]
    live.end = 8
    assert live.parts_without({}, 2, 6) == [range(2, 6)]
    assert live.parts_without({3: "e", 9: "e"}, 2, 10) == [range(2, 3), range(4, 8)]


def test_stuck_when_every_started_batch_straggles_and_work_waits():
    flight = InFlight()
    a, b = flight.launch(range(0, 1), 0, False), flight.launch(range(1, 2), 0, False)
    flight.on_running(Running(a, InFn(0, 1.0)))
    flight.batches[a].straggling = True
    assert flight.all_started_straggle(waiting=False)  # b waits: launched, not started
    flight.on_running(Running(b, InFn(0, 1.0)))
    assert not flight.all_started_straggle(waiting=True)  # b runs at its pace
    flight.batches[b].straggling = True
    assert flight.all_started_straggle(waiting=True)
    assert not flight.all_started_straggle(waiting=False)


def test_elements_not_yet_reported_count_once_and_those_in_fn_by_batch():
    flight = InFlight()
    batch = flight.launch(range(0, 10), 0, backup=False)
    flight.launch(range(4, 5), 1, backup=True)  # a backup of element 4: the same element
    flight.batches[batch].reported = 3
    flight.on_running(Running(batch, InFn(4, 1.0)))
    assert flight.unreported() == 7 and flight.in_fn == 1
    flight.batches[batch].end = 6  # it handed 6..9 back: they are the queue's again
    assert flight.unreported() == 3
