"""apply(): ``[fn(x) for x in xs]`` on a Ray cluster, with the caller's environment."""

from __future__ import annotations

import contextlib
import datetime
import difflib
import functools
import inspect
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gpar import cluster, environment, scheduler
from gpar import output as gpar_output
from gpar.errors import (
    AllTasksFailed,
    DeadlineExceeded,
    FailureBudgetExceeded,
    IncompleteResultsWarning,
    SharedRandomStateWarning,
    TaskError,
    TaskFailedWarning,
    as_gpar_errors,
    describe_failure,
)
from gpar.policy import Policy, Rules, default_max_failures
from gpar.progress import shown_by_default
from gpar.report import JobReport
from gpar.results import Results
from gpar.split import BatchSizer

if TYPE_CHECKING:
    from envpack.stage import StagedImage
    from reduce_sql import Dataset

#: Import names a worker needs before it can verify anything (reduce_sql: output='s Sink):
#: shipped when the workers lack them, whatever ``packages`` says, and never dropped by the
#: check as edited local modules are.
RUNTIME_MODULES = ("gpar", "envpack", "reduce_sql", "cloudpickle")


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
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    env: str = "full",
    packages: str | Sequence[str] = "auto",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    cluster_by: str | Sequence[str] | None = None,
    errors: str = "warn",
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
    started = time.time()
    _check_options(fn, max_workers, task_retries, max_failures, task_timeout, quorum, env,
                   packages, errors, output, overwrite, backups, progress, address)
    _check_arguments(fn, args, kwargs)
    retry_on, cluster_by = _exception_types(retry_on), _column_names(cluster_by, output)
    deadline_at = _deadline_at(deadline, started)
    if output is not None and isinstance(xs, set | frozenset):
        raise TypeError("with output=, xs needs an order a re-run repeats, and a set's order "
                        "changes from one process to the next: pass sorted(xs)")
    items = _materialize(xs)  # a generator is consumed only once the options are sound
    captured = environment.capture(fn, args, kwargs, sys._getframe(1).f_globals, mode=env,
                                   retry_on=retry_on)
    for source in environment.random_states(fn, args, kwargs):
        warnings.warn(SharedRandomStateWarning(
            f"fn draws from the random generator {source}: every batch of elements gets a "
            "copy of it in the state it had at this call, so batches draw the same numbers. "
            "Make one per element inside fn from a seed and the element, e.g. "
            "rng = np.random.default_rng([SEED, x])"), stacklevel=2)
    with _claimed(output, items, fn, args, kwargs, overwrite, cluster_by) as claim:
        pending = items if claim is None else [items[i] for i in claim.pending]
        if len(pending) == 0:  # an earlier run of this job committed every element
            return _collected(Results([], JobReport(elements=0)), claim)
        tasks, image = _staged_image(address, packages, code=(fn, *args, *kwargs.values()))
        with contextlib.closing(tasks):
            slots = int(max_workers or tasks.cpus())  # int(): numpy's ints are accepted
            report = JobReport(len(pending), environment_bytes=captured.nbytes,
                               max_workers=slots, skipped_globals=captured.skipped,
                               image=image.report)
            rules = Rules(max_workers=slots, task_retries=int(task_retries),
                          max_failures=(default_max_failures(len(items)) if max_failures is None
                                        else int(max_failures)),
                          deadline_at=deadline_at,
                          task_timeout_s=None if task_timeout is None else float(task_timeout),
                          quorum=float(quorum), backups=backups, errors=errors)
            policy = Policy(len(pending), rules, BatchSizer(slots), counts=report)
            values = scheduler.run_job(
                pending, captured, policy, report=report, image=image, tasks=tasks,
                output=claim, progress=shown_by_default() if progress is None else progress)
            run_all = functools.partial(scheduler.run_each, image, tasks)
            return _collected(Results(values, report), claim, policy, run_all)


def _claimed(output: Any, items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict,
             overwrite: bool, cluster_by: tuple[str, ...]
             ) -> contextlib.AbstractContextManager[gpar_output.OutputJob | None]:
    """The output claimed for this job while it runs (which elements are left to run, where
    they write); nothing without output=."""
    if output is None:
        return contextlib.nullcontext()
    with as_gpar_errors():
        return gpar_output.begin(output, items, fn, args, kwargs, overwrite, cluster_by)


def _staged_image(address: str | None, packages: str | Sequence[str],
                  code: tuple[Any, ...]) -> tuple[Any, StagedImage]:
    """Connect (cluster.connect: the tasks a job runs on), then ship what the cluster's
    workers lack of the caller's packages (envpack.stage), with what ``code`` (fn and its
    arguments) will import when it runs."""
    from envpack import stage

    tasks = cluster.connect(address)
    try:
        with as_gpar_errors():
            image = stage.prepare(packages, always=RUNTIME_MODULES, code=code, cluster=tasks)
    except BaseException:
        tasks.close()  # a local cluster's connection: the job it would hold open never runs
        raise
    return tasks, image


def _collected(results: Results, claim: gpar_output.OutputJob | None,
               policy: Policy | None = None, run_all: Callable | None = None
               ) -> Results | Dataset:
    """Commit what was accepted (even when the job then raises: nothing finished is lost),
    then raise or warn as the job ended, and return the results or the committed Dataset."""
    if claim is not None:
        results = claim.in_input_order(results)
        with as_gpar_errors():
            claim.commit(results, run_all)
    if policy is not None:
        _raise_if_mismatched(results)
        _raise_or_warn(results, policy)
    if claim is None:
        return results
    from reduce_sql import Dataset

    return Dataset(claim.location, report=results.report, failures=results.failures)


def _raise_if_mismatched(results: Results) -> None:
    """No element ran because the workers' environment differs: raise the workers'
    EnvironmentMismatch itself, as the one thing to fix, rather than AllTasksFailed."""
    from envpack import EnvironmentMismatch

    final = [failure for failure in results.failures if failure.reason in ("error", "system")]
    if (len(results.failures) == len(results) and final
            and all(isinstance(failure.exception, EnvironmentMismatch) for failure in final)):
        raise final[0].exception


def _raise_or_warn(results: Results, policy: Policy) -> None:
    """Turn how the job ended into the exception or warnings DESIGN §3 promises."""
    failures = [f for f in results.failures if f.reason in ("error", "system")]
    unfinished = len(results.failures) - len(failures)
    if policy.stop == "raise":
        raise TaskError(policy.first_failure)
    if policy.stop == "budget":
        raise FailureBudgetExceeded(
            f"{policy.counts.failed_attempts} attempts failed, more than max_failures="
            f"{policy.rules.max_failures}; the job was cancelled, finished results are in "
            ".partial. The first failure: "
            f"{describe_failure(policy.first_failure) if policy.first_failure else 'none final'}",
            results)
    if policy.stop == "deadline" and unfinished == len(results):
        raise DeadlineExceeded(
            f"the deadline passed before any of the {len(results)} tasks finished", results)
    if failures and len(failures) == len(results):
        raise AllTasksFailed(
            f"all {len(results)} tasks failed; the first: {describe_failure(failures[0])}",
            [TaskError(failure) for failure in failures],
            results,
        )
    for failure in failures:
        warnings.warn(describe_failure(failure), TaskFailedWarning, stacklevel=3)
    if unfinished:
        warnings.warn(
            f"the job's {policy.stop} ended it with {unfinished} of {len(results)} tasks "
            f"unfinished; their slots hold TaskFailure(reason={policy.stop!r})",
            IncompleteResultsWarning, stacklevel=3)


def _column_names(names: str | Sequence[str] | None, output: Any) -> tuple[str, ...]:
    """cluster_by as a tuple of column names."""
    if names is None:
        return ()
    if output is None:
        raise ValueError("cluster_by only applies with output=...: it orders the rows of the "
                         "files written there")
    names = (names,) if isinstance(names, str) else names
    if not (isinstance(names, list | tuple) and names
            and all(isinstance(name, str) and name for name in names)):
        raise ValueError(f"cluster_by takes a column name or a list of them, e.g. "
                         f'cluster_by=["horizon", "model"]; got {names!r}')
    return tuple(names)


def _deadline_at(deadline: float | datetime.datetime | None, now: float) -> float | None:
    if deadline is None:
        return None
    if isinstance(deadline, datetime.datetime):
        if deadline.tzinfo is None:
            deadline = deadline.astimezone()  # a naive datetime is local time
        return deadline.timestamp()
    if _is_number(deadline) and deadline > 0:
        return now + float(deadline)
    raise ValueError(
        f"deadline must be seconds from now (> 0) or a datetime, got {deadline!r}")


def _materialize(xs: Iterable[Any]) -> Sequence[Any]:
    """xs as a sliceable sequence, iterated exactly as ``for x in xs`` would."""
    if isinstance(xs, list | tuple | range):
        return xs
    if type(xs).__module__ == "numpy" and type(xs).__name__ == "ndarray" and xs.ndim > 0:
        return xs
    try:
        iterator = iter(xs)
    except TypeError:
        raise TypeError(
            f"xs must be iterable (a list, range, array, generator ...), got "
            f"{type(xs).__qualname__}"
        ) from None
    return list(iterator)  # what the iteration itself raises is the caller's to see


def _exception_types(retry_on: Any) -> tuple[type[BaseException], ...]:
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(
                f"retry_on takes exception classes, e.g. retry_on=(TimeoutError,); got {kind!r}"
            )
    return kinds


def _check_options(fn, max_workers, task_retries, max_failures, task_timeout, quorum, env,
                   packages, errors, output, overwrite, backups, progress, address) -> None:
    if not callable(fn):
        raise TypeError(
            f"fn must be callable, got {type(fn).__qualname__}; the call is apply(xs, fn, ...)"
        )
    for name, flag in (("overwrite", overwrite), ("backups", backups), ("progress", progress)):
        if not (isinstance(flag, bool) or (name == "progress" and flag is None)):
            raise TypeError(f"{name} takes True or False, got {flag!r}")
    if address is not None and not isinstance(address, str):
        raise TypeError(f'address takes "host:port" of a Ray cluster, got {address!r}')
    if output is not None and not isinstance(output, str | os.PathLike):
        raise TypeError(f"output takes a directory path or an s3:// URI (a str or a "
                        f"pathlib.Path), got {type(output).__qualname__} {output!r}")
    if overwrite and output is None:
        raise ValueError("overwrite=True only applies with output=...; there is nothing to "
                         "overwrite without it")
    if max_workers is not None and not (_is_integer(max_workers) and max_workers >= 1):
        raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
    if not (_is_integer(task_retries) and task_retries >= 0):
        raise ValueError(f"task_retries must be an int >= 0, got {task_retries!r}")
    if max_failures is not None and not (_is_integer(max_failures) and max_failures >= 0):
        raise ValueError(f"max_failures must be an int >= 0 or None, got {max_failures!r}")
    if task_timeout is not None and not (_is_number(task_timeout) and task_timeout > 0):
        raise ValueError(f"task_timeout must be seconds (> 0) or None, got {task_timeout!r}")
    if not (_is_number(quorum) and 0 < quorum <= 1):
        raise ValueError(f"quorum must be a fraction in (0, 1], got {quorum!r}")
    if env not in ("full", "referenced"):
        raise ValueError(f'env must be "full" or "referenced", got {env!r}')
    if errors not in ("warn", "raise"):
        raise ValueError(f'errors must be "warn" or "raise", got {errors!r}')
    names_ok = (isinstance(packages, list | tuple | set | frozenset)
                and all(isinstance(name, str) and name for name in packages))
    if packages not in ("auto", "none") and not names_ok:
        raise ValueError(
            f'packages must be "auto", "none" or a list of distribution names, got {packages!r}'
        )


def _check_arguments(fn: Callable, args: tuple, kwargs: dict) -> None:
    """fn must take (x, *args, **kwargs): else every element would fail the same way, after
    the launch. A misspelt option of apply's lands in kwargs: name the option meant."""
    try:  # the signature of what is called: a decorator's wrapper may fill arguments in
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # builtins and ufuncs may have none: let them run
        return
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        options = [name for name, parameter in inspect.signature(apply).parameters.items()
                   if parameter.kind is parameter.KEYWORD_ONLY]
        meant = [close for name in kwargs if name not in signature.parameters
                 for close in difflib.get_close_matches(name, options, n=1)]
        hint = (f"; did you mean apply's option {meant[0]}=?" if meant else
                "; apply passes each element first, then its own *args and **kwargs")
        raise TypeError(f"fn cannot be called as fn(x, *args, **kwargs) with what apply was "
                        f"given: {exc}{hint}") from None


def _is_integer(value: Any) -> bool:
    """An int, numpy's too; not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number, numpy's too; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
