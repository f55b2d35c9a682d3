"""The element ledger alone: an element becomes final once, and attempts are numbered past
every one it has had."""

from hypothesis import given
from hypothesis import strategies as st

from gpar.ledger import CANCELLED, DONE, FAILED, OPEN, Ledger
from gpar.results import TaskFailure


def failure(index, attempts=1, reason="error"):
    return TaskFailure(index, "ValueError", "bad", "", attempts, reason)


def test_accept_marks_open_elements_done_once():
    ledger = Ledger(10)
    assert ledger.accept(range(2, 5)) == [range(2, 5)]
    assert ledger.accept(range(2, 5)) == []  # a second report of them counts nothing
    assert ledger.final_count == 3 and list(ledger.state[1:6]) == [OPEN, DONE, DONE, DONE, OPEN]


def test_accept_returns_the_runs_that_were_open_around_final_ones():
    ledger = Ledger(10)
    ledger.accept(range(3, 4))
    ledger.fail(failure(6))
    assert ledger.accept(range(0, 10)) == [range(0, 3), range(4, 6), range(7, 10)]
    assert ledger.final_count == 10 and ledger.state[6] == FAILED
    assert ledger.accept(range(0, 0)) == []


def test_trim_drops_final_elements_at_either_end_only():
    ledger = Ledger(10)
    for index in (0, 1, 5, 9):
        ledger.accept(range(index, index + 1))
    assert ledger.trim(range(0, 10)) == range(2, 9)  # 5 is inside: kept
    assert ledger.trim(range(0, 2)) == range(2, 2)
    assert ledger.all_final(range(0, 2)) and not ledger.all_final(range(0, 3))


def test_charge_counts_failed_attempts_per_element():
    ledger = Ledger(3)
    assert [ledger.charge(1), ledger.charge(1), ledger.charge(2)] == [1, 2, 1]
    assert ledger.failed_count == {1: 2, 2: 1}


def test_cancel_open_fails_only_the_open_elements_with_their_attempts():
    ledger = Ledger(4)
    ledger.accept(range(0, 1))
    ledger.charge(2)
    ledger.cancel_open(lambda index, attempts: failure(index, attempts, "deadline"))
    assert sorted(ledger.failures) == [1, 2, 3] and ledger.failures[2].attempts == 1
    assert ledger.final_count == 4 and list(ledger.state) == [DONE] + [CANCELLED] * 3


def test_attempts_run_alone_are_numbered_past_every_earlier_one():
    ledger = Ledger(3)
    assert ledger.next_attempt(1, 0) == 1  # a backup of attempt 0
    assert ledger.next_attempt(1, 0) == 2  # a retry of attempt 0, after that backup
    assert ledger.next_attempt(2, 4) == 5


def test_a_rerun_of_several_is_numbered_past_each_ones_last_attempt():
    ledger = Ledger(4)
    ledger.next_attempt(1, 0)  # element 1 had a backup: attempt 1
    assert ledger.rerun_attempt(range(0, 3), 0) == 2
    assert ledger.next_attempt(1, 0) == 3  # past the re-run
    assert ledger.rerun_attempt(range(3, 4), 0) == 1  # none had one alone


@given(st.lists(st.sampled_from([OPEN, DONE, FAILED, CANCELLED]), max_size=40),
       st.integers(0, 40))
def test_done_until_is_the_end_of_the_run_of_done_elements(states, start):
    ledger = Ledger(len(states))
    ledger.state[:] = bytes(states)
    start = min(start, len(states))
    end = start
    while end < len(states) and states[end] == DONE:
        end += 1
    assert ledger.done_until(start) == end
