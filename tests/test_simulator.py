"""The scheduling rules under random faults, on the cluster simulator: the real Policy and loop,
simulated workers and clock. Every job hypothesis draws must keep the invariants below."""

import math
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpar import outcomes
from gpar.policy import default_max_failures, quorum_count
from gpar.results import TaskFailure
from gpar.simulator import SimCluster, simulate
from gpar.stragglers import BACKUP_MIN_S, BACKUP_SLOWDOWN
from gpar.worker import FLUSH_S

CHARGED = outcomes.CHARGED
REASONS = {"error", "system", "deadline", "quorum", "cancelled"}


def run_times(seed, median=0.2, tail_share=0.0, slowdown=10.0):
    """Run times near ``median``; a ``tail_share`` of runs ``slowdown`` times longer."""

    def run_time(element, run):
        draw = random.Random(seed * 1_000_003 + element * 101 + run)
        seconds = median * draw.lognormvariate(0.0, 0.25)
        return seconds * slowdown if draw.random() < tail_share else seconds

    return run_time


actions = st.sampled_from(["exit", ("exit", 0.05), "raise", "hang", ("slow", 10.0)])


@st.composite
def jobs(draw):
    elements = draw(st.integers(1, 80))
    nodes = draw(st.integers(1, 5))
    faults = draw(st.dictionaries(
        st.tuples(st.integers(0, elements - 1), st.integers(0, 2)), actions, max_size=8))
    slow = draw(st.dictionaries(st.integers(0, nodes - 1), st.just(10.0), max_size=nodes - 1))
    lost = draw(st.dictionaries(st.integers(1, nodes - 1), st.floats(0.0, 20.0),
                                max_size=nodes - 1)) if nodes > 1 else {}
    cluster = SimCluster(nodes=nodes, slots=draw(st.integers(1, 3)),
                         worker_start_s=draw(st.sampled_from([0.0, 0.05, 1.0])),
                         slow_nodes=slow, lost_nodes=lost)
    knobs = dict(
        task_retries=draw(st.integers(0, 3)),
        max_failures=draw(st.none() | st.integers(0, 10)),
        deadline_s=draw(st.none() | st.floats(0.5, 60.0)),
        task_timeout_s=draw(st.none() | st.floats(0.3, 20.0)),
        quorum=draw(st.sampled_from([1.0, 0.9, 0.5])),
        backups=draw(st.booleans()),
        errors=draw(st.sampled_from(["warn", "warn", "raise"])),
    )
    if "hang" in faults.values() and knobs["task_timeout_s"] is None:
        knobs["deadline_s"] = knobs["deadline_s"] or 60.0  # a hang must end somehow
    seed = draw(st.integers(0, 10**6))
    tail = draw(st.sampled_from([0.0, 0.1]))
    return elements, cluster, faults, knobs, run_times(seed, tail_share=tail)


def check_invariants(elements, knobs, sim):
    policy, report, values = sim.policy, sim.report, sim.values
    # every slot ends as its value or a TaskFailure with a reason
    assert len(values) == elements
    for index, value in enumerate(values):
        if isinstance(value, TaskFailure):
            assert value.index == index and value.reason in REASONS
        else:
            assert value == index
    # no value counted twice: each element became final exactly once
    ledger = policy.ledger
    assert ledger.final_count == elements
    assert len(ledger.failures) + sum(not isinstance(v, TaskFailure) for v in values) == elements
    # every failed attempt is a row of the report, and a crossed budget aborts
    rows = report.attempts
    assert sum(row.outcome in CHARGED for row in rows) == policy.counts.failed_attempts
    max_failures = knobs["max_failures"]
    if max_failures is None:
        max_failures = default_max_failures(elements)
    if policy.counts.failed_attempts > max_failures:
        assert policy.stop is not None  # "budget", or the job had stopped already
    else:  # max_failures failed attempts are tolerated
        assert policy.stop != "budget"
    # the deadline holds in simulated time
    if knobs["deadline_s"] is not None:
        assert sim.end_s <= knobs["deadline_s"] + 1e-6
    # a quorum stop comes as soon as the quorum was final
    if policy.stop == "quorum":
        finished = sum(not (isinstance(v, TaskFailure) and v.reason == "quorum") for v in values)
        assert finished >= quorum_count(knobs["quorum"], elements)
        assert sim.end_s <= max(row.finished for row in rows) + FLUSH_S + 1e-6
    # every attempt is in the report: each time an element entered fn is the row of its
    # attempt, however soon its worker died, except in batches the driver killed or lost with
    # their node: their last elements may have started since their last message
    ran = Counter((index, sim.attempts[batch]) for index, batches in sim.starts.items()
                  for batch in batches)
    heard = Counter((index, sim.attempts[batch]) for index, batches in sim.starts.items()
                    for batch in batches if batch not in sim.blind)
    reported = {(row.task, row.attempt) for row in rows}
    for attempt, times in heard.items():
        assert times == 1 and attempt in reported, attempt
    for row in rows:  # and each row is a run (NaN: a lost lone element, maybe never run)
        assert math.isnan(row.started) and row.outcome != "lost" or ran[row.task, row.attempt]
    assert len({(row.task, row.attempt) for row in rows}) == len(rows)  # attempts are distinct


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs())
def test_random_faults_keep_every_invariant(job):
    elements, cluster, faults, knobs, run_time = job
    sim = simulate(elements, run_time, cluster=cluster, faults=faults, **knobs)
    check_invariants(elements, knobs, sim)


@st.composite
def hung_jobs(draw):
    """Quick elements and a few that hang whenever they run: as many as the slots at most."""
    nodes, slots = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    elements = draw(st.integers(2, 100))
    hangs = draw(st.sets(st.integers(0, elements - 1),
                         max_size=min(nodes * slots, elements - 1)))
    # the rule's one exception: with nothing finished, nothing is a straggler
    assume(not set(range(min(nodes * slots, elements))) <= hangs)
    quick = sorted(set(range(elements)) - hangs)
    slow_once = draw(st.sets(st.sampled_from(quick), max_size=3))  # slow first run only
    return elements, SimCluster(nodes=nodes, slots=slots), hangs, slow_once, draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(hung_jobs())
def test_no_quick_element_starves_behind_hung_ones(job):
    """Every quick element finishes, soon, even when hung elements could hold every slot:
    each holds one a straggle's time, or twice that after a preemption. The one exception:
    while nothing has finished there is no median, so nothing is a straggler."""
    elements, cluster, hangs, slow_once, backups = job
    quick_s = 0.2
    faults = {(element, run): "hang" for element in hangs for run in range(100)}  # always
    faults.update({(element, 0): ("slow", 10.0) for element in slow_once})
    quorum = (elements - len(hangs)) / elements
    sim = simulate(elements, lambda element, run: quick_s, cluster=cluster, faults=faults,
                   quorum=quorum, backups=backups, max_time_s=10_000)
    check_invariants(elements, dict(max_failures=None, deadline_s=None, quorum=quorum), sim)
    assert [sim.values[i] for i in range(elements) if i not in hangs] == [
        i for i in range(elements) if i not in hangs]
    slots = cluster.nodes * cluster.slots
    # a straggle is measured against the median of the finished elements: while few have
    # finished, that may be a slow run's (the first to finish, on one slot)
    median_s = 10 * quick_s if slow_once else quick_s
    straggle_s = max(BACKUP_MIN_S, BACKUP_SLOWDOWN * median_s) + 2 * FLUSH_S
    quick_work_s = (elements - len(hangs)) * (quick_s + FLUSH_S) / max(1, slots - len(hangs))
    slow_s = len(slow_once) * 10 * quick_s  # a slow run may have to finish
    # a hang may be preempted again, after twice as long, before the quick ones are done
    assert sim.end_s <= quick_work_s + (3 * len(hangs) + 1) * straggle_s + slow_s


def test_paper_shaped_job_at_small_scale_loses_nothing():
    """A heavy tail and a node lost mid-job: all values, each attempt reported once."""
    cluster = SimCluster(nodes=20, lost_nodes={3: 5.0})
    sim = simulate(2000, run_times(7, median=1.0, tail_share=0.02), cluster=cluster)
    knobs = dict(max_failures=None, deadline_s=None, quorum=1.0)
    check_invariants(2000, knobs, sim)
    assert sim.values == list(range(2000))
    assert sim.report.preemptions > 0 and any(row.outcome == "system"
                                              for row in sim.report.attempts)


@pytest.mark.parametrize("backups", [True, False])
def test_the_users_quorum_scenario_returns_when_the_quick_elements_are_done(backups):
    """20 elements on 2 slots, elements 4 and 9 hang: quorum 0.9 is the 18 quick ones."""
    faults = {(element, run): "hang" for element in (4, 9) for run in range(3)}
    sim = simulate(20, lambda element, run: 0.01, cluster=SimCluster(nodes=2), faults=faults,
                   quorum=0.9, backups=backups)
    assert [sim.values[i] for i in range(20) if i not in (4, 9)] == [
        i for i in range(20) if i not in (4, 9)]
    assert sim.end_s < 2 * BACKUP_MIN_S + 1  # one straggle each, then the queue moved on
    assert sim.report.preemptions == 2 and sim.report.failed_attempts == 0


def test_a_node_slow_for_everything_gets_no_new_work():
    cluster = SimCluster(nodes=5, slow_nodes={0: 10.0})
    sim = simulate(400, run_times(3, median=1.0), cluster=cluster)
    assert sim.values == list(range(400))
    on_slow = [row for row in sim.report.attempts if row.node == "node-0"]
    assert len(on_slow) < 10  # ~80 of 400 would run there without the rule
    assert sim.report.failed_attempts == 0


def test_avoided_nodes_are_used_again_when_every_batch_left_straggles_while_work_waits():
    """Node 0 is slow and avoided; later element 20 hangs wherever it runs and holds node 1
    while element 30 (parked after a hang of its own) waits: only node 0 can run it."""
    faults = {(20, run): "hang" for run in range(100)}
    faults[(30, 0)] = "hang"
    sim = simulate(60, lambda element, run: 0.2, faults=faults, quorum=59 / 60, backups=False,
                   cluster=SimCluster(nodes=2, slow_nodes={0: 10.0}), max_time_s=1000)
    assert [v for i, v in enumerate(sim.values) if i != 20] == [
        i for i in range(60) if i != 20]
    assert sim.values[20].reason == "quorum"
    on_slow = [(row.task, row.outcome) for row in sim.report.attempts if row.node == "node-0"]
    # its two stragglers made it avoided while node 1 ran the rest; then it ran element 30
    assert len(on_slow) == 3 and (30, "ok") in on_slow


def test_avoided_nodes_are_used_again_when_no_other_node_is_left():
    sim = simulate(60, lambda element, run: 0.2, max_time_s=1000,
                   cluster=SimCluster(nodes=2, slow_nodes={0: 10.0}, lost_nodes={1: 3.0}))
    assert sim.values == list(range(60))
    rows = sim.report.attempts
    assert any(row.node == "node-0" and row.started > 3.0 for row in rows)


def test_a_slow_first_element_sets_the_first_median_and_the_hang_still_yields():
    """Shrunk from the property above: one slot, element 0 slow once, element 1 hangs."""
    faults = {(1, run): "hang" for run in range(3)}
    faults[(0, 0)] = ("slow", 10.0)
    sim = simulate(3, lambda element, run: 0.2, cluster=SimCluster(nodes=1, slots=1),
                   faults=faults, quorum=2 / 3, backups=False, max_time_s=10_000)
    assert [sim.values[0], sim.values[2]] == [0, 2]
    assert sim.end_s <= 2.0 + BACKUP_SLOWDOWN * 2.0 + 2 * FLUSH_S + 2 * 0.2 + 1


@pytest.mark.parametrize("fault", ["exit", ("exit", 0.05)])
def test_a_worker_dying_in_an_element_is_charged_to_it_wherever_it_was(fault):
    """Element 150 of a batch of tiny ones kills its worker, at once or a while in."""
    sim = simulate(300, lambda element, run: 0.001, cluster=SimCluster(nodes=1),
                   faults={(150, 0): fault})
    assert sim.values == list(range(300))
    rows = sim.report.attempts
    assert [(row.attempt, row.outcome) for row in rows if row.task == 150] == [
        (0, "system"), (1, "ok")]
    assert sim.report.failed_attempts == 1 and sim.report.batches_lost == 0
    # what finished since its batch's last message ran again: reported "lost", uncharged
    assert all(row.task < 150 for row in rows if row.outcome == "lost")
    assert all(row.task != 150 or row.attempt == 1 for row in rows if row.outcome == "ok")


def test_a_node_lost_with_its_notes_charges_the_element_last_seen_in_fn():
    sim = simulate(4, lambda element, run: 10.0, cluster=SimCluster(nodes=2, lost_nodes={1: 5.0}),
                   backups=False)
    assert sim.values == list(range(4))
    (lost,) = [row for row in sim.report.attempts if row.outcome == "system"]
    assert "not known" in lost.error and lost.node == "node-1"


def test_a_batch_dead_but_unheard_when_the_job_stops_is_not_counted_as_heard():
    """Found by the property above: element 0's worker dies as it starts, while the loss of
    node 1 ends the job (errors="raise"); the driver cancels batch 0 before it hears of the
    death, so it never reads that note."""
    cluster = SimCluster(nodes=2, slots=1, worker_start_s=0.0, lost_nodes={1: 0.0})
    knobs = {"task_retries": 0, "max_failures": None, "deadline_s": None,
             "task_timeout_s": None, "quorum": 1.0, "backups": False, "errors": "raise"}
    sim = simulate(2, run_times(0), cluster=cluster, faults={(0, 0): "exit"}, **knobs)
    check_invariants(2, knobs, sim)
