"""The calling environment's small buffers as each batch's own writable copies, copied on write.

Arrays under SHARED_MIN_BYTES reach fn writable and each batch's own, as a list would
(environment.py). Copying them for every batch cost what the batch itself did not: 80 MB of
kept results (a thousand 80 KB arrays in a global) took 15 ms a batch to copy here, for fn
calls that never read them. So a worker writes a call's small buffers once into a file of its
own (memory-backed where the system has memfd), and each batch maps that file copy-on-write
(mmap's ACCESS_COPY): pages are copied by the kernel only when the batch writes them, and a
write never reaches the file, the next batch or another process.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections.abc import Hashable, Sequence

from gpar import envcache

#: Each buffer starts at a multiple of this in the file (Arrow's alignment; more than any
#: numpy dtype needs).
ALIGN = 64

#: The file of the last call's buffers: (what names their content, its descriptor, each one's
#: offset). One, as a worker runs one batch at a time (calls of several scripts alternating on
#: it write theirs again); dropped once the worker is idle (forget).
_kept: tuple[Hashable, int, list[int]] | None = None
_keeping = threading.Lock()  # the batch's thread and the idle timer's


def private_views(views: Sequence[memoryview], identity: Hashable = None) -> list[memoryview]:
    """Writable views of ``views``' bytes that only this batch sees (bytes views, "B").
    ``identity`` names their content for good (a worker's object references: hashing 80 MB
    took 6-8 ms here); without one, their digests do."""
    global _kept
    if not views:
        return []
    if identity is None:
        identity = tuple(map(envcache.digest, views))
    with _keeping:
        if _kept is None or _kept[0] != identity:
            forget_unlocked()
            _kept = (identity, *_written(views))
        _, descriptor, offsets = _kept
        mapped = mmap.mmap(descriptor, _size(views, offsets), access=mmap.ACCESS_COPY)
    whole = memoryview(mapped)
    return [whole[offset:offset + view.nbytes] for view, offset in zip(views, offsets,
                                                                           strict=True)]


def forget() -> None:
    """Close the kept file (its pages go once no batch maps them)."""
    with _keeping:
        forget_unlocked()


def forget_unlocked() -> None:
    global _kept
    kept, _kept = _kept, None
    if kept is not None:
        os.close(kept[1])


def _written(views: Sequence[memoryview]) -> tuple[int, list[int]]:
    """A new file holding ``views``: its descriptor, and where each starts."""
    offsets, end = [], 0
    for view in views:
        offsets.append(end)
        end += -(-view.nbytes // ALIGN) * ALIGN
    descriptor = _anonymous_file()
    try:
        os.ftruncate(descriptor, max(end, 1))
        with mmap.mmap(descriptor, max(end, 1)) as shared:
            for view, offset in zip(views, offsets, strict=True):
                shared[offset:offset + view.nbytes] = view
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, offsets


def _anonymous_file() -> int:
    """A file no path names: in memory where the system has memfd, else unlinked at once."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("gpar-batch-copies", os.MFD_CLOEXEC)
    descriptor, path = tempfile.mkstemp(prefix="gpar-batch-copies-")
    os.unlink(path)
    return descriptor


def _size(views: Sequence[memoryview], offsets: list[int]) -> int:
    return max(offsets[-1] + views[-1].nbytes, 1)
