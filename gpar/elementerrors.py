"""An element's failure on a worker as the ElementError the driver reads: text, since the
exception's class may not exist, or unpickle, there."""

from __future__ import annotations

import traceback

from gpar import pickled
from gpar.records import ElementError, ErrorKind


def input_error(failure: pickled.Failure) -> ElementError:
    """Why an element never reached fn: the caller's value, so retrying cannot help."""
    if failure.stage == "pickle":
        message = (f"the element, a {failure.value_type}, cannot be pickled to send it to a "
                   f"worker: {failure.message}. Pass elements that pickle: make files, locks "
                   "and connections inside fn from plain values")
    else:
        message = (f"the element could not be unpickled on the worker: {failure.message}. "
                   "Is the module its class comes from importable there?")
    return ElementError(failure.exc_type, message, "", "input", retryable=False)


def element_error(exc: BaseException, kind: ErrorKind, retryable: bool) -> ElementError:
    """An exception as text: its class may not exist, or unpickle, on the driver."""
    kind_of = type(exc)
    exc_type = kind_of.__qualname__
    if kind_of.__module__ not in ("builtins", "__main__"):
        exc_type = f"{kind_of.__module__}.{exc_type}"
    try:
        message = str(exc)
    except Exception as str_error:
        message = f"<str() of the exception failed: {str_error!r}>"
    tb = "".join(traceback.format_exception(exc))
    return ElementError(exc_type, message, tb, kind, retryable)
