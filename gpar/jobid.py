"""What makes two runs of apply() the same job: resuming an output (output.py) rests on it.

A digest of xs, fn's code, the extra arguments and what fn reads: the globals its code names
(following the functions and classes it names, their code too) and its closure. Equal in any
process that makes the same call; a changed constant or helper makes another job, whose
results an earlier run's output must not stand in for. Globals reached only through
``globals()[name]`` are not seen.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from envpack.imports import unwrap
from gpar.environment import closure_values, code_objects, reached_globals


def job_digest(items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict) -> str:
    """The job's digest (hex).

    Plain pickle where it can: it names classes and functions (a dataclass in __main__ too),
    while cloudpickle's by-value copies carry ids that differ from one process to the next.
    """
    digest = hashlib.sha256()
    digest.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    code = getattr(fn, "__code__", None)
    digest.update(_code_fingerprint(code) if code is not None else _stable_pickle(fn))
    digest.update(_stable_pickle((args, kwargs)))
    digest.update(_what_fn_reads(fn))
    digest.update(_stable_pickle(list(items)))
    return digest.hexdigest()


def _what_fn_reads(fn: Callable) -> bytes:
    """fn's defaults, the globals its code reaches, by name, and its closure's values:
    functions and classes by their code (and defaults), anything else by value."""
    scope = getattr(unwrap(fn), "__globals__", {})
    named = [("", unwrap(fn))]
    named += [(name, scope[name]) for name in sorted(reached_globals(fn, scope))]
    enclosed = [("", value) for value in closure_values(fn)]
    return b"".join(name.encode() + b"=" + _fingerprint(value, scope) + b";"
                    for name, value in named + enclosed)


def _fingerprint(value: Any, scope: dict[str, Any]) -> bytes:
    codes = list(code_objects(value, scope))
    defaults = (getattr(value, "__defaults__", None), getattr(value, "__kwdefaults__", None))
    try:
        return b"|".join([*map(_code_fingerprint, codes), _stable_pickle(defaults)]
                         if codes else [_stable_pickle(value)])
    except Exception:  # a library function's unpicklable default: its code still counts
        return b"|".join([*map(_code_fingerprint, codes), type(value).__qualname__.encode()])


def _code_fingerprint(code: Any) -> bytes:
    """The code's instructions, names and constants (nested functions' too); not marshal's
    bytes, which depend on reference counts."""
    consts = [_code_fingerprint(c) if hasattr(c, "co_code")
              else repr(sorted(map(repr, c))).encode() if isinstance(c, frozenset)  # `in {..}`
              else repr(c).encode() for c in code.co_consts]
    return b"|".join([code.co_code, repr(code.co_names).encode(), *consts])


def _stable_pickle(value: Any) -> bytes:
    """Large buffers (arrays, frames' columns) enter as their hashes, never copied."""
    buffer, hashes = io.BytesIO(), []

    def out_of_band(view: pickle.PickleBuffer) -> None:
        try:
            hashes.append(hashlib.sha256(view.raw()).digest())
        except BufferError:  # not contiguous
            hashes.append(hashlib.sha256(memoryview(view).tobytes()).digest())

    try:
        _SortedSetPickler(buffer, 5, buffer_callback=out_of_band).dump(value)
    except Exception:  # lambdas, local classes: by value, stable within one process only
        hashes.clear()
        return cloudpickle.dumps(value, protocol=5, buffer_callback=out_of_band) + b"".join(
            hashes)
    return buffer.getvalue() + b"".join(hashes)


class _SortedSetPickler(pickle.Pickler):
    """Pickles a set as its elements' pickles, sorted: a set of strings iterates in an order
    set by string hashes, which differ from one process to the next. (persistent_id, because
    the pickler is asked it for every object, sets included; the bytes are never unpickled.)"""

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) not in (set, frozenset):
            return None
        expanding = _expanding.ids
        if id(obj) in expanding:  # an element refers back to an enclosing set: say which
            return "cycle", len(expanding) - expanding.index(id(obj))
        expanding.append(id(obj))
        try:
            return type(obj).__name__, sorted(map(_stable_pickle, obj))
        finally:
            expanding.pop()


class _Expanding(threading.local):
    """The sets this thread is pickling element by element, outermost first."""

    def __init__(self) -> None:
        self.ids: list[int] = []


_expanding = _Expanding()
