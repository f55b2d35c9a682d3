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


def streaming_parent(x):
    """A job submitted, and a stream read, inside fn: their loops run in threads of the
    worker, whose Ray calls go through the task's main thread."""
    job = gpar.submit(range(3), child, progress=False)
    streamed = sum(gpar.imap((i for i in range(4)), child, progress=False))
    return job.result() + [streamed + x]


def test_submit_and_imap_inside_fn_finish_when_parents_hold_every_cpu():
    results = gpar.apply(range(4), streaming_parent, max_workers=4, progress=False)
    assert results == [[0, 10, 20, 60 + x] for x in range(4)]
