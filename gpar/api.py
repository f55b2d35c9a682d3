"""apply(): ``[fn(x) for x in xs]`` on a Ray cluster, with the caller's environment."""

from __future__ import annotations

import datetime
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gpar import cluster, environment, scheduler
from gpar.errors import AllTasksFailed, TaskError, TaskFailedWarning, describe_failure
from gpar.report import JobReport
from gpar.results import Results


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
    output: str | None = None,
    errors: str = "warn",
    progress: bool | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> Results:
    """Return ``[fn(x, *args, **kwargs) for x in xs]``, computed in parallel on Ray.

    fn sees the caller's globals as they were at the call (env="full"; "referenced" ships only
    what fn's code names). Large arrays among them arrive read-only. A failed element's slot
    holds a TaskFailure and a TaskFailedWarning is issued (errors="warn"), or the first failure
    raises TaskError (errors="raise"); if every element fails, AllTasksFailed is raised.
    An exception from fn is final unless its type is in ``retry_on``; a worker that dies is
    retried; each element may fail ``task_retries`` times before it counts as failed.
    """
    if not callable(fn):
        raise TypeError(
            f"fn must be callable, got {type(fn).__qualname__}; the call is apply(xs, fn, ...)"
        )
    items = _materialize(xs)
    retry_on = _exception_types(retry_on)
    _check_options(max_workers, task_retries, env, packages, errors)
    _refuse_unbuilt(max_failures, deadline, task_timeout, quorum, output)
    if len(items) == 0:
        return Results([], JobReport(elements=0))
    captured = environment.capture(
        fn, args, kwargs, sys._getframe(1).f_globals, mode=env, retry_on=retry_on
    )
    cluster.connect(address)
    options = scheduler.Options(
        max_workers=max_workers or cluster.cpu_slots(),
        task_retries=task_retries,
        errors=errors,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    report = JobReport(len(items), environment_bytes=captured.nbytes,
                       skipped_globals=captured.skipped)
    results = Results(scheduler.run_job(items, captured, options, report), report)
    failures = results.failures
    if len(failures) == len(results):
        raise AllTasksFailed(
            f"all {len(results)} tasks failed; the first: {describe_failure(failures[0])}",
            [TaskError(failure) for failure in failures],
            results,
        )
    for failure in failures:
        warnings.warn(describe_failure(failure), TaskFailedWarning, stacklevel=2)
    return results


def _materialize(xs: Iterable[Any]) -> Sequence[Any]:
    """xs as a sliceable sequence, iterated exactly as ``for x in xs`` would."""
    if isinstance(xs, list | tuple | range):
        return xs
    if type(xs).__module__ == "numpy" and type(xs).__name__ == "ndarray" and xs.ndim > 0:
        return xs
    try:
        return list(xs)
    except TypeError:
        raise TypeError(
            f"xs must be iterable (a list, range, array, generator ...), got "
            f"{type(xs).__qualname__}"
        ) from None


def _exception_types(retry_on: Any) -> tuple[type[BaseException], ...]:
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(
                f"retry_on takes exception classes, e.g. retry_on=(TimeoutError,); got {kind!r}"
            )
    return kinds


def _check_options(max_workers, task_retries, env, packages, errors) -> None:
    if max_workers is not None and not (isinstance(max_workers, int) and max_workers >= 1):
        raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
    if not (isinstance(task_retries, int) and task_retries >= 0):
        raise ValueError(f"task_retries must be an int >= 0, got {task_retries!r}")
    if env not in ("full", "referenced"):
        raise ValueError(f'env must be "full" or "referenced", got {env!r}')
    if errors not in ("warn", "raise"):
        raise ValueError(f'errors must be "warn" or "raise", got {errors!r}')
    if isinstance(packages, str) and packages not in ("auto", "none"):
        raise ValueError(
            f'packages must be "auto", "none" or a list of distribution names, got {packages!r}'
        )


def _refuse_unbuilt(max_failures, deadline, task_timeout, quorum, output) -> None:
    """Knobs of the public signature whose behaviour is not there yet: say so, never ignore."""
    asked = {
        "max_failures": max_failures is not None,
        "deadline": deadline is not None,
        "task_timeout": task_timeout is not None,
        "quorum": quorum != 1.0,
        "output": output is not None,
    }
    for name, given in asked.items():
        if given:
            raise NotImplementedError(f"gpar.apply({name}=...) is not supported yet")
