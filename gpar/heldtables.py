"""With output=: a batch's finished tables, held and written together into one file.

fn's tables go to reduce_sql's BatchWriter; an element counts as finished for the driver once
its file is written. A file is written when the batch ends, when it holds a file's worth of
rows, when its oldest table has waited HOLD_S, or when the element in fn has run
WRITE_HELD_AFTER_S (well before the driver could take it for a straggler and preempt the
batch, losing what it held). An element that ran WRITE_ALONE_AFTER_S is written in a file of
its own. Only such elements can get a backup, so a file never holds an element another attempt
may win: the commit takes each file whole.

The element thread holds (``hold``); the batch's main thread writes (``write``), so the time
the driver sees an element in fn is the time it spent there.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from gpar import elementerrors

if TYPE_CHECKING:
    from gpar.elements import BatchRun

#: An element in fn this long has the tables held before it written...
WRITE_HELD_AFTER_S = 0.1
#: ...and an element that ran this long is written alone. Below BACKUP_MIN_S
#: (gpar/stragglers.py), so no element that may get a backup shares a file with others
#: (tests/test_reduce_sql.py).
#: Both follow from the policy's patience, not from a benchmark; bench/bench_reduce.py (a)
#: measures the write they shape.
WRITE_ALONE_AFTER_S = 0.25

#: The longest a finished element's table waits to be written, so the driver's quorum,
#: deadline and progress see it soon whatever fn does next.
HOLD_S = 1.0


class HeldTables:
    """A batch's BatchWriter and what of the batch's elements is final: written."""

    def __init__(self, sink: Any):
        self.writer = sink.open()  # a reduce_sql BatchWriter
        self.written = 0  # positions [0, written) are final: their tables are in files
        self.settling = threading.Lock()  # held to hold a table, and to take or settle them
        self.writing = threading.Lock()  # held while a file is written

    def hold(self, run: BatchRun, position: int, value: Any) -> None:
        """Give fn's table to the writer (one that ran long to go in a file of its own) and
        count the element finished."""
        from reduce_sql.errors import OutputTypeError

        table = None
        if position not in run.errors:
            try:
                table = self.writer.table_for(value)
            except OutputTypeError as exc:  # fn's to fix: retrying cannot help
                run.errors[position] = elementerrors.element_error(exc, "output", retryable=False)
        started = run.finished[-1] if run.finished else run.elements_started
        with self.settling:
            if table is not None:
                alone = time.time() - started > WRITE_ALONE_AFTER_S
                self.writer.hold(position, table, alone)
            run.finished.append(time.time())

    def write(self, run: BatchRun) -> None:
        """Write the held tables; every element finished before is final then."""
        with self.writing:  # one file at a time, in order
            with self.settling:
                held, done = self.writer.take(), len(run.finished)
            written = self.writer.write(held)
            with self.settling:
                for position, part in written:
                    if isinstance(part, Exception):  # storage may recover: a retry may write
                        run.errors[position] = elementerrors.element_error(
                            part, "output", retryable=True)
                    else:
                        run.values[position] = part
                self.written = done

    def due(self, run: BatchRun) -> bool:
        """Whether the batch's main thread should write the held tables now (see above)."""
        writer, held_since = self.writer, self.writer.oldest_held
        if held_since is None:
            return self.written < len(run.finished)  # elements that failed: settle them
        in_fn_since = run.finished[-1] if run.finished else run.elements_started
        now = time.time()
        return (writer.full or writer.alone_held or now - held_since > HOLD_S
                or now - in_fn_since > WRITE_HELD_AFTER_S)
