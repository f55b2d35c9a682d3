"""Values a batch sends back: pickled apart from its message, so that one that cannot be
pickled fails its element alone (its error takes its place), at C speed where pickle can.
"""

from __future__ import annotations

import copyreg
import functools
import operator
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import cloudpickle

from gpar import pickled
from gpar.records import ElementError

#: Values go back with pickle protocol 4: protocol 5 rebuilds a read-only array read-only, and
#: a value that is a view of a global or an argument is one (fn receives large arrays
#: read-only, environment.py); the caller gets ordinary writable arrays, as from a for loop.
VALUES_PROTOCOL = 4


def _keeping_byte_order(pickler: type[pickle.Pickler]) -> type[pickle.Pickler]:
    """``pickler``, but a numpy array of the other byte order comes back in it: protocol 4
    rebuilds one native ('>f8' became '<f8'), where a for loop keeps it. A dispatch table
    entry: looked up for arrays only, after pickle's own fast paths."""
    import numpy as np

    def reduce_array(array: Any) -> Any:
        if array.dtype.isnative:
            return array.__reduce_ex__(VALUES_PROTOCOL)
        native = array.astype(array.dtype.newbyteorder("="))
        return operator.methodcaller("astype", array.dtype), (native,)

    own = getattr(pickler, "dispatch_table", None)  # cloudpickle's; pickle's C class has none
    table = {**(own if isinstance(own, Mapping) else copyreg.dispatch_table),
             np.ndarray: reduce_array}
    return type(pickler.__name__, (pickler,), {"dispatch_table": table})


@functools.cache
def _value_picklers(numpy_loaded: bool) -> tuple[type[pickle.Pickler], ...]:
    """pickle's, then cloudpickle's (for what pickle refuses), each keeping the byte order of
    numpy's arrays once numpy is loaded (a worker may have none: no array to return then)."""
    picklers = (pickle.Pickler, cloudpickle.Pickler)
    return tuple(map(_keeping_byte_order, picklers)) if numpy_loaded else picklers


def pickle_values(
    values: list[Any], errors: dict[int, ElementError], done_from: int
) -> tuple[bytes, dict[int, ElementError]]:
    """Pickle values apart from the message; one that cannot be pickled becomes its error.

    Plain pickle first: it runs at C speed, while cloudpickle calls back into Python for every
    object (~10 ms for 20,000 ints here); cloudpickle only for what pickle refuses (__main__
    classes, lambdas).
    """
    data, refused = pickled.dumps(values, _value_picklers("numpy" in sys.modules),
                                  VALUES_PROTOCOL)
    if not refused:
        return data, errors
    return data, {**errors, **{done_from + position: ElementError(
        failure.exc_type,
        f"fn returned a {failure.value_type} that cannot be pickled: {failure.message}",
        "", "result", True) for position, failure in refused.items()}}
