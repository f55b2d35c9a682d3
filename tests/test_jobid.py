"""A job's identity (gpar/jobid.py): what makes a re-run the same job, so it resumes its output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gpar
import reduce_sql

DIGEST_SCRIPT = """
import dataclasses
import functools
from gpar.jobid import job_digest

@dataclasses.dataclass(frozen=True)
class Draw:
    realization: int

KEPT = {"a", "b", "c"}  # a global fn reads, also iterated in an order set by string hashes

class Weights:
    NAMES = {"x", "y"}
    def __init__(self, k):
        self.k = k
    def weigh(self, value):
        return value * self.k

weigh = Weights(2).weigh  # a bound method: the instance it is bound to counts

@functools.lru_cache
def kept(draw):
    return draw.realization in KEPT

def fn(draw, scale=2):
    if draw.realization in {1, 2, 3} and kept(draw):
        return weigh(draw.realization * scale)
    return 0

def weight(row):
    return len(KEPT) * row

columns = {f"column_{i}" for i in range(10)}  # iterated in an order set by string hashes
chain = frozenset((f"row_{i}", weight) for i in range(20))  # elements share a function...
for i in range(5000):  # ...at the end of a linked list deeper than a recursive walk goes
    chain = (i, chain)
print(job_digest([Draw(r) for r in range(3)], fn, (), {"scale": 3, "columns": columns,
                                                       "nested": [frozenset(columns)],
                                                       "chain": chain}))
"""


def test_the_same_job_has_the_same_digest_in_another_process(tmp_path):
    (tmp_path / "job.py").write_text(DIGEST_SCRIPT)
    checkout = os.path.dirname(os.path.dirname(gpar.__file__))  # this gpar, not one installed
    environment = {**os.environ, "PYTHONPATH": checkout}
    digests = {subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True,
                              text=True, check=True, env={**environment, "PYTHONHASHSEED": seed}
                              ).stdout for seed in ("1", "2")}
    assert len(digests) == 1  # so a re-run in a new process resumes


SCALE = 1


def helper(x):
    return x * 10


def reads_globals(x):
    return {"x": [helper(x) * SCALE]}


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return {"x": [x * self.k]}


def make_scaler(k):
    return lambda x: x * k


def test_a_changed_global_or_helper_fn_reads_is_another_job(monkeypatch):
    """Resuming rests on the digest: an output computed with SCALE = 1 must not stand in for
    a run with SCALE = 10."""
    from gpar.jobid import job_digest

    def digest(fn=reads_globals):
        return job_digest([1, 2], fn, (), {})

    before = digest()
    monkeypatch.setitem(globals(), "SCALE", 10)
    after_scale = digest()
    monkeypatch.setitem(globals(), "helper", lambda x: x + 10)
    after_helper = digest()
    assert len({before, after_scale, after_helper}) == 3
    assert digest() == after_helper  # and the same call is the same job

    offset = 3
    closure = lambda x: x + offset  # noqa: E731
    first = digest(closure)
    offset = 4
    assert digest(closure) != first
    assert digest(Scaler(1).apply) != digest(Scaler(2).apply)  # the instance counts
    monkeypatch.setitem(globals(), "helper", make_scaler(1))  # a helper a factory made
    first = digest()
    monkeypatch.setitem(globals(), "helper", make_scaler(2))
    assert digest() != first


@pytest.mark.usefixtures("cluster")
def test_an_output_another_job_wrote_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "SCALE", 1)
    gpar.apply([1, 2], reads_globals, output=tmp_path / "out", progress=False)
    monkeypatch.setitem(globals(), "SCALE", 2)
    with pytest.raises(reduce_sql.OutputExistsError, match="another job"):
        gpar.apply([1, 2], reads_globals, output=tmp_path / "out", progress=False)


@pytest.mark.usefixtures("cluster")
def test_a_dataset_fn_uses_counts_by_its_version_not_its_keys_or_report(tmp_path):
    """Stage two's job depends on which version of stage one's output its fn queries; the
    keys that read it rotate (a session token) and the report differs from run to run."""
    import dataclasses

    from gpar.jobid import job_digest
    from reduce_sql.store import locate

    returned = gpar.apply(range(2), lambda i: {"x": [i]}, output=tmp_path / "evals",
                          progress=False)
    location = locate(tmp_path / "evals")

    def digest(dataset: reduce_sql.Dataset) -> str:
        return job_digest([0], lambda i: dataset.num_rows, (), {})

    plain = reduce_sql.Dataset(location)
    with_keys = reduce_sql.Dataset(dataclasses.replace(
        location, s3_options=(("session_token", "rotated"),)))
    spelled_otherwise = reduce_sql.Dataset(f"{tmp_path}/./evals/")
    assert digest(plain) == digest(with_keys) == digest(spelled_otherwise) == digest(returned)
    gpar.apply(range(2), lambda i: {"x": [i + 1]}, output=tmp_path / "evals", overwrite=True,
               progress=False)
    assert digest(reduce_sql.Dataset(location)) != digest(plain)


class Node:
    """Hashable by identity, as an analyst's objects are."""


def test_a_job_with_other_set_members_is_another_job():
    from gpar.jobid import job_digest

    def digest(columns):
        return job_digest([1, 2], abs, (), {"columns": columns})

    assert digest({"a", "b"}) == digest({"b", "a"}) != digest({"a", "c"})
    assert digest(frozenset({"a"})) != digest({"a"})

    node = Node()
    node.peers = {node, "x"}  # a set one of whose elements refers back to it
    assert digest(node.peers) == deeper(100, lambda: digest(node.peers))  # no recursion limit


def deeper(frames: int, call):
    return call() if frames == 0 else deeper(frames - 1, call)


def nested(depth: int, innermost, wrap):
    value = innermost
    for _ in range(depth):
        value = wrap(value)
    return value


@pytest.mark.parametrize("wrap", [lambda value: [value], lambda value: {"child": value}],
                         ids=["list", "dict"])
def test_an_argument_nested_deeper_than_python_recurses_is_fingerprinted(wrap):
    """A tree of dicts or a linked list may nest deeper than a recursive walk goes (330 levels,
    where pickle goes to 500 or more): the job's identity sets no depth of its own, and still
    sees the innermost value."""
    from gpar.jobid import job_digest

    digests = {job_digest(range(3), reads_globals, (nested(100_000, innermost, wrap),), {})
               for innermost in ([1], [2])}
    assert len(digests) == 2


class CountedSeen(dict):
    """A fingerprint's ``seen``, counting the entries read, written and removed (``__iter__``
    too, so that even copying it is counted)."""

    touched = 0

    def __contains__(self, key):
        self.touched += 1
        return super().__contains__(key)

    def __getitem__(self, key):
        self.touched += 1
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        self.touched += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self.touched += 1
        super().__delitem__(key)

    def __iter__(self):
        self.touched += len(self)
        return super().__iter__()

    def update(self, values):
        self.touched += len(values)
        super().update(values)


def test_a_large_set_costs_what_its_elements_reach_not_what_was_seen_before():
    """Each element of a set is fingerprinted as if it came first: that must cost the
    element's own walk, not a copy of everything fn reached before it, once per element."""
    from gpar.environment import callers_code
    from gpar.jobid import _Fingerprint

    def touched(seen_before: int, size: int) -> int:
        fingerprint = _Fingerprint(callers_code())
        fingerprint.seen = seen = CountedSeen()
        fingerprint([(i, helper) for i in range(seen_before)])  # fn reaches many objects
        seen.touched = 0
        fingerprint(frozenset((f"row_{i}", helper, reads_globals) for i in range(size)))
        return seen.touched

    assert touched(5000, 1000) == touched(10, 1000)
    assert touched(5000, 2000) <= 2.01 * touched(5000, 1000)
