"""The calling environment's buffers held by content (gpar/envcache.py), without Ray: a put
that keeps what it is given, and calls as scripts would make them."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpar import envcache


class Store:
    """Ray's object store as the cache sees it: put keeps an object under a new reference."""

    def __init__(self):
        self.objects = {}

    def put(self, value):
        ref = f"ref{len(self.objects)}"
        self.objects[ref] = value
        return ref


class Tasks:
    """The cluster side of ship() over one cache, as RayTasks is."""

    def __init__(self, cache, store):
        self.cache, self.store = cache, store

    def missing(self, digests):
        return self.cache.missing(digests)

    def put_environment(self, stream, digests, given, context):
        placed = self.cache.placed(digests, given)
        return [self.store.objects[ref][position] for ref, position in placed]


def buffers_of(*arrays):
    return [pickle.PickleBuffer(array) for array in arrays]


def test_what_the_cluster_holds_is_not_sent_again_and_a_change_is():
    store = Store()
    tasks = Tasks(envcache.BufferCache(store.put, bound_bytes=10**9), store)
    big = np.arange(1000, dtype=np.float64)
    shipped, sent = envcache.ship(tasks, b"s", buffers_of(big), None)
    assert sent == 1 + 8000 and bytes(shipped[0]) == big.tobytes()
    assert envcache.ship(tasks, b"s", buffers_of(big), None)[1] == 1  # held: only the stream
    big[3] = -1.0  # in place: another content
    shipped, sent = envcache.ship(tasks, b"s", buffers_of(big), None)
    assert sent == 1 + 8000 and bytes(shipped[0]) == big.tobytes()


def test_buffers_evicted_between_asking_and_placing_are_sent_then():
    """Another script's call evicts what this one was told is held: it sends all again."""
    store = Store()
    cache = envcache.BufferCache(store.put, bound_bytes=10_000)
    tasks = Tasks(cache, store)
    mine, theirs = np.ones(1000), np.zeros(1000)  # 8,000 bytes each: one fits
    envcache.ship(tasks, b"s", buffers_of(mine), None)

    class Evicting(Tasks):
        def missing(self, digests):
            absent = super().missing(digests)
            cache.placed([envcache.digest(np.frombuffer(theirs, np.uint8))],
                         {envcache.digest(np.frombuffer(theirs, np.uint8)):
                          np.frombuffer(theirs, np.uint8)})  # meanwhile, another caller's
            return absent

    shipped, sent = envcache.ship(Evicting(cache, store), b"s", buffers_of(mine), None)
    assert sent == 1 + 8000 and bytes(shipped[0]) == mine.tobytes()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=4), min_size=1,
                max_size=12))
def test_each_call_gets_its_own_contents_and_the_cache_keeps_to_its_bound(calls):
    """Calls of up to four of eight possible 4 KB buffers, through a cache that holds three:
    every call's buffers come back with their content, and after each call the cache holds
    no more than its bound but for packs that call needs."""
    store = Store()
    cache = envcache.BufferCache(store.put, bound_bytes=3 * 4096)
    tasks = Tasks(cache, store)
    contents = [np.full(512, float(k)) for k in range(8)]  # 4,096 bytes each
    for call in calls:
        shipped, _ = envcache.ship(tasks, b"s", buffers_of(*(contents[k] for k in call)), None)
        assert [bytes(each) for each in shipped] == [contents[k].tobytes() for k in call]
        needed = {envcache.digest(np.frombuffer(contents[k], np.uint8)) for k in call}
        over = [pack for pack in cache._packs.values() if needed.isdisjoint(pack.digests)]
        assert cache.nbytes <= cache.bound_bytes or not over


def test_a_worker_resolves_each_pack_once():
    import ray

    got = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray, "get", lambda refs: got.append(list(refs)) or [["a", "b"], ["c"]])
        assert envcache.resolve([("p", 1), ("q", 0), ("p", 0)]) == ["b", "c", "a"]
    assert got == [["p", "q"]]
