"""Sequences pickled element by element: one element that cannot be pickled or unpickled fails
alone, and what elements share is still shared. No Ray."""

import pickle

import cloudpickle

from gpar import pickled


def fail_to_rebuild(*args):
    raise ValueError("cannot rebuild")


class NotRebuilt:
    def __reduce__(self):
        return fail_to_rebuild, ()


class NotPickled:
    def __reduce__(self):
        raise TypeError("refuses to be pickled")


class Record:
    def __init__(self, value):
        self.value = value

    def __setstate__(self, state):
        if state["value"] == "bad":
            raise ValueError("bad state")
        self.__dict__.update(state)


def round_trip(values, buffers=None):
    data, refused = pickled.dumps(values, (cloudpickle.Pickler,), 5, buffers)
    loaded, failures = pickled.loads(data, buffers or ())
    return loaded, failures, refused


def test_each_element_fails_alone_and_shared_objects_stay_shared():
    shared = {"rows": [1, 2]}
    values = [(0, shared), (shared, NotRebuilt()), (2, shared), NotPickled(), (4, shared),
              lambda: 5]
    loaded, failures, refused = round_trip(values)
    assert loaded[0] == (0, shared) and loaded[2][1] is loaded[0][1]
    assert loaded[4] == (4, shared) and loaded[5]() == 5
    assert loaded[1] is None and failures[1][:3] == ("unpickle", "ValueError", "cannot rebuild")
    assert refused == {3: pickled.Failure("pickle", "TypeError", "refuses to be pickled",
                                          "NotPickled")}
    assert failures[3] == refused[3]


def test_an_element_sharing_what_a_failed_one_left_half_built_fails_too():
    bad = Record("bad")
    loaded, failures, _ = round_trip([Record(1), bad, [bad], Record(3)])
    assert loaded[0].value == 1 and loaded[3].value == 3  # the class itself stays shared
    assert failures[1].message == "bad state"
    assert "shares an object" in failures[2].message


def test_plain_sequences_are_one_pickle():
    data, _ = pickled.dumps(list(range(5)), (cloudpickle.Pickler,), 5)
    assert pickle.loads(data) == list(range(5))


def test_out_of_band_buffers_follow_their_elements():
    import numpy as np

    buffers = []
    values = [np.ones(3), NotRebuilt(), np.zeros(2)]
    loaded, failures, _ = round_trip(values, buffers)
    assert len(buffers) == 2 and list(failures) == [1]
    assert loaded[0].tolist() == [1, 1, 1] and loaded[2].tolist() == [0, 0]
