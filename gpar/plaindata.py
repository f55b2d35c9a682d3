"""Large globals of plain data, unpickled once per worker and copied for each batch.

A script's globals often hold its input or lookup tables as lists, dicts or sets of numbers and
strings (``xs = list(range(100_000))``). Each batch gets the caller's globals afresh, so what fn
mutates stays in that batch; unpickling such a list anew costs ~3.7 ms per 100,000 ints here,
and a call runs several batches on each worker. A shallow copy of the list is the same fresh
list for fn (its items cannot change) at ~0.1 ms.

    caller: the globals that qualify pickled together in one plain pickle, the *template*, sent
            as an out-of-band buffer (so the cluster holds it by content, envcache.py); every
            reference to one of them in the call's stream (the global itself, fn's globals, a
            closure, a dict that holds it) is a persistent id naming it
    worker: the template unpickled once (kept for the next batch of the same content), each
            batch's references resolved to that batch's copies: one copy per global, so what
            shares it in the caller shares it in the batch

What qualifies: a list, dict or set (copied per batch) or a tuple or frozenset (immutable:
shared) of at least TEMPLATE_MIN_ITEMS items, each an int, float, complex, str, bytes, bool or
None, bound to one global name (two names for one list keep it in the stream; other objects
may refer to it).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Hashable
from typing import Any

from gpar import envcache
from gpar.pickled import PLAIN_TYPES

#: Globals with fewer items stay in the call's stream: unpickling them costs less than ~40 us.
TEMPLATE_MIN_ITEMS = 1_000

_COPIED = (list, dict, set)
_SHARED = (tuple, frozenset)


def qualifying(namespace: dict[str, Any]) -> dict[int, str]:
    """The globals of ``namespace`` that go in the template: id of the value -> its name (one
    name each: a value named twice is left in the stream)."""
    found: dict[int, str] = {}
    named_twice: set[int] = set()
    for name, value in namespace.items():
        kind = type(value)
        if (kind in _COPIED or kind in _SHARED) and len(value) >= TEMPLATE_MIN_ITEMS:
            if id(value) in found:
                named_twice.add(id(value))
            elif _plain_items(value):
                found[id(value)] = name
    for twice in named_twice:
        del found[twice]
    return found


def _plain_items(value: Any) -> bool:
    if type(value) is dict:
        return (set(map(type, value)) <= PLAIN_TYPES
                and set(map(type, value.values())) <= PLAIN_TYPES)
    return set(map(type, value)) <= PLAIN_TYPES


def template(namespace: dict[str, Any], names: dict[int, str]) -> pickle.PickleBuffer:
    """The qualifying globals, pickled at C speed (plain data needs no cloudpickle)."""
    values = {name: namespace[name] for name in names.values()}
    return pickle.PickleBuffer(pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))


def referring(pickler: type[pickle.Pickler], names: dict[int, str]) -> type[pickle.Pickler]:
    """``pickler``, writing each qualifying global as a persistent id: its name."""

    def persistent_id(self: pickle.Pickler, obj: Any) -> str | None:
        return names.get(id(obj))

    return type(pickler.__name__, (pickler,), {"persistent_id": persistent_id})


#: A worker's last template: (what names its content, its values). One, as a worker runs one
#: batch at a time (calls of several scripts alternating on it unpickle theirs again); dropped
#: once the worker is idle (forget).
_kept: tuple[Hashable, dict[str, Any]] | None = None
_keeping = threading.Lock()  # the batch's thread and the idle timer's


def resolver(buffers: list[Any], identity: Hashable = None) -> Callable[[str], Any]:
    """What a worker's unpickler calls for a persistent id: the batch's copy of the global it
    names, the template being the first of the stream's ``buffers`` (capture puts it there).
    ``identity``: what names the buffers' content for good, if anything does (else the
    template's digest is taken)."""
    copies: dict[str, Any] = {}

    def persistent_load(name: str) -> Any:
        if not copies:
            key = None if identity is None else identity[0]
            for each, value in _values(buffers[0], key).items():
                copies[each] = value.copy() if type(value) in _COPIED else value
        return copies[name]

    return persistent_load


def forget() -> None:
    """Drop the kept template."""
    global _kept
    with _keeping:
        _kept = None


def _values(buffer: Any, key: Hashable) -> dict[str, Any]:
    global _kept
    view = memoryview(buffer).cast("B")
    with _keeping:
        if key is None:
            key = envcache.digest(view)
        kept = _kept
        if kept is None or kept[0] != key:
            kept = _kept = (key, pickle.loads(view))
        return kept[1]
