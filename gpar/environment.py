"""The calling environment: fn, its arguments and the caller's globals in ONE cloudpickle stream.

Why one stream: cloudpickle gives every by-value function of a module one shared globals dict
when they are pickled by one ``dumps`` call. A tiny *anchor* function built on the caller's
globals travels in the same stream, so on the worker ``anchor.__globals__`` is the very dict that
fn reads its globals from. Filling it with the captured namespace (env="full") makes names that
fn reaches only through ``globals()[name]`` or ``eval`` resolve; cloudpickle's own closure
analysis (env="referenced") ships only the names fn's code mentions.

The stream is written part by part (gpar/pickled.py): the names of the shipped globals (with
the template of large plain globals, plaindata.py), each global's value, then the call, by one
Pickler, so objects are still shared across parts. A global that cannot be unpickled on a
worker (its module missing there, a connection that cannot reopen) is then left out, and breaks
only a call that uses it, which names it.

Large buffers (numpy arrays, pandas columns) leave the stream out of band (pickle protocol 5):
they are stored once in Ray's object store and every task on a node maps those of
SHARED_MIN_BYTES and more in place, read-only (joblib memory-maps large arrays read-only by
default for the same reason). Everything else is each batch's own, so what fn mutates stays in
that batch: smaller buffers as copies on write (batchcopies.py), large plain globals as copies
of the worker's template (plaindata.py), the rest unpickled afresh.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import re
import sys
import types
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cloudpickle

from envpack import reach
from envpack.reach import unwrap
from gpar import batchcopies, pickled, plaindata
from gpar.errors import EnvironmentCaptureError
from gpar.options import EnvMode

#: Out-of-band buffers from this size on are shared read-only by the tasks of a node; smaller
#: ones are copied into each batch, writable, as a list would be (joblib's max_nbytes, 1 MB).
SHARED_MIN_BYTES = 1 << 20

#: Notebook and REPL internals: never shipped.
NOTEBOOK_NAMES = frozenset(
    {"In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_ih", "_oh", "_dh", "get_ipython",
     "exit", "quit"}
)
_NOTEBOOK_HISTORY = re.compile(r"_i?\d+")

#: gpar's own packages and what restores a call: the runtime, never read as the caller's code
#: (from a source checkout they are not installed, but they are no more the caller's), and
#: shipped to workers that lack them whatever ``packages`` says (reduce_sql: output='s Sink).
RUNTIME_MODULES = ("gpar", "envpack", "reduce_sql", "cloudpickle")


@dataclass(frozen=True)
class Call:
    """What a worker needs to run fn on elements, restored from the stream."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retry_on: tuple[type[BaseException], ...]
    namespace: dict[str, Any] = field(default_factory=dict)
    anchor: Callable[[], None] | None = None


@dataclass(frozen=True)
class CapturedEnvironment:
    """The pickled call: one stream plus its out-of-band buffers."""

    stream: bytes
    buffers: list[pickle.PickleBuffer]
    skipped: dict[str, str]  # unpicklable globals fn does not reach: name -> type

    @property
    def nbytes(self) -> int:
        return len(self.stream) + sum(buffer.raw().nbytes for buffer in self.buffers)


def capture(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    caller_globals: dict[str, Any],
    *,
    mode: EnvMode,
    retry_on: tuple[type[BaseException], ...],
) -> CapturedEnvironment:
    """Pickle fn with its arguments and (mode="full") the caller's globals.

    Raises EnvironmentCaptureError, before anything runs, if fn reaches a value that cannot be
    pickled; unpicklable globals fn does not reach are left out and listed in ``skipped``.
    """
    namespace = shippable_globals(caller_globals) if mode == "full" else {}
    anchor = _anchor(caller_globals) if namespace else None
    captured, refused = _dump(Call(fn, args, kwargs, retry_on, namespace, anchor))
    if not refused:
        return captured
    names = list(namespace)
    broken = {names[position - 1]: f"{failure.exc_type}: {failure.message}"
              for position, failure in refused.items() if 0 < position <= len(names)}
    if len(names) + 1 in refused:  # the call itself: find the culprit
        _raise_for_call(fn, args, kwargs, caller_globals, broken, refused[len(names) + 1])
    skipped = {name: _type_name(namespace[name]) for name in broken}
    return dataclasses.replace(captured, skipped=skipped)


def _raise_for_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    caller_globals: dict[str, Any], broken: dict[str, str],
                    failure: pickled.Failure) -> NoReturn:
    """Name the global, argument or closure variable that stops fn's call from pickling."""
    scope = getattr(unwrap(fn), "__globals__", caller_globals)
    # fn of an importable module goes by reference: none of its module's globals are shipped
    by_value = _pickled_by_value(scope)
    reached = reached_globals(_roots(fn, args, kwargs), scope) if by_value else set()
    probed = {name: error for name, error in _probe({name: scope[name] for name in reached})
              if error is not None}
    broken = {**broken, **probed}
    for name in sorted(reached & broken.keys()):
        raise EnvironmentCaptureError(
            f"fn uses the global {name!r} ({_type_name(scope[name])}), which cannot be "
            f"pickled: {broken[name]}. Create it inside fn (open files, connections and locks "
            "there), or pass the data it holds instead."
        )
    _check_call_parts(fn, args, kwargs)
    raise EnvironmentCaptureError(
        f"fn and its arguments cannot be pickled: {failure.exc_type}: {failure.message}. Pass "
        "picklable data and create resources such as files inside fn.")


def restore(stream: bytes, buffers: list[Any], identity: Hashable = None) -> Call:
    """Unpickle a call on the worker and give fn the captured globals: those that unpickle
    there. Raises EnvironmentCaptureError naming a global the call needs that does not.
    ``identity``: what names the buffers' content for good, if anything does (batchcopies)."""
    buffers = _writable(buffers, identity)
    ((names, _), *values, call), failures = pickled.loads(
        stream, buffers, plaindata.resolver(buffers, identity))
    lost = {names[position - 1]: failure for position, failure in failures.items()
            if 0 < position <= len(names)}
    if call is None:
        failure = failures[len(names) + 1]
        position = failure.shared_with
        if 0 < position <= len(names):  # it needs a global that failed: name the one that
            while 0 < failures[position].shared_with <= len(names):  # broke the others
                position = failures[position].shared_with
            failure = failures[position]
            raise EnvironmentCaptureError(
                f"fn uses the global {names[position - 1]!r}, which could not be unpickled on "
                f"this worker: {failure.exc_type}: {failure.message}")
        raise EnvironmentCaptureError(f"{failure.exc_type}: {failure.message}")
    namespace = {name: value for name, value in zip(names, values, strict=True)
                 if name not in lost}
    if call.anchor is not None:
        call.anchor.__globals__.update(namespace)
    return dataclasses.replace(call, namespace=namespace)


#: Random generators whose copies repeat one another's draws (random.SystemRandom, which
#: draws from the OS, does not).
RANDOM_STATES = frozenset({"numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
                           "numpy.random.bit_generator.BitGenerator", "random.Random"})


def random_states(fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> list[str]:
    """What fn draws random numbers from that it does not make itself: random generators among
    the globals its code names, its closure and its arguments, each as "name (type)"."""
    scope = getattr(unwrap(fn), "__globals__", {})
    candidates = {
        **{f"global {name!r}": scope[name]
           for name in sorted(reached_globals(_roots(fn, args, kwargs), scope,
                                              attributes=False))},
        **_call_parts(fn, args, kwargs),
        **{f"the default of fn's parameter {name!r}": value
           for name, value in _defaults(fn).items()},
    }
    return [f"{label} ({_type_name(value)})" for label, value in candidates.items()
            if not isinstance(value, type) and type(value).__name__ != "SystemRandom"
            and any(f"{kind.__module__}.{kind.__qualname__}" in RANDOM_STATES
                    for kind in type(value).__mro__)]


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(fn, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):  # builtins and ufuncs may have none
        return {}
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def shippable_globals(caller_globals: dict[str, Any]) -> dict[str, Any]:
    """The caller's globals minus dunders, notebook internals and the __main__ module itself.

    Only a caller whose module is pickled by value (``__main__``, a notebook, a module that is
    not importable) needs its namespace shipped; an importable module is imported on the worker.
    """
    if not _pickled_by_value(caller_globals):
        return {}
    return {
        name: value
        for name, value in caller_globals.items()
        if not (name.startswith("__") and name.endswith("__"))
        and name not in NOTEBOOK_NAMES
        and not _NOTEBOOK_HISTORY.fullmatch(name)
        and not (isinstance(value, types.ModuleType) and value.__name__ == "__main__")
    }


def _pickled_by_value(module_globals: dict[str, Any]) -> bool:
    """Whether functions of this module travel by value (``__main__``, not importable)."""
    name = module_globals.get("__name__")
    return name == "__main__" or name not in sys.modules


def reached_globals(roots: Iterable[Any], scope: dict[str, Any],
                    attributes: bool = True) -> set[str]:
    """Names of ``scope`` that the code ``roots`` reach uses (reach.py).

    With ``attributes``, an over-approximation (``self.rng`` counts as the global ``rng``): it
    decides which unpicklable globals are fatal, and a false alarm there is better than a
    NameError on a worker. Without, only the names the code loads as globals.
    """
    return {reference.name
            for obj, found in reach.walk(roots, callers_code(), attributes=attributes)
            if isinstance(obj, types.FunctionType) and obj.__globals__ is scope
            for reference in found if reference.kind == reach.GLOBAL}


def callers_code() -> Callable[[str], bool]:
    """Whether a module is the caller's own code, which the walk of what fn reaches reads."""
    from envpack import discover  # importlib.metadata and packaging: not on `import gpar`

    return discover.callers_code(RUNTIME_MODULES)


def _roots(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Where the walk of what a call reaches starts: fn and its arguments (their code runs)."""
    return (fn, *args, *kwargs.values())


def _dump(call: Call) -> tuple[CapturedEnvironment, dict[int, pickled.Failure]]:
    """The call in parts: the globals' names (with the template of large plain ones,
    plaindata.py, the stream's first out-of-band buffer), each global, the call; and the
    parts refused."""
    buffers: list[pickle.PickleBuffer] = []
    in_template = plaindata.qualifying(call.namespace)
    head = (list(call.namespace),
            plaindata.template(call.namespace, in_template) if in_template else None)
    parts = [head, *call.namespace.values(), dataclasses.replace(call, namespace={})]
    pickler = (plaindata.referring(cloudpickle.Pickler, in_template) if in_template
               else cloudpickle.Pickler)
    stream, refused = pickled.dumps(parts, (pickler,), 5, buffers)
    return CapturedEnvironment(stream, buffers, skipped={}), refused


def _writable(buffers: list[Any], identity: Hashable) -> list[Any]:
    """The buffers under SHARED_MIN_BYTES as writable copies, each batch's own (copied on
    write: batchcopies.py); the others as they are, shared read-only."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    small = [position for position, view in enumerate(views) if view.nbytes < SHARED_MIN_BYTES]
    writable = list(buffers)
    for position, copy in zip(small, batchcopies.private_views([views[p] for p in small], identity),
                              strict=True):
        writable[position] = copy
    return writable


def _anchor(caller_globals: dict[str, Any]) -> Callable[[], None]:
    """A function whose globals are the caller's: its restored globals are fn's on the worker."""
    return types.FunctionType((lambda: None).__code__, caller_globals, "_gpar_anchor")


def _probe(values: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    for name, value in values.items():
        try:
            cloudpickle.dumps(value)
        except Exception as error:  # pickling raises anything
            yield name, f"{type(error).__name__}: {error}"
        else:
            yield name, None


def _call_parts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """fn, its arguments and its closure's variables, each labelled as the caller knows it."""
    free_names = getattr(getattr(unwrap(fn), "__code__", None), "co_freevars", ())
    cells = getattr(unwrap(fn), "__closure__", None) or ()
    return {
        **{f"argument {i} of apply's *args": arg for i, arg in enumerate(args)},
        **{f"keyword argument {key!r}": value for key, value in kwargs.items()},
        **{f"variable {name!r} captured by fn's closure": cell.cell_contents
           for name, cell in zip(free_names, cells, strict=True) if _cell_is_set(cell)},
        "fn": fn,
    }


def _check_call_parts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Name the argument or closure variable that stops fn from being pickled."""
    parts = _call_parts(fn, args, kwargs)
    for label, error in _probe(parts):
        if error is not None:
            raise EnvironmentCaptureError(
                f"{label} ({_type_name(parts[label])}) cannot be pickled: {error}. "
                "Pass picklable data and create resources such as files inside fn."
            )


def _cell_is_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - probing an empty cell raises ValueError
    except ValueError:
        return False
    return True


def _type_name(value: Any) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
