"""apply's options, checked in one place and kept as one record (``Options``) the call reads.

A wrong option is misuse, so it is a TypeError or ValueError saying what to pass, raised before
xs is consumed or anything is shipped.
"""

from __future__ import annotations

import datetime
import difflib
import inspect
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: What of the caller's globals travels with fn: all of them, or those fn's code names.
EnvMode = Literal["full", "referenced"]
#: What a final failure does: "warn" lets the job go on (the paper), "raise" stops it.
ErrorsMode = Literal["warn", "raise"]


@dataclass(frozen=True)
class Options:
    """apply's keyword options, checked and in the types the call uses."""

    max_workers: int | None
    task_retries: int
    max_failures: int | None
    deadline_at: float | None  # on time.time()'s clock
    task_timeout_s: float | None
    quorum: float
    backups: bool
    retry_on: tuple[type[BaseException], ...]
    env: EnvMode
    packages: str | tuple[str, ...]  # "auto", "none", or distribution names
    output: str | os.PathLike | None
    overwrite: bool
    cluster_by: tuple[str, ...]
    errors: ErrorsMode
    progress: bool | None  # None: shown where a person is watching
    address: str | None


def checked(fn: Any, now: float, *, max_workers: Any, task_retries: Any, max_failures: Any,
            deadline: Any, task_timeout: Any, quorum: Any, backups: Any, retry_on: Any,
            env: Any, packages: Any, output: Any, overwrite: Any, cluster_by: Any,
            errors: Any, progress: Any, address: Any) -> Options:
    """The options as given to apply at ``now``, checked; fn must be callable."""
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
    for name, value, words in (("env", env, EnvMode), ("errors", errors, ErrorsMode)):
        if value not in get_args(words):
            raise ValueError(f"{name} must be {' or '.join(map(repr, get_args(words)))}, "
                             f"got {value!r}")
    return Options(
        max_workers=None if max_workers is None else int(max_workers),  # numpy's ints too
        task_retries=int(task_retries),
        max_failures=None if max_failures is None else int(max_failures),
        deadline_at=_deadline_at(deadline, now),
        task_timeout_s=None if task_timeout is None else float(task_timeout),
        quorum=float(quorum), backups=backups, retry_on=_exception_types(retry_on), env=env,
        packages=_packages(packages), output=output, overwrite=overwrite,
        cluster_by=_column_names(cluster_by, output), errors=errors, progress=progress,
        address=address)


def check_call(fn: Callable, args: tuple, kwargs: dict, options: Sequence[str]) -> None:
    """fn must take (x, *args, **kwargs): else every element would fail the same way, after
    the launch. A misspelt option of apply's (one of ``options``) lands in kwargs: name the
    option meant."""
    try:  # the signature of what is called: a decorator's wrapper may fill arguments in
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # builtins and ufuncs may have none: let them run
        return
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        meant = [close for name in kwargs if name not in signature.parameters
                 for close in difflib.get_close_matches(name, options, n=1)]
        hint = (f"; did you mean apply's option {meant[0]}=?" if meant else
                "; apply passes each element first, then its own *args and **kwargs")
        raise TypeError(f"fn cannot be called as fn(x, *args, **kwargs) with what apply was "
                        f"given: {exc}{hint}") from None


def _packages(packages: Any) -> str | tuple[str, ...]:
    if packages in ("auto", "none"):
        return packages
    if (isinstance(packages, list | tuple | set | frozenset)
            and all(isinstance(name, str) and name for name in packages)):
        return tuple(packages)
    raise ValueError(
        f'packages must be "auto", "none" or a list of distribution names, got {packages!r}')


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


def _exception_types(retry_on: Any) -> tuple[type[BaseException], ...]:
    kinds = (tuple(retry_on) if isinstance(retry_on, list | tuple | set | frozenset)
             else (retry_on,))
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(
                f"retry_on takes exception classes, e.g. retry_on=(TimeoutError,); got {kind!r}"
            )
    return kinds


def _is_integer(value: Any) -> bool:
    """An int, numpy's too; not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number, numpy's too; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
