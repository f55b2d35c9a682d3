"""What makes two runs of apply() the same job: resuming an output (output.py) rests on it.

A digest of xs, the extra arguments, fn and what fn reads: the globals its code loads,
following the functions and classes it names. Functions count by their code, defaults and
closure; a bound method or a partial with what it is bound to; a class of the caller's module
by its members; anything else by value. Equal in any process that makes the same call; a
changed constant or helper makes another job, whose results an earlier run's output must not
stand in for. Globals reached only through ``globals()[name]`` are not seen.
"""

from __future__ import annotations

import functools
import hashlib
import io
import pickle
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from envpack.imports import unwrap
from gpar.environment import closure_values, reached_globals


def job_digest(items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict) -> str:
    """The job's digest (hex).

    Plain pickle where it can: it names classes and functions (a dataclass in __main__ too),
    while cloudpickle's by-value copies carry ids that differ from one process to the next.
    """
    digest = hashlib.sha256()
    digest.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    digest.update(_stable_pickle((args, kwargs)))
    scope = getattr(unwrap(fn), "__globals__", {})
    fingerprint = _Fingerprint(scope.get("__name__"))
    digest.update(fingerprint(fn))
    for name in sorted(reached_globals(fn, scope, attributes=False)):
        digest.update(f";{name}=".encode() + fingerprint(scope[name]))
    digest.update(_stable_pickle(list(items)))
    return digest.hexdigest()


class _Fingerprint:
    """Bytes that change when what a value does can change; each object once (cycles)."""

    def __init__(self, module: str | None):
        self.module = module  # the caller's: its classes count by their members
        self.seen: dict[int, Any] = {}  # the values too: an id is unique while they live

    def __call__(self, value: Any) -> bytes:
        if id(value) in self.seen:
            return b"<again>"
        self.seen[id(value)] = value
        try:
            return self._of(value)
        except Exception:  # cannot be pickled: its type still counts
            return f"<{type(value).__module__}.{type(value).__qualname__}>".encode()

    def _of(self, value: Any) -> bytes:
        if isinstance(value, types.MethodType):
            return self(value.__func__) + b"@" + self(value.__self__)
        if isinstance(value, functools.partial):
            return self(value.func) + _stable_pickle((value.args, value.keywords))
        if isinstance(value, types.FunctionType):
            return b"|".join([_code_fingerprint(value.__code__),
                              _stable_pickle((value.__defaults__, value.__kwdefaults__)),
                              *map(self, closure_values(value)),
                              self(getattr(value, "__wrapped__", None))])
        if hasattr(value, "__wrapped__") and callable(value):  # functools.lru_cache and kin
            return self(value.__wrapped__)
        if isinstance(value, staticmethod | classmethod):
            return self(value.__func__)
        if isinstance(value, property):
            return self(value.fget) + self(value.fset)
        if isinstance(value, type) and value.__module__ == self.module:
            return b"|".join(name.encode() + b"=" + self(member)
                             for name, member in sorted(vars(value).items())
                             if not name.startswith("__") or callable(member))
        if type(value).__module__ == self.module:  # an instance of the caller's class
            return self(type(value)) + _stable_pickle(value)
        return _stable_pickle(value)


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
        kinds = {type(element) for element in obj}
        if len(kinds) == 1 and kinds <= {str, bytes, int, float}:  # most sets: fast
            return type(obj).__name__, sorted(obj)
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
