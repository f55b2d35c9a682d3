"""apply() inside fn: the same cluster, and no deadlock when parents hold every CPU."""

import pytest

import gpar

pytestmark = pytest.mark.usefixtures("cluster")


def child(x):
    return x * 10


def parent(x):
    return sum(gpar.apply(range(4), child, progress=False)) + x


def test_more_parents_than_cpus_each_running_a_nested_apply_finish():
    parents = 6  # the session cluster has 2 CPUs: every slot is held by a waiting parent
    results = gpar.apply(range(parents), parent, max_workers=parents, progress=False)
    assert results == [60 + x for x in range(parents)]
