"""apply() and submit(): ``[fn(x) for x in xs]`` on a Ray cluster, with the caller's environment;
submit returns the running Job (job.py), and apply is submit(...).result()."""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gpar import cluster, environment, raybackend
from gpar import options as gpar_options
from gpar import output as gpar_output
from gpar.errors import (
    AllTasksFailed,
    DeadlineExceeded,
    EnvironmentMismatch,
    FailureBudgetExceeded,
    IncompleteResultsWarning,
    RemoteTraceback,
    SharedRandomStateWarning,
    TaskError,
    TaskFailedWarning,
    as_gpar_errors,
    describe_failure,
)
from gpar.feed import Feed
from gpar.job import Control, Job, JobStream
from gpar.options import EnvMode, ErrorsMode
from gpar.outcomes import CUT_OFF, FAILED
from gpar.policy import JobEnd, Policy, Rules, default_max_failures
from gpar.progress import shown_by_default
from gpar.report import JobReport
from gpar.results import Results, TaskFailure
from gpar.split import BatchSizer

if TYPE_CHECKING:
    from envpack.stage import StagedImage
    from reduce_sql import Dataset

#: imap's default bounds on results held unread, whichever comes first; both cap batch sizes.
#: Found with bench/bench_imap.py: a count of 1,000 made 100,000 trivial items take 10-20
#: times apply's time; 10,000 results of 100 KB peaked at 720-770 MB held by a bound of
#: 256 MiB, 190 MB at 64 MiB, 85 MB at 16 MiB, which was also the fastest (2.1 s, 5.0 s at
#: 64 MiB, 6.4 s at 256 MiB: large batches' messages pipeline worse).
MAX_UNREAD = 100_000
MAX_UNREAD_BYTES = 16 * 2**20


def apply(
    xs: Iterable[Any],
    fn: Callable[..., Any],
    *args: Any,
    max_workers: int | None = None,
    task_retries: int = 3,
    max_failures: int | None = None,
    deadline: float | datetime.datetime | None = None,
    task_timeout: float | None = None,
    quorum: float = 1.0,
    backups: bool = True,
    retry_on: type[BaseException] | Sequence[type[BaseException]] = (),
    env: EnvMode = "full",
    packages: str | Sequence[str] = "auto",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    cluster_by: str | Sequence[str] | None = None,
    errors: ErrorsMode = "warn",
    progress: bool | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> Results | Dataset:
    """Return ``[fn(x, *args, **kwargs) for x in xs]``, computed in parallel on Ray.

    fn sees the caller's globals as they were at the call (env="full"; "referenced" ships only
    what fn's code names). Large arrays among them arrive read-only. A failed element's slot
    holds a TaskFailure and a TaskFailedWarning is issued (errors="warn"), or the first failure
    raises TaskError (errors="raise"); if every element fails, AllTasksFailed is raised.
    An exception from fn is final unless its type is in ``retry_on``; a worker that dies is
    retried; each element may fail ``task_retries`` times before it counts as failed.

    The job stops early, cancelling what runs, when more than ``max_failures`` attempts failed
    (FailureBudgetExceeded), at ``deadline`` or once a ``quorum`` share of elements finished
    (unfinished slots hold TaskFailure(reason="deadline"/"quorum"), with a warning).
    ``task_timeout`` bounds one attempt of one element; ``backups`` re-run stragglers.

    With ``output`` (a directory or s3:// URI), fn returns a table per element; workers write it
    as Parquet, exactly one attempt per element is committed, and a reduce_sql.Dataset is
    returned. Re-running the same job resumes it; another job's output is refused unless
    ``overwrite``, and so is an output another driver is writing. ``cluster_by`` names columns
    each file is sorted by, so queries filtering on them skip most of the data. See README.md
    for each rule.
    """
    options = _checked_options(locals())
    return _start(xs, fn, args, kwargs, options, sys._getframe(1).f_globals)._result(None)


def submit(xs: Iterable[Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
    """Start ``apply(xs, fn, *args, **kwargs)`` and return at once: its Job, which runs in a
    thread of this process. ``job.result()`` returns what apply would, and raises or warns
    as apply would, in the thread that waits."""
    arguments = _bound_arguments(xs, fn, args, kwargs)
    return _start(xs, fn, arguments["args"], arguments["kwargs"], _checked_options(arguments),
                  sys._getframe(1).f_globals)


def imap(xs: Iterable[Any], fn: Callable[..., Any], *args: Any, ordered: bool = True,
         max_unread: int = MAX_UNREAD, max_unread_bytes: int = MAX_UNREAD_BYTES,
         **kwargs: Any) -> JobStream:
    """Iterate over ``apply(xs, fn, *args, **kwargs)``'s results while the job runs: in input
    order (``ordered``), or as ``(index, value)`` in the order they finish. An iterator ``xs``
    is read as the job goes, a bounded window ahead of the slots, so it may be endless.
    Results not yet read are held up to ``max_unread`` of them and about
    ``max_unread_bytes``; past that, nothing more is launched until the loop reads on. gpar
    keeps no value once it was yielded. Breaking out of the loop, closing the iterator or
    dropping it cancels the job; at its end it raises or warns as apply would.
    """
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered takes True or False, got {ordered!r}")
    for name, bound in (("max_unread", max_unread), ("max_unread_bytes", max_unread_bytes)):
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            raise ValueError(f"{name} must be a positive int, got {bound!r}")
    arguments = _bound_arguments(xs, fn, args, kwargs)
    options = _checked_options(arguments)
    if options.output is not None:
        raise ValueError("imap does not write outputs: its values are yours once read. Use "
                         "gpar.submit(xs, fn, output=...) and query the Dataset it returns")
    job = _start(xs, fn, arguments["args"], arguments["kwargs"], options,
                 sys._getframe(1).f_globals,
                 stream=Control(max_unread=max_unread, max_unread_bytes=max_unread_bytes))
    return JobStream(job, ordered)


def _bound_arguments(xs: Any, fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """apply's arguments, bound and with its defaults filled in (a TypeError as apply's)."""
    bound = _APPLY.bind(xs, fn, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _checked_options(arguments: dict[str, Any]) -> gpar_options.Options:
    """apply's options among its ``arguments``, checked."""
    return gpar_options.checked(arguments["fn"], time.time(),
                                **{name: arguments[name] for name in OPTION_NAMES})


class _Ended(NamedTuple):
    """What a job's thread hands back: its results, how the policy ended it (None: nothing
    ran), and the output it wrote (None without output=)."""

    results: Results
    end: JobEnd | None
    output: gpar_output.OutputJob | gpar_output.Target | None


def _start(xs: Iterable[Any], fn: Callable[..., Any], args: tuple, kwargs: dict,
           options: gpar_options.Options, caller_globals: dict[str, Any],
           stream: Control | None = None) -> Job:
    """Capture the call in the caller's thread, then run it in the Job's. ``stream``: imap's
    bounds on what it holds unread; with it an iterator is read as the job goes, by the
    thread that iterates (feed.py)."""
    gpar_options.check_call(fn, args, kwargs, options=OPTION_NAMES)
    if stream is not None and not _is_sequence(xs):
        _refuse_for_an_open_input(xs, options)
        items: Sequence[Any] | Feed = Feed(xs, budget_given=options.max_failures is not None)
    else:
        items = _materialize(xs, ordered=options.output is not None)  # once options hold
    captured = environment.capture(fn, args, kwargs, caller_globals, mode=options.env,
                                   retry_on=options.retry_on)
    _warn_of_shared_random_states(fn, args, kwargs)
    if not isinstance(items, Feed) and len(items) == 0 and options.output is None:
        # nothing to run, nothing to write
        return Job(0, lambda control: _Ended(Results([], JobReport(elements=0)), None, None),
                   _finished, stream)
    target = _target(options, items, fn, args, kwargs)
    if target is not None and target.whole:  # no cluster needed: nothing to run or commit
        return Job(0, lambda control: _Ended(Results([], JobReport(elements=0)), None, target),
                   _finished)
    tasks = cluster.connect(options.address)  # here: an embedded Ray starts in this thread
    try:  # here too: what envpack warns of points at the caller's line
        image = _staged_image(tasks, options.packages, code=(fn, *args, *kwargs.values()))
        slots = options.max_workers or int(tasks.cpus())
        if isinstance(items, Feed):  # its first window, in this thread as the rest will be
            items.start(slots)
            stream.feed = items
    except BaseException:
        tasks.close()
        raise

    def work(control: Control) -> _Ended:
        with contextlib.closing(tasks):  # a local cluster's connection, held while it runs
            return _run(items, captured, options, target, tasks, image, slots, control)

    control = Control() if stream is None else stream
    control.tasks = tasks  # told where the job's page is, once it has one
    return Job(len(items), work, _finished, control)


def _run(items: Sequence[Any] | Feed, captured: environment.CapturedEnvironment,
         options: gpar_options.Options, target: gpar_output.Target | None, tasks: Any,
         image: StagedImage, slots: int, control: Control) -> _Ended:
    """The job itself, in its thread: claim the output, run, commit."""
    feed = items if isinstance(items, Feed) else None
    # Claimed only now: a job that cannot start leaves the output as it was.
    with _claimed(target, options) as claim:
        pending = (feed.items if feed is not None else items if claim is None
                   else [items[i] for i in claim.pending])
        run_all = functools.partial(raybackend.run_all, image, tasks)
        if feed is None and len(pending) == 0:  # an empty xs, or a run that committed every
            # element but did not end (its commit may merge files on the cluster, and cleans up)
            return _Ended(_committed(Results([], JobReport(elements=0)), claim, run_all), None,
                          claim)
        policy = Policy(len(pending), _rules(options, slots, len(items)), BatchSizer(slots),
                        input_ended=feed is None or feed.ended)
        report = JobReport(len(pending), counts=policy.counts,
                           environment_bytes=captured.nbytes, max_workers=slots,
                           skipped_globals=captured.skipped, image=image.report)
        with control.lock:
            control.policy, control.report = policy, report
            control.numbers = None if claim is None else claim.pending
        values = raybackend.run_job(
            pending, captured, policy, report=report, image=image, tasks=tasks, output=claim,
            progress=shown_by_default() if options.progress is None else options.progress,
            control=control, feed=feed)
        results = Results(values, report)
        if claim is not None:
            results = _committed(results, claim, run_all)
        return _Ended(results, policy.end(), claim)


def _finished(ended: _Ended) -> Results | Dataset:
    """What apply returns for a job that ended, raising or warning as README promises; in the
    thread that waits for it (warnings point at its caller's caller: see Job._result)."""
    if ended.end is not None:
        # without output=, the policy knows the failures: no scan of every value (with it,
        # the results are placed in xs' order, and the commit may fail some)
        every = ended.results.failures if ended.output is not None else ended.end.failures
        _raise_or_warn(ended.results, every, ended.end)
    return _answer(ended.results, ended.output)


#: apply's own keyword options: a misspelt one lands in fn's kwargs, and is named.
_APPLY = inspect.signature(apply)
OPTION_NAMES = [name for name, parameter in _APPLY.parameters.items()
                if parameter.kind is parameter.KEYWORD_ONLY]
submit.__signature__ = _APPLY.replace(return_annotation="Job")  # type: ignore[attr-defined]


def _rules(options: gpar_options.Options, slots: int, elements: int) -> Rules:
    """The policy's rules. The default failure budget scales with len(xs), ``elements``, not
    with the elements this run has left: a re-run resuming an output that meets the same
    failures again is judged as the first run was."""
    return Rules(max_workers=slots, task_retries=options.task_retries,
                 max_failures=(default_max_failures(elements) if options.max_failures is None
                               else options.max_failures),
                 deadline_at=options.deadline_at, task_timeout_s=options.task_timeout_s,
                 quorum=options.quorum, backups=options.backups, errors=options.errors)


def _warn_of_shared_random_states(fn: Callable, args: tuple, kwargs: dict) -> None:
    for source in environment.random_states(fn, args, kwargs):
        warnings.warn(SharedRandomStateWarning(
            f"fn draws from the random generator {source}: every batch of elements gets a "
            "copy of it in the state it had at this call, so batches draw the same numbers. "
            "Make one per element inside fn from a seed and the element, e.g. "
            "rng = np.random.default_rng([SEED, x])"), stacklevel=4)


def _target(options: gpar_options.Options, items: Sequence[Any], fn: Callable, args: tuple,
            kwargs: dict) -> gpar_output.Target | None:
    """Where the job writes and which job it is; None without output=."""
    if options.output is None:
        return None
    with as_gpar_errors():
        return gpar_output.target(options.output, items, fn, args, kwargs, options.overwrite)


def _claimed(target: gpar_output.Target | None, options: gpar_options.Options,
             ) -> contextlib.AbstractContextManager[gpar_output.OutputJob | None]:
    """The output claimed for this job while it runs (which elements are left to run, where
    they write); nothing without output=."""
    if target is None:
        return contextlib.nullcontext()
    with as_gpar_errors():
        return gpar_output.begin(target, options.overwrite, options.cluster_by)


def _staged_image(tasks: Any, packages: str | Sequence[str],
                  code: tuple[Any, ...]) -> StagedImage:
    """Ship what the cluster's workers lack of the caller's packages (envpack.stage), with
    what ``code`` (fn and its arguments) will import when it runs."""
    from envpack import stage

    with as_gpar_errors():
        return stage.prepare(packages, always=environment.RUNTIME_MODULES, code=code, cluster=tasks)


def _committed(results: Results, claim: gpar_output.OutputJob,
               run_all: Callable[[Callable[[Any], Any], list[Any]], list[Any]]) -> Results:
    """The results in input order, once what was accepted is committed: before the job's end
    is judged, so what finished is kept even when apply then raises. The commit also removes
    what abandoned attempts left, so it runs when nothing was left to run too."""
    results = claim.in_input_order(results)
    with as_gpar_errors():
        claim.commit(results, run_all)
    return results


def _answer(results: Results,
            output: gpar_output.OutputJob | gpar_output.Target | None) -> Results | Dataset:
    """What apply returns: the results, or with output= the committed Dataset."""
    if output is None:
        return results
    from gpar.outputdataset import OutputDataset

    return OutputDataset(output.location, results.report, results.failures)


def _raise_if_mismatched(results: Results, every: list[TaskFailure],
                         failures: list[TaskFailure]) -> None:
    """No element ran because the workers' environment differs: raise the workers'
    EnvironmentMismatch itself, as the one thing to fix, rather than AllTasksFailed. Its
    traceback does not cross the pickle: the worker's text is its ``__cause__``, as a
    TaskError's is."""
    if (len(every) == len(results) and failures
            and all(isinstance(failure.exception, EnvironmentMismatch) for failure in failures)):
        first = failures[0]
        raise first.exception from RemoteTraceback(first.traceback) if first.traceback else None


def _raise_or_warn(results: Results, every: list[TaskFailure], end: JobEnd) -> None:
    """Turn how the job ended, ``every`` TaskFailure in ``results`` in input order, into the
    exception or warnings that README's "What apply guarantees" promises."""
    failures = [f for f in every if f.reason in FAILED]
    _raise_if_mismatched(results, every, failures)
    unfinished = len(every) - len(failures)
    if end.stop == "raise":
        raise TaskError(end.first_failure)
    if end.stop == "budget":
        raise FailureBudgetExceeded(
            f"{end.failed_attempts} attempts failed, more than max_failures="
            f"{end.max_failures}; the job was cancelled, finished results are in "
            ".partial. The first failure: "
            f"{describe_failure(end.first_failure) if end.first_failure else 'none final'}",
            results)
    if end.stop == "deadline" and unfinished == len(results):
        raise DeadlineExceeded(
            f"the deadline passed before any of the {len(results)} tasks finished", results)
    if failures and len(failures) == len(results):
        raise AllTasksFailed(
            f"all {len(results)} tasks failed; the first: {describe_failure(failures[0])}",
            [TaskError(failure) for failure in failures],
            results,
        )
    for failure in failures:
        warnings.warn(describe_failure(failure), TaskFailedWarning, stacklevel=5)
    if unfinished:
        warnings.warn(
            f"{_ENDED_BY.get(end.stop, end.stop)} ended it with {unfinished} of "
            f"{len(results)} tasks "
            f"unfinished; their slots hold TaskFailure(reason={CUT_OFF[end.stop]!r})",
            IncompleteResultsWarning, stacklevel=5)


#: What stopped a job that ended with unfinished elements and no exception, in a warning.
_ENDED_BY = {"deadline": "the job's deadline", "quorum": "the job's quorum",
             "cancelled": "cancelling the job"}


def _is_sequence(xs: Any) -> bool:
    """xs can be sliced as it is: nothing is gained by reading it as the job goes."""
    return isinstance(xs, list | tuple | range) or (
        type(xs).__module__ == "numpy" and type(xs).__name__ == "ndarray" and xs.ndim > 0)


def _refuse_for_an_open_input(xs: Any, options: gpar_options.Options) -> None:
    """The rules that need the number of elements, for an input read as the job goes."""
    try:
        iter(xs)
    except TypeError:
        raise TypeError(f"xs must be iterable (a list, range, array, generator ...), got "
                        f"{type(xs).__qualname__}") from None
    if options.quorum < 1.0:
        raise ValueError("quorum needs the number of elements, and an iterator has none until "
                         "it ends: pass a list, or leave quorum at 1")


def _materialize(xs: Iterable[Any], ordered: bool) -> Sequence[Any]:
    """xs as a sliceable sequence, iterated exactly as ``for x in xs`` would; ``ordered``
    (output=): in an order a re-run repeats."""
    if ordered and isinstance(xs, set | frozenset):
        raise TypeError("with output=, xs needs an order a re-run repeats, and a set's order "
                        "changes from one process to the next: pass sorted(xs)")
    if _is_sequence(xs):
        return xs
    try:
        iterator = iter(xs)
    except TypeError:
        raise TypeError(
            f"xs must be iterable (a list, range, array, generator ...), got "
            f"{type(xs).__qualname__}"
        ) from None
    return list(iterator)  # what the iteration itself raises is the caller's to see
