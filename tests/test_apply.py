"""apply() semantics on the session's embedded cluster: inputs, order, failures, retries."""

import functools
import os
import traceback
import warnings

import numpy as np
import pandas as pd
import pytest

import gpar

pytestmark = pytest.mark.usefixtures("cluster")


def square(x):
    return x * x


def add(x, y, scale=1):
    return (x + y) * scale


def test_results_are_in_input_order_and_equal_the_serial_loop():
    xs = list(range(5000))
    results = gpar.apply(xs, square, progress=False)
    assert isinstance(results, gpar.Results)
    assert results == [square(x) for x in xs]
    assert results.failures == []


def test_args_and_kwargs_pass_through_like_lapply():
    assert gpar.apply([1, 2, 3], add, 10, scale=2, progress=False) == [22, 24, 26]


@pytest.mark.parametrize(
    "xs",
    [
        (x for x in range(7)),
        np.arange(7),
        pd.Series(range(7), index=list("abcdefg")),
        range(7),
        tuple(range(7)),
    ],
    ids=["generator", "numpy", "pandas-series", "range", "tuple"],
)
def test_any_iterable_is_iterated_like_a_for_loop(xs):
    expected = [square(x) for x in list(xs)] if not hasattr(xs, "__next__") else None
    results = gpar.apply(xs, square, progress=False)
    assert results == (expected or [x * x for x in range(7)])


def test_empty_input_returns_an_empty_result_without_running():
    results = gpar.apply([], square)
    assert results == [] and results.report.elements == 0
    # nor connecting: no cluster answers at this address, and none is asked
    assert gpar.apply(iter([]), square, address="127.0.0.1:1") == []


def test_not_callable_fn_is_a_type_error_before_launch():
    with pytest.raises(TypeError, match="fn must be callable"):
        gpar.apply([1, 2], [1, 2])


def test_the_input_iterators_own_error_reaches_the_caller_unchanged():
    def records():
        yield 1
        raise TypeError("bad record 2")

    with pytest.raises(TypeError, match="bad record 2") as raised:
        gpar.apply(records(), square, progress=False)
    assert "records" in "".join(traceback.format_tb(raised.value.__traceback__))


def test_not_iterable_xs_is_a_type_error():
    with pytest.raises(TypeError, match="xs must be iterable"):
        gpar.apply(5, square)


@pytest.mark.parametrize(("options", "accepted"), [
    ({"max_workers": 0}, "max_workers must be a positive int or None, got 0"),
    ({"task_retries": -1}, "task_retries must be an int >= 0, got -1"),
    ({"env": "all"}, "env must be 'full' or 'referenced', got 'all'"),
    ({"errors": "ignore"}, "errors must be 'warn' or 'raise', got 'ignore'"),
    ({"packages": "everything"}, "packages must be \"auto\", \"none\" or a list of distribution"),
    ({"packages": None}, "packages must be .* got None"),
    ({"packages": ["numpy", 3]}, r"packages must be .* got \['numpy', 3\]"),
    ({"retry_on": "ValueError"}, r"retry_on takes exception classes, e.g. retry_on=\(TimeoutE"),
    ({"retry_on": [ValueError, "OSError"]}, "retry_on takes exception classes.* got 'OSError'"),
    ({"deadline": -1}, r"deadline must be seconds from now \(> 0\) or a datetime, got -1"),
    ({"deadline": "soon"}, "deadline must be .* got 'soon'"),
    ({"task_timeout": 0}, r"task_timeout must be seconds \(> 0\) or None, got 0"),
    ({"quorum": 0}, r"quorum must be a fraction in \(0, 1\], got 0"),
    ({"quorum": 1.5}, "quorum must be .* got 1.5"),
    ({"max_failures": -1}, "max_failures must be an int >= 0 or None, got -1"),
    ({"backups": "no"}, "backups takes True or False, got 'no'"),
    ({"progress": "no"}, "progress takes True or False, got 'no'"),
    ({"output": 123}, "output takes a directory path or an s3:// URI .* got int 123"),
    ({"cluster_by": "x"}, "cluster_by only applies with output="),
    ({"overwrite": True}, "overwrite=True only applies with output="),
])
def test_bad_options_say_what_is_accepted_and_leave_a_generator_unread(options, accepted):
    xs = (x for x in [1, 2])
    with pytest.raises((ValueError, TypeError), match=accepted):
        gpar.apply(xs, square, **options)
    assert list(xs) == [1, 2]  # the call with the option mended still has every element


def test_retry_on_takes_a_list_of_exception_classes_as_a_tuple():
    results = gpar.apply([1, 2], square, retry_on=[ValueError, OSError], progress=False)
    assert results == [1, 4]


def test_a_yes_or_no_option_takes_only_a_bool(tmp_path):
    with pytest.raises(TypeError, match="overwrite takes True or False, got 'no'"):
        gpar.apply([1], square, output=tmp_path / "out", overwrite="no")


def test_numpy_numbers_are_accepted_as_options():
    results = gpar.apply([1, 2], square, max_workers=np.int64(2), task_retries=np.int32(1),
                         task_timeout=np.float64(60), quorum=np.float64(1.0), progress=False)
    assert results == [1, 4]


def scaled(x, factor=1):
    return x * factor


def retried(x, retries, scale):
    return x * retries * scale


def with_factor_three(f):
    @functools.wraps(f)
    def wrapper(x):
        return f(x, factor=3)
    return wrapper


@with_factor_three
def decorated(x, factor):
    return x * factor


def test_a_misspelt_option_is_named_before_anything_runs():
    with pytest.raises(TypeError, match="did you mean apply's option max_workers="):
        gpar.apply([1, 2], scaled, max_worker=2)
    with pytest.raises(TypeError, match="argument: 'scale'; apply passes each element first"):
        gpar.apply([1, 2], retried, retries=3)  # fn's own retries= is no misspelt option
    assert gpar.apply([1, 2], decorated, progress=False) == [3, 6]  # the wrapper's signature
    with pytest.raises(TypeError, match="fn cannot be called as fn\\(x, \\*args"):
        gpar.apply([1, 2], scaled, 3, 4)
    assert gpar.apply([1, 2], scaled, factor=3, progress=False) == [3, 6]


def test_a_set_is_refused_with_output_since_its_order_is_not_repeatable(tmp_path):
    with pytest.raises(TypeError, match="pass sorted\\(xs\\)"):
        gpar.apply({"apple", "pear"}, len, output=tmp_path / "out")


def fails_on_odd(x):
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x


def test_failures_fill_their_slot_and_warn_once_each_with_index_and_message():
    with pytest.warns(gpar.TaskFailedWarning) as caught:
        results = gpar.apply(range(6), fails_on_odd, progress=False)
    assert results[0::2] == [0, 2, 4]
    failures = results.failures
    assert [f.index for f in failures] == [1, 3, 5]
    first = failures[0]
    assert (first.exc_type, first.message, first.attempts, first.reason) == (
        "ValueError", "odd input 1", 1, "error")
    assert "fails_on_odd" in first.traceback and "raise ValueError" in first.traceback
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert "task 1 failed" in messages[0] and "ValueError: odd input 1" in messages[0]


def always_fails(x):
    raise KeyError(x)


def test_all_failed_raises_an_exception_group_of_task_errors():
    with pytest.raises(gpar.AllTasksFailed) as caught:
        gpar.apply(range(3), always_fails, progress=False)
    group = caught.value
    assert isinstance(group, ExceptionGroup) and isinstance(group, gpar.GparError)
    assert [e.failure.index for e in group.exceptions] == [0, 1, 2]
    assert all(isinstance(e, gpar.TaskError) for e in group.exceptions)
    assert len(group.results.failures) == 3
    matched, rest = group.split(gpar.TaskError)
    assert len(matched.exceptions) == 3 and rest is None


def test_errors_raise_raises_the_first_final_failure_with_remote_traceback():
    with pytest.raises(gpar.TaskError, match="odd input 1") as caught:
        gpar.apply(range(2), fails_on_odd, errors="raise", progress=False)
    assert "raise ValueError" in str(caught.value.__cause__)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


def returns_unpicklable(x):
    return Unpicklable() if x == 1 else x


def test_unpicklable_result_is_a_failure_of_that_element_only():
    with pytest.warns(gpar.TaskFailedWarning, match="cannot be pickled"):
        results = gpar.apply(range(3), returns_unpicklable, task_retries=1, progress=False)
    assert results[0] == 0 and results[2] == 2
    failure = results[1]
    assert failure.reason == "system" and failure.attempts == 2
    assert "refuses to be pickled" in failure.message


DRIVER_PID = os.getpid()


def refuse_on_the_driver(value):
    if os.getpid() == DRIVER_PID:
        raise ImportError("this class exists only on the workers")
    return value


class WorkerOnly:
    """Unpickles on a worker, fails to unpickle on the driver (a class the driver lacks)."""

    def __reduce__(self):
        return refuse_on_the_driver, (1,)


def returns_worker_only(x):
    return WorkerOnly() if x == 0 else x


def test_result_the_driver_cannot_unpickle_is_a_failure_saying_so():
    with pytest.warns(gpar.TaskFailedWarning, match="could not be unpickled on the driver"):
        results = gpar.apply([0, 5], returns_worker_only, max_workers=2, progress=False)
    assert results[1] == 5
    assert results[0].exc_type == "ImportError" and results[0].reason == "system"


def worker_only_at(x, at):
    return WorkerOnly() if x == at else x


def test_a_result_the_driver_cannot_unpickle_fails_alone_in_its_batch():
    with pytest.warns(gpar.TaskFailedWarning, match="could not be unpickled on the driver"):
        results = gpar.apply(range(3000), worker_only_at, 1500, progress=False)
    assert results[:1500] == list(range(1500)) and results[1501:] == list(range(1501, 3000))
    assert results[1500].exc_type == "ImportError" and len(results.failures) == 1


def echo(x):
    return x


def test_an_element_that_cannot_be_pickled_fails_alone_naming_its_type():
    xs = list(range(3000))  # batched: the element shares its batch with many others
    xs[1500] = Unpicklable()
    with pytest.warns(gpar.TaskFailedWarning, match="task 1500 failed"):
        results = gpar.apply(xs, echo, progress=False)
    assert results[:1500] == xs[:1500] and results[1501:] == xs[1501:]
    failure = results[1500]
    assert (failure.reason, failure.attempts, failure.exc_type) == ("error", 1, "TypeError")
    assert "Unpicklable" in failure.message and "refuses to be pickled" in failure.message
    with pytest.warns(gpar.TaskFailedWarning, match="cannot be pickled"):
        assert gpar.apply([1, Unpicklable()], echo, progress=False)[0] == 1  # a batch each


def refuse_on_workers(value):
    import ray

    if ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        raise ValueError("this value cannot be rebuilt on a worker")
    return value


class DriverOnly:
    """Pickles on the driver, fails to unpickle on a worker (a class the workers lack)."""

    def __reduce__(self):
        return refuse_on_workers, (1,)


def test_an_element_that_cannot_be_unpickled_on_a_worker_fails_alone():
    xs = [(x, "row") for x in range(3000)]
    xs[1500] = DriverOnly()
    with pytest.warns(gpar.TaskFailedWarning, match="could not be unpickled on the worker"):
        results = gpar.apply(xs, echo, progress=False)
    assert results[:1500] == xs[:1500] and results[1501:] == xs[1501:]
    failure = results[1500]
    assert (failure.reason, failure.attempts) == ("error", 1)
    assert "cannot be rebuilt on a worker" in failure.message


def window(i, table):
    return table[i:i + 3]


def unchanged(i, table):
    return table


def test_arrays_come_back_writable_like_from_a_for_loop():
    table = np.arange(1000.0)  # an argument: fn receives it read-only
    view, whole = gpar.apply([0], window, table, progress=False)[0], \
        gpar.apply([0], unchanged, table, progress=False)[0]
    view[0] = whole[0] = -1.0  # raises if read-only
    assert view.flags.writeable and whole.flags.writeable and table[0] == 0.0


def as_stored(x, dtype):
    return (np.arange(3) + x).astype(dtype)


@pytest.mark.parametrize("dtype", [">f8", "<f8", ">i4", [("when", ">i8"), ("level", "<f4")]])
def test_an_array_comes_back_in_its_byte_order_with_its_values(dtype):
    """A big-endian array (read from a file written elsewhere) is not made native on its way
    back: for x in xs would keep it, and so does joblib."""
    values = gpar.apply(range(2), as_stored, dtype, progress=False)
    for x, value in enumerate(values):
        assert value.dtype == np.dtype(dtype) and value.flags.writeable
        assert value.tolist() == as_stored(x, dtype).tolist()


class LoadedError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = __import__("threading").Lock()


def raises_with_unpicklable_attribute(x):
    raise LoadedError(f"carries a lock {x}")


def test_exception_with_unpicklable_attribute_still_reports_message_and_traceback():
    with pytest.raises(gpar.AllTasksFailed) as caught:
        gpar.apply([7], raises_with_unpicklable_attribute, progress=False)
    failure = caught.value.exceptions[0].failure
    assert failure.exc_type.endswith("LoadedError")
    assert failure.message == "carries a lock 7"
    assert "raises_with_unpicklable_attribute" in failure.traceback


def flaky(x, marker_dir):
    marker = os.path.join(marker_dir, str(x))
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError(f"transient {x}")
    return x


def test_exceptions_in_retry_on_are_retried_others_are_final(once_dir):
    results = gpar.apply(range(4), flaky, str(once_dir), retry_on=ConnectionError,
                         progress=False)
    assert results == [0, 1, 2, 3]
    attempts = results.report.attempts
    assert sorted((a.task, a.attempt, a.outcome) for a in attempts) == sorted(
        [(t, 0, "error") for t in range(4)] + [(t, 1, "ok") for t in range(4)])


def test_exceptions_not_in_retry_on_fail_at_once(once_dir):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(gpar.AllTasksFailed):
            gpar.apply(range(2), flaky, str(once_dir), progress=False)


def exits_on_first_attempt(x, marker_dir):
    marker = os.path.join(marker_dir, f"exit-{x}")
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x


def test_a_worker_that_dies_is_retried_and_both_attempts_are_reported(once_dir):
    results = gpar.apply(range(4), exits_on_first_attempt, str(once_dir), max_workers=4,
                         progress=False)  # one element per task: the crash is charged to 3
    assert results == list(range(4))
    rows = [(a.attempt, a.outcome) for a in results.report.attempts if a.task == 3]
    assert rows == [(0, "system"), (1, "ok")]


def test_a_crash_inside_a_large_batch_loses_and_repeats_nothing(once_dir):
    xs = range(3000)  # batched: the crash kills a batch holding many elements
    results = gpar.apply(xs, exits_on_first_attempt, str(once_dir), progress=False)
    assert results == list(xs)
    ok = [a.task for a in results.report.attempts if a.outcome == "ok"]
    # no element here is slow, so none may be handed off and run twice (a restart's import
    # time once looked like a straggling first element)
    assert sorted(ok) == list(xs)
    rows = [(a.attempt, a.outcome) for a in results.report.attempts if a.task == 3]
    assert rows == [(0, "system"), (1, "ok")]  # its worker's note named it
    assert results.report.batches_lost == 0


def test_report_has_one_attempt_row_per_element_with_times():
    results = gpar.apply(range(10), square, progress=False)
    frame = results.report.to_pandas()
    assert list(frame.task) == list(range(10))
    assert (frame.submitted <= frame.started).all() and (frame.started <= frame.finished).all()
    assert set(frame.outcome) == {"ok"} and frame.node.str.len().min() > 0
    assert results.report.max_workers == 2  # the session cluster's CPUs, the default cap
    assert gpar.apply([1], square, max_workers=1, progress=False).report.max_workers == 1


def test_progress_bar_draws_when_asked(capsys):
    gpar.apply(range(20), square, progress=True)
    assert "20/20" in capsys.readouterr().err


def test_progress_false_is_silent(capsys):
    gpar.apply(range(20), square, progress=False)
    assert capsys.readouterr().err == ""



def test_each_batch_has_its_startup_time_when_one_worker_ran_two_sent_together():
    """Two batches launched in the same turn of the loop may run one after the other in one
    worker process: the same submission time and pid, still two startups."""
    from gpar.report import AttemptBlock, JobReport

    report = JobReport(elements=2)
    for batch in (0, 1):
        report.add_block(AttemptBlock(batch, batch, 0, False, "node", 4242, 100.0,
                                      100.5 + batch, [101.0 + batch], {}))
    assert sorted(report.startup_times()) == [0.5, 1.5]
    assert report.table1().loc["startup", "n"] == 2


def test_the_report_reads_the_policys_counts_and_a_snapshot_keeps_those_of_its_moment():
    """The policy counts into counts of its own, which the job's report reads; the copy a
    running job hands out (Job.report) no longer changes."""
    from gpar.policy import Policy, Rules
    from gpar.report import JobReport
    from gpar.split import BatchSizer

    policy = Policy(4, Rules(max_workers=2), BatchSizer(2))
    report = JobReport(4, counts=policy.counts)
    policy.launches(2)
    taken = report.snapshot()
    policy.launches(4)
    assert (taken.batches, report.batches) == (2, 4)
    assert report.counts is policy.counts and not isinstance(report, type(policy.counts))


def test_report_table1_and_cdf_plot(tmp_path):
    results = gpar.apply(range(30), square, max_workers=2, progress=False)
    table = results.report.table1()
    assert list(table.index) == ["startup", "run"]
    assert table.loc["run", "n"] == 30 and table.loc["startup", "n"] == results.report.batches
    frame = results.report.to_pandas()
    assert table.loc["run", "mean_s"] == pytest.approx((frame.finished - frame.started).mean())
    # a batch's startup runs from its submission to its first element's start: one row's
    startups = sorted(results.report.startup_times())
    row_waits = set(frame.started - frame.submitted)
    assert len(startups) == results.report.batches and set(startups) <= row_waits
    assert table.loc["startup", "mean_s"] == pytest.approx(sum(startups) / len(startups))
    path = tmp_path / "cdf.png"
    results.report.plot_cdf(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cdf_plot_leaves_matplotlibs_backend_and_warns_of_nothing_when_empty(monkeypatch):
    """A running job's page draws Figure 8 in a thread of a notebook's kernel, from no attempt
    at first: the notebook's own plots must stay inline, and no warning reach its cells."""
    import io
    import warnings

    import matplotlib

    monkeypatch.setattr(matplotlib, "use", lambda *_, **__: pytest.fail("backend switched"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = io.BytesIO()
        gpar.JobReport(elements=0).plot_cdf(svg, format="svg")
    assert svg.getvalue().lstrip().startswith(b"<?xml")


SAMPLE = np.arange(100.0)
SHARED_RNG = np.random.default_rng(0)


def bootstrap_mean_from_shared_rng(replicate):
    return float(SHARED_RNG.choice(SAMPLE, size=SAMPLE.size).mean())


def bootstrap_mean_seeded_per_replicate(replicate):
    rng = np.random.default_rng([0, replicate])
    return float(rng.choice(SAMPLE, size=SAMPLE.size).mean())


class Simulation:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)  # an attribute, not the global rng below

    def mean(self):
        return float(self.rng.choice(SAMPLE, size=SAMPLE.size).mean())


rng = np.random.default_rng(0)  # the caller's: draws xs, never reached by fn


def simulated_mean(replicate):
    return Simulation([0, replicate]).mean()


def test_a_random_generator_of_the_callers_is_warned_about_since_batches_repeat_its_draws():
    with pytest.warns(gpar.SharedRandomStateWarning, match="global 'SHARED_RNG'.*default_rng"):
        means = gpar.apply(range(40), bootstrap_mean_from_shared_rng, progress=False)
    assert len(set(means)) < 40  # the trap is real: two batches drew the same replicates
    with warnings.catch_warnings():
        warnings.simplefilter("error", gpar.SharedRandomStateWarning)
        means = gpar.apply(range(40), bootstrap_mean_seeded_per_replicate, progress=False)
        assert len(set(means)) == 40
        assert len(set(gpar.apply(rng.permutation(40), simulated_mean, progress=False))) == 40
