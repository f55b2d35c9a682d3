"""What makes two runs of apply() the same job: resuming an output (output.py) rests on it.

A digest of xs, the extra arguments, fn and what fn and its arguments reach (envpack/reach.py:
the globals their code loads, closures, defaults, classes and their members, ...), each object
in the order the walk gives and once (a cycle is marked, not followed). Functions count by their
code, a class of the caller's by its name, a reduce_sql Dataset by the version it opened,
anything else by value. Equal in any process that
makes the same call; a changed constant or helper makes another job, whose results an earlier
run's output must not stand in for. Globals reached only through ``globals()[name]`` are not
seen.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pickle
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from envpack import reach
from gpar.environment import callers_code

#: What holds nothing but references: it counts by its kind, its references by themselves.
_HOLDERS = (types.MethodType, functools.partial, staticmethod, classmethod, property)
#: Containers whose elements the walk follows (reach.py).
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def job_digest(items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict) -> str:
    """The job's digest (hex).

    Plain pickle where it can: it names classes and functions (a dataclass in __main__ too),
    while cloudpickle's by-value copies carry ids that differ from one process to the next.
    """
    digest = hashlib.sha256()
    digest.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    fingerprint = _Fingerprint(callers_code())
    for root in (fn, args, kwargs):
        digest.update(fingerprint(root))
    digest.update(_stable_pickle(list(items)))
    return digest.hexdigest()


class _Fingerprint:
    """Bytes that change when what a value does can change: the value's own, then each of its
    references' (reach.py: loaded globals only, no attribute counts as one); each object once.

    Walked with a stack of steps, not by recursion: an argument may nest as deep as pickle
    goes or deeper (a linked list of tuples, a tree of dicts). The bytes are written as the walk
    goes, not joined again at every level (only a set's elements are, to be sorted)."""

    def __init__(self, is_callers: Callable[[str], bool]):
        self.is_callers = functools.cache(is_callers)
        self.seen: dict[int, Any] = {}  # the values too: an id is unique while they live
        self.out: list[bytes] = []  # where bytes go now: the root's, or a set element's
        self.added: dict[int, Any] | None = None  # what a set element's walk added to seen
        self.steps: list[tuple[Callable[[Any], None], Any]] = []

    def __call__(self, value: Any) -> bytes:
        self.out = []
        self.steps.append((self._visit, value))
        while self.steps:
            step, argument = self.steps.pop()
            step(argument)
        return b"".join(self.out)

    def _visit(self, value: Any) -> None:
        if id(value) in self.seen:
            self.out.append(b"<again>")
            return
        self.seen[id(value)] = value
        if self.added is not None:
            self.added[id(value)] = value
        found = reach.references(value, self.is_callers, attributes=False)
        self.out.append(self._own(value, referring=bool(found)))
        if isinstance(value, set | frozenset) and len(found) > 1:  # one has no order to fix
            self._unordered(found)
        else:
            self.steps += [(self._follow, reference) for reference in reversed(found)]

    def _follow(self, reference: reach.Reference) -> None:
        self.out.append(b"|" + _named(reference))
        self._visit(reference.value)

    def _unordered(self, found: list[reach.Reference]) -> None:
        """A set's elements, sorted: they iterate in an order set by hashes, so each is
        fingerprinted as if it came first (an object two of them share is in full in both).
        What one element's walk adds to seen is taken out before the next, all put back after
        the last: the cost is each element's own walk, not a copy of seen each."""
        elements = _SetElements(out=self.out, added=self.added)
        self.steps.append((self._end_set, elements))
        for reference in reversed(found):
            self.steps += [(self._end_element, elements), (self._start_element, reference)]

    def _start_element(self, reference: reach.Reference) -> None:
        self.out, self.added = [_named(reference)], {}
        self._visit(reference.value)

    def _end_element(self, elements: _SetElements) -> None:
        elements.parts.append(b"".join(self.out))
        for key in self.added:
            del self.seen[key]
        elements.reached.update(self.added)
        self.out, self.added = elements.out, elements.added

    def _end_set(self, elements: _SetElements) -> None:
        self.out += [b"|", b"|".join(sorted(elements.parts))]
        self.seen.update(elements.reached)
        if self.added is not None:
            self.added.update(elements.reached)

    def _own(self, value: Any, referring: bool) -> bytes:
        if referring and type(value) in _CONTAINERS:  # those elements count as references
            return type(value).__qualname__.encode() + _pickled_atoms(value)
        if isinstance(value, types.FunctionType):
            return _code_fingerprint(value.__code__)
        if isinstance(value, _HOLDERS):
            return type(value).__qualname__.encode()
        if isinstance(value, type) and self.is_callers(value.__module__ or "__main__"):
            return value.__qualname__.encode()  # by value: cloudpickle's copy is not stable
        datasets = sys.modules.get("reduce_sql.dataset")  # none is made without it
        try:
            if datasets is not None and isinstance(value, datasets.Dataset):
                return _stable_pickle(value.version_key())  # not the keys it reads
            return _stable_pickle(value)
        except Exception:  # cannot be pickled: its type still counts
            return f"<{type(value).__module__}.{type(value).__qualname__}>".encode()


def _named(reference: reach.Reference) -> bytes:
    return f"{reference.kind} {reference.name}=".encode()


@dataclasses.dataclass(slots=True)
class _SetElements:
    """A set being fingerprinted: where its bytes go, its elements' bytes, what they reached."""

    out: list[bytes]
    added: dict[int, Any] | None  # the enclosing set element's, if the set is inside one
    parts: list[bytes] = dataclasses.field(default_factory=list)
    reached: dict[int, Any] = dataclasses.field(default_factory=dict)


def _pickled_atoms(container: Any) -> bytes:
    """A container with the elements that refer to anything (reach.py) left as None: what it
    holds itself, pickled once, its other elements fingerprinted as its references. Plain
    pickle where no set can be inside (the same bytes, several times faster: a deep nest
    pickles one container per level)."""
    if isinstance(container, set | frozenset):
        return _stable_pickle(frozenset(filter(reach.is_atom, container)))
    if isinstance(container, dict):
        atoms = {key: _atom_or_none(value) for key, value in container.items()}
        return pickle.dumps(atoms, 5) if all(map(reach.is_atom, atoms)) else _stable_pickle(atoms)
    return pickle.dumps([_atom_or_none(value) for value in container], 5)


def _atom_or_none(value: Any) -> Any:
    return value if reach.is_atom(value) else None


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
