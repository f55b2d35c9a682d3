"""Each worker's note of where it is: which batch, and which element is in fn.

A worker process keeps three integers (job, batch, where) in a small file it maps into memory
(MAP_SHARED, on /dev/shm where there is one). A store costs ~20 ns, so the element loop writes
``where`` before each element: a message per element would cost ~0.2 ms. What a process wrote
stays in the file when it dies (a segfault, an OOM kill, os._exit), so when a batch is lost the
driver reads it, on the worker's node, and charges the element that was in fn, however soon
after it started the worker died. A lost node takes its notes with it.

``where``: the position of the element in fn, or ``records.between_elements(n)`` when the
batch's first n elements had finished and none is in fn (before the first, between two, after
the last).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gpar.records import between_elements

#: Notes of dead workers are removed when a worker starts, once this old (their worker started
#: that long ago): younger ones may be a lost batch's that the driver has not read yet.
KEEP_S = 24 * 3600.0

_JOB, _BATCH, _WHERE = range(3)
_BYTES = 8 * 3

_note = None  # this process's note, once a batch has run here


def directory() -> Path:
    """Where a node's notes are: the same path on every node, private to the user."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return Path(root) / f"gpar-notes-{os.getuid()}"


def begin(job: int, batch: int) -> memoryview:
    """This process's note, now of ``batch`` of ``job``: the element loop stores ``where`` at
    ``[2]``."""
    global _note
    if _note is None:
        _note = _open() or scratch()  # where none can be written, batches go unnamed
    _note[_WHERE] = between_elements(0)
    _note[_JOB], _note[_BATCH] = job, batch
    return _note


def scratch() -> memoryview:
    """A note no one reads: for a batch run without a name (tests, direct calls)."""
    return memoryview(bytearray(_BYTES)).cast("q")


def read(job: int, batch: int) -> int | None:
    """``where`` in the note of ``batch`` on this node (removed if its worker is dead); None
    if there is none."""
    for path in _notes():
        try:
            with open(path, "rb") as file:
                values = memoryview(file.read(_BYTES)).cast("q")
        except (OSError, TypeError):  # gone meanwhile, or not written yet
            continue
        if (values[_JOB], values[_BATCH]) == (job, batch):
            if not _alive(int(path.name)):
                path.unlink(missing_ok=True)
            return values[_WHERE]
    return None


def read_here(job: int, batch: int) -> Iterator[int | None]:
    """read(), as the staged task the driver pins to a node (staged tasks stream)."""
    yield read(job, batch)


def _open() -> memoryview | None:
    folder = directory()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        _sweep(folder)
        fd = os.open(folder / str(os.getpid()), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return None
    try:
        os.ftruncate(fd, _BYTES)
        return memoryview(mmap.mmap(fd, _BYTES)).cast("q")
    finally:
        os.close(fd)


def _sweep(folder: Path) -> None:
    """Remove the notes of workers dead and started more than KEEP_S ago."""
    old = time.time() - KEEP_S
    for path in _notes(folder):
        try:
            if path.stat().st_mtime < old and not _alive(int(path.name)):
                path.unlink()
        except OSError:
            pass


def _notes(folder: Path | None = None) -> list[Path]:
    try:
        return [path for path in (folder or directory()).iterdir() if path.name.isdigit()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
