"""How many elements the next batch gets: joblib's auto-batching, fed by per-element timings.

joblib starts at one element per batch and grows the batch toward a target duration. Here the
workers time every element, so one finished element is enough to size the rest: tiny functions
run in large batches (a Ray task costs ~1 ms, so a batch must last far longer than that), slow
ones one element per task. While much work remains, a batch is also capped to leave several
batches per slot, so skewed elements cannot leave a core idle at the end.
"""

from __future__ import annotations

#: A batch should last about this long: long against the ~5 ms a worker idles between two
#: batches, short enough to rebalance; joblib aims between 0.2 s and 2 s. With 0.2 s,
#: bench/bench_apply.py (b) ran ~58 batches for 200 elements of 45 ms (speedup 1.78 on 2 cores,
#: multiprocessing.Pool 1.89); with 0.5 s, 28 batches (1.85, the Pool 1.84).
TARGET_BATCH_S = 0.5

#: A batch never lasts less than this unless the work runs out: below it, per-task overhead
#: shows in the trivial-items benchmark (bench/bench_apply.py).
MIN_BATCH_S = 0.02

#: Keep at least this many batches per slot in the remaining work, for load balance. Batches
#: shrink toward the end, and each costs the gap above.
BATCHES_PER_SLOT = 2


class BatchSizer:
    """Chooses batch sizes from the measured mean time per element."""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self._elements = 0
        self._seconds = 0.0

    def observe(self, elements: int, seconds: float) -> None:
        """Record that ``elements`` elements took ``seconds`` of fn time on a worker."""
        self._elements += elements
        if seconds > 0.0:
            self._seconds += seconds

    def batch_size_wanted(self) -> int:
        """The batch size it asks for when plenty of work remains: TARGET_BATCH_S of work
        (one element until an element was timed). What an input read as it goes reads
        ahead by (feed.py)."""
        if not self._elements:
            return 1
        per_element = self._seconds / self._elements
        return max(1, int(TARGET_BATCH_S / max(per_element, 1e-9)))

    def next_size(self, remaining: int) -> int:
        """Elements for the next batch, when ``remaining`` elements are still to dispatch."""
        if remaining <= self.slots or not self._elements:
            return 1
        # called for nearly every batch, so it compares instead of calling min() and max(),
        # which take five times as long with two numbers
        per_element = self._seconds / self._elements
        if per_element < 1e-9:
            per_element = 1e-9
        size = remaining / (self.slots * BATCHES_PER_SLOT)  # balanced: batches per slot
        if size < MIN_BATCH_S / per_element:
            size = MIN_BATCH_S / per_element
        if size > TARGET_BATCH_S / per_element:
            size = TARGET_BATCH_S / per_element
        size = int(size)
        return 1 if size < 1 else remaining if size > remaining else size
