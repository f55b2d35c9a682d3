"""What makes two runs of apply() the same job: resuming an output (output.py) rests on it.

A digest of xs, fn's code and the extra arguments, equal in any process that makes the same
call; values fn reads from globals are not part of it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle


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
    digest.update(_stable_pickle(list(items)))
    return digest.hexdigest()


def _code_fingerprint(code: Any) -> bytes:
    """The code's instructions, names and constants (nested functions' too); not marshal's
    bytes, which depend on reference counts."""
    consts = [_code_fingerprint(c) if hasattr(c, "co_code")
              else repr(sorted(map(repr, c))).encode() if isinstance(c, frozenset)  # `in {..}`
              else repr(c).encode() for c in code.co_consts]
    return b"|".join([code.co_code, repr(code.co_names).encode(), *consts])


def _stable_pickle(value: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _SortedSetPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # lambdas, local classes: by value, stable within one process only
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.getvalue()


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
