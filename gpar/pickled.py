"""Sequences pickled so that an element that cannot be pickled, or unpickled, fails alone.

A batch's elements travel driver -> worker as one bytes object, and its values worker ->
driver. Plain values (numbers, strings, bytes: nothing runs to rebuild them) go as one pickle of
the whole sequence, the fast path. Any other sequence goes element by element:

    header (pickled alone: where each element's pickle ends, which were refused and why)
    body   one Pickler dumps each element in turn, its memo kept, so what elements share is
           written once and shared again when loaded

An element that cannot be pickled is left out of the body (and both sides start a fresh memo
after it); one that cannot be unpickled fails alone: loading goes on at the next element's
offset with what the elements before it made (an element that shares an object the failed one
left half-built fails too). Element by element costs ~1.1 µs an element
(ints, cloudpickle, here) against ~0.06 µs for the whole list, so plain sequences keep the
fast path.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

#: Types whose pickles rebuild nothing by calling code: they cannot fail to unpickle.
PLAIN_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})


class Failure(NamedTuple):
    """Why an element has no value: ``stage`` "pickle" (when sent) or "unpickle".
    ``value_type``: the element's type, known when it was refused. ``shared_with``: the
    position of the failed element it shares an object with, if that is why (else -1)."""

    stage: str
    exc_type: str
    message: str
    value_type: str = ""
    shared_with: int = -1


@dataclass(frozen=True)
class _Header:
    ends: array  # offset in the body where each element's pickle ends
    refused: dict[int, Failure]  # elements left out of the body
    buffer_ends: array  # with out-of-band buffers: how many there are after each element


def dumps(values: Sequence[Any], picklers: Sequence[type[pickle.Pickler]], protocol: int,
          buffers: list[pickle.PickleBuffer] | None = None) -> tuple[bytes, dict[int, Failure]]:
    """``values`` as bytes for ``loads``, and the positions that could not be pickled.

    Each of ``picklers`` is tried in turn on the whole sequence (pickle's own, at C speed,
    before cloudpickle's, which can pickle lambdas and __main__ classes by value). Given
    ``buffers``, large buffers are appended there, out of band (protocol 5).
    """
    if buffers is None and _plain(values):
        return pickle.dumps(values, protocol=protocol), {}
    for pickler in picklers:
        out_of_band: list[pickle.PickleBuffer] | None = None if buffers is None else []
        data, refused = _dumps_each(values, pickler, protocol, out_of_band)
        if not refused:
            break
    if buffers is not None:
        buffers.extend(out_of_band)
    return data, refused


def loads(data: bytes, buffers: Sequence[Any] = (),
          persistent_load: Callable[[Any], Any] | None = None,
          ) -> tuple[Sequence[Any], dict[int, Failure]]:
    """The values ``dumps`` wrote, None for each that has none, and why it has none.
    ``persistent_load``: what the pickler's persistent ids stand for (pickle's own hook)."""
    head = pickle.loads(data)  # the header alone, when one leads
    if not isinstance(head, _Header):
        return head, {}
    body_bytes = head.ends[-1] if head.ends else 0
    return _loads_each(memoryview(data)[len(data) - body_bytes:], head, buffers,
                       persistent_load)


def _plain(values: Sequence[Any]) -> bool:
    if isinstance(values, range):
        return True
    dtype = getattr(values, "dtype", None)  # a numpy array
    if dtype is not None:
        return not dtype.hasobject
    return set(map(type, values)) <= PLAIN_TYPES


def _dumps_each(values: Sequence[Any], pickler_class: type[pickle.Pickler], protocol: int,
                buffers: list[pickle.PickleBuffer] | None) -> tuple[bytes, dict[int, Failure]]:
    body = io.BytesIO()
    pickler = pickler_class(body, protocol=protocol,
                            buffer_callback=None if buffers is None else buffers.append)
    ends, buffer_ends, refused = array("q"), array("q"), {}
    for position, value in enumerate(values):
        try:
            pickler.dump(value)
        except Exception as exc:  # pickling raises anything
            refused[position] = Failure("pickle", type(exc).__name__, str(exc),
                                        type(value).__qualname__)
            body.seek(ends[-1] if ends else 0)
            body.truncate()
            if buffers is not None:
                del buffers[buffer_ends[-1] if buffer_ends else 0:]
            pickler.clear_memo()  # it may hold what was never written: start afresh
        ends.append(body.tell())
        if buffers is not None:
            buffer_ends.append(len(buffers))
    header = pickle.dumps(_Header(ends, refused, buffer_ends), protocol=protocol)
    return header + body.getvalue(), refused


def _loads_each(body: memoryview, header: _Header, buffers: Sequence[Any],
                persistent_load: Callable[[Any], Any] | None,
                ) -> tuple[list[Any], dict[int, Failure]]:
    values: list[Any] = []
    failures = dict(header.refused)
    starts = array("q", [0]) + header.ends[:-1]
    buffer_starts = array("q", [0]) + header.buffer_ends[:-1] if header.buffer_ends else None
    unpickler, segment = None, 0  # segment: the first element of the memo in use
    for position, (start, end) in enumerate(zip(starts, header.ends, strict=True)):
        if position in failures:  # refused: the sender started a fresh memo after it
            values.append(None)
            unpickler, segment = None, position + 1
            continue
        if unpickler is None:
            unpickler = pickle.Unpickler(io.BytesIO(body[start:]),
                                         buffers=_after(buffers, buffer_starts, position))
            if persistent_load is not None:
                unpickler.persistent_load = persistent_load
        try:
            values.append(unpickler.load())
        except Exception as exc:  # unpickling raises anything
            shared_with = exc.position if isinstance(exc, _SharedWithFailed) else -1
            failures[position] = Failure("unpickle", type(exc).__name__, str(exc),
                                         shared_with=shared_with)
            values.append(None)
            unpickler = _resumed(unpickler, body, starts[segment], start, end, position,
                                 _after(buffers, buffer_starts, position),
                                 _after(buffers, buffer_starts, position + 1), persistent_load)
    return values, failures


def _after(buffers: Sequence[Any], buffer_starts: array | None, position: int) -> Any:
    """The out-of-band buffers of the elements from ``position`` on."""
    if buffer_starts is None:
        return None
    return iter(buffers[buffer_starts[position]:] if position < len(buffer_starts) else ())


def _memoized(pickles: memoryview) -> int:
    """How many objects the pickles one after another in ``pickles`` memoize (protocol 4 and
    above memoize by count)."""
    stream, count = io.BytesIO(pickles), 0
    while stream.tell() < len(pickles):
        count += sum(opcode.name == "MEMOIZE" for opcode, _, _ in pickletools.genops(stream))
    return count


class _Hole(NamedTuple):
    """In a memo: an object the element at ``position`` failed to make."""

    position: int


class _SharedWithFailed(pickle.UnpicklingError):
    def __init__(self, position: int):
        super().__init__(f"it shares an object with element {position}, which could not be "
                         "unpickled")
        self.position = position


class _Holes(dict):
    """A memo with holes: getting one raises _SharedWithFailed."""

    def __getitem__(self, index: int) -> Any:
        value = dict.__getitem__(self, index)
        if type(value) is _Hole:
            raise _SharedWithFailed(value.position)
        return value


class _Resumed(pickle._Unpickler):
    """Python's own unpickler, whose memo can be a dict with holes (and whose stack can be
    read after a failure); ``size``: the memo's size, holes included.

    ``pickle._Unpickler`` is private: this relies on its ``memo``, ``stack``, ``metastack``,
    ``append`` and ``dispatch`` table as CPython 3.11 has them (tests/test_pickled.py fails if
    another version changes them)."""

    def __init__(self, file: io.BytesIO, memo: dict[int, Any], size: int, buffers: Any,
                 persistent_load: Callable[[Any], Any] | None, position: int = -1):
        super().__init__(file, buffers=buffers)
        if persistent_load is not None:
            self.persistent_load = persistent_load
        hole = _Hole(position)
        self.memo = _Holes({index: memo.get(index, hole) for index in range(size)})

    def _load_reduce(self) -> None:
        """REDUCE, with the callable off the stack while it runs: one that raises is whole,
        not half-built."""
        args = self.stack.pop()
        func = self.stack.pop()
        self.append(func(*args))

    dispatch = {**pickle._Unpickler.dispatch, pickle.REDUCE[0]: _load_reduce}


def _resumed(failed: Any, body: memoryview, segment_start: int, start: int, end: int,
             position: int, its_buffers: Any, later_buffers: Any,
             persistent_load: Callable[[Any], Any] | None) -> _Resumed:
    """An unpickler for the elements after the one at ``position``, ``body[start:end]``,
    that failed.

    Objects are memoized by count, so the memo keeps a place for each object the failed
    element made or would have made. It is loaded again by Python's unpickler, whose stack
    then holds what it left half-built: those, and what it never made, become holes (an
    element that refers to one fails too, rather than get another object); what it finished
    (a class, a helper function) is shared with later elements as usual.
    """
    before = _memoized(body[segment_start:start])
    memo = {index: value for index, value in failed.memo.copy().items() if index < before}
    again = _Resumed(io.BytesIO(body[start:end]), memo, before, its_buffers, persistent_load)
    try:
        again.load()
    except Exception:  # as before, most likely: its stack is what matters
        pass
    half_built = {id(each) for each in again.stack}
    half_built.update(id(each) for frame in again.metastack for each in frame)
    finished = {index: value for index, value in dict.items(again.memo)
                if index < before or id(value) not in half_built}  # earlier ones are whole
    return _Resumed(io.BytesIO(body[end:]), finished, before + _memoized(body[start:end]),
                    later_buffers, persistent_load, position)
