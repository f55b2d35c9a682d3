"""The calling environment's buffers, held by the cluster by content across calls.

    ship (the caller) ─▶ a digest of each out-of-band buffer (xxh3, ~30 GB/s: every call hashes
                         what it would ship, so a change in place is always seen)
                      ─▶ tasks.missing(digests): those the cluster does not hold
                      ─▶ tasks.put_environment(stream, digests, the missing buffers, context)
    BufferCache (where Ray is attached: this process, or the local cluster's server for all
    its scripts) ─▶ the buffers a call sent, put as one pack; the environment refers to
                    (pack, position) for each of its buffers
    worker ─▶ placed(): one get per pack

A pack stays while calls use any of its buffers, least recently used evicted once the cache
holds more than its bound; a running job's environment keeps its packs alive whatever the
cache does (Ray counts the references it holds). The digest is over all of a call's buffers,
whatever their size: a thousand 80 KB arrays are kept as one 80 MB array is.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: What the cache may hold, in bytes of buffers (GPAR_ENV_CACHE_BYTES overrides): past it,
#: the packs least recently used are dropped. A call's own buffers are kept even when they
#: alone are more: its tasks need them.
DEFAULT_BOUND_BYTES = 2 * 2**30


class NotHeld(LookupError):
    """Buffers the cache no longer holds (evicted since ``missing`` was asked): send them."""


def digest(array: Any) -> str:
    """The content digest of a buffer (a uint8 array): xxh3, imported here, where a call is
    made; a worker that lacks xxhash (a nested call on a cluster gpar was shipped to) uses
    blake2b, ~30 x slower, which only misses the cache of the other's digests."""
    try:
        import xxhash
    except ImportError:
        return hashlib.blake2b(array, digest_size=16).hexdigest()
    return xxhash.xxh3_128_hexdigest(array)


@dataclass
class _Pack:
    ref: Any  # Ray's reference to the list of buffers put together
    digests: list[str]
    nbytes: int


@dataclass
class BufferCache:
    """Buffers in Ray's object store by digest; ``put`` stores an object (ray.put)."""

    put: Callable[[Any], Any]
    bound_bytes: int = field(default_factory=lambda: int(
        os.environ.get("GPAR_ENV_CACHE_BYTES", DEFAULT_BOUND_BYTES)))
    nbytes: int = 0
    _packs: OrderedDict[int, _Pack] = field(default_factory=OrderedDict)  # oldest use first
    _where: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> pack, position
    _numbers: Any = field(default_factory=lambda: iter(range(1 << 62)))
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the server's sessions

    def missing(self, digests: Sequence[str]) -> list[str]:
        """Those of ``digests`` not held, each once; those held count as used now."""
        with self._lock:
            absent = []
            for each in dict.fromkeys(digests):
                where = self._where.get(each)
                if where is None:
                    absent.append(each)
                else:
                    self._packs.move_to_end(where[0])
            return absent

    def placed(self, digests: Sequence[str], given: dict[str, Any]) -> list[tuple[Any, int]]:
        """(pack reference, position) of each digest, the ``given`` buffers put first as one
        pack; NotHeld if one is neither held nor given. Packs this call does not need go
        while the cache holds more than its bound (an earlier call may have left it over)."""
        with self._lock:
            keep = set(digests)
            if given:
                self._add(list(given), list(given.values()), keep)
            self._evict(self.bound_bytes, keep)
            absent = [each for each in digests if each not in self._where]
            if absent:
                raise NotHeld(absent)
            placed = []
            for each in digests:
                number, position = self._where[each]
                self._packs.move_to_end(number)
                placed.append((self._packs[number].ref, position))
            return placed

    def status(self) -> dict[str, int]:
        with self._lock:
            return {"env_cache_bytes": self.nbytes, "env_cache_buffers": len(self._where),
                    "env_cache_bound_bytes": self.bound_bytes}

    def _add(self, digests: list[str], arrays: list[Any], keep: set[str]) -> None:
        nbytes = sum(array.nbytes for array in arrays)
        self._evict(self.bound_bytes - nbytes, keep)
        number = next(self._numbers)
        self._packs[number] = _Pack(self.put(arrays), digests, nbytes)
        self.nbytes += nbytes
        for position, each in enumerate(digests):
            self._where[each] = (number, position)

    def _evict(self, room_bytes: int, keep: set[str]) -> None:
        """Drop the packs least recently used until the cache holds ``room_bytes`` at most,
        but none that holds a buffer of ``keep`` (the call being shipped)."""
        for number, pack in list(self._packs.items()):
            if self.nbytes <= room_bytes:
                return
            if keep.isdisjoint(pack.digests):
                del self._packs[number]
                self.nbytes -= pack.nbytes
                for each in pack.digests:
                    if self._where.get(each, (None,))[0] == number:
                        del self._where[each]


_caches: dict[str, BufferCache] = {}
_caches_lock = threading.Lock()


def cache_for(connection_id: str) -> BufferCache:
    """The cache of the Ray cluster this process is attached to (one per process: Ray's
    objects belong to the process that put them); one of an earlier cluster is dropped."""
    import ray

    with _caches_lock:
        cache = _caches.get(connection_id)
        if cache is None:
            _caches.clear()
            cache = _caches[connection_id] = BufferCache(ray.put)
        return cache


def ship(tasks: Any, stream: bytes, buffers: list[pickle.PickleBuffer],
         context: Any) -> tuple[Any, int]:
    """The environment stored on the cluster, sending only the buffers it lacks: (its
    reference, the bytes sent)."""
    import numpy as np

    arrays = [np.frombuffer(buffer.raw(), dtype=np.uint8) for buffer in buffers]
    digests = [digest(array) for array in arrays]
    by_digest = dict(zip(digests, arrays, strict=True))
    missing = tasks.missing(digests) if digests else []
    try:
        ref = tasks.put_environment(stream, digests, {each: by_digest[each] for each in missing},
                                    context)
    except NotHeld:  # evicted since (another script's call): send them all
        missing = list(by_digest)
        ref = tasks.put_environment(stream, digests, by_digest, context)
    return ref, len(stream) + sum(by_digest[each].nbytes for each in missing)


def resolve(placed: Sequence[tuple[Any, int]]) -> list[Any]:
    """On a worker: the buffers of an environment, one get per pack."""
    if not placed:
        return []
    import ray

    refs = list(dict.fromkeys(ref for ref, _ in placed))
    packs = dict(zip(refs, ray.get(refs), strict=True))
    return [packs[ref][position] for ref, position in placed]
