"""A worker's batches run in their script's place: its sys.path, working directory and
environment variables.

The local cluster's workers outlive the scripts that use them, so each batch adopts its
script's context (sent with the call's environment) and drops what an earlier script's left:
a local module beside the script, a relative path in fn and os.environ in fn are the script's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING

from gpar.records import CallerContext

if TYPE_CHECKING:
    from envpack import ImageCheck

#: The script context this process last adopted, and its own sys.path and environment
#: variables from before the first: each batch starts from those, not from the last script's.
_adopted: CallerContext | None = None
_own: tuple[list[str], dict[str, str]] | None = None


def adopted_context() -> CallerContext | None:
    """The script context this worker's batch runs in: a nested call's batches adopt it too."""
    return _adopted


def adopt(context: CallerContext | None, image: ImageCheck | None) -> None:
    """Run this batch in the script's place: its sys.path first (after staged layers), its
    working directory, its environment variables (none of an earlier script's; Ray's RAY_*
    of this process kept).
    A batch of another script run first drops the local modules earlier ones loaded."""
    global _adopted, _own
    if context is None or context == _adopted:
        return
    from envpack import _boot
    from envpack.checks import forget_local_modules

    if _own is None:
        _own = (list(sys.path), dict(os.environ))
    if _adopted is None or _adopted.session != context.session:
        forget_local_modules(image.local_modules if image is not None else ())
    staged = _boot.staged_paths()
    sys.path[:] = [*staged, *(entry for entry in context.sys_path if entry not in staged),
                   *(entry for entry in _own[0] if entry not in context.sys_path
                     and entry not in staged)]
    importlib.invalidate_caches()
    with contextlib.suppress(OSError):
        os.chdir(context.cwd)
    environ = {**{name: value for name, value in _own[1].items() if name.startswith("RAY_")},
               **{name: value for name, value in context.environ.items()
                  if not name.startswith("RAY_")}}
    if environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)
        tempfile.tempdir = None  # found again from the script's TMPDIR
    _adopted = context
