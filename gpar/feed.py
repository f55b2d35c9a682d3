"""The input of an imap over an iterator: read as the job goes, a bounded window ahead.

An endless or huge generator works because only what the slots will want soon is read
(joblib's ``pre_dispatch``): READ_AHEAD_BATCHES batches per slot of the size the batch sizer
asks for, at most MAX_READ_AHEAD elements and about MAX_READ_AHEAD_BYTES. The loop asks; the
thread that iterates the results reads, as a for loop over the input would (so an iterator
bound to its thread, such as an sqlite3 cursor, works), outside the job's lock. Elements read
become the policy's (Policy.extend), and an element's item is dropped once it is final: what
stays per element read is a list slot for its item and one for its value, a byte of ledger
state, its place in the order elements became final and its row in the job's report: about
45 bytes (tests/test_imap.py measures a million).
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable
from typing import Any

from gpar.policy import Policy, default_max_failures

#: Batches per slot the input is read ahead of them (joblib's pre_dispatch default, 2 × n_jobs).
READ_AHEAD_BATCHES = 2

#: At most about this many bytes of the input are read ahead (from the pickled size of one
#: item of each read). Not tuned: large items are what it bounds.
MAX_READ_AHEAD_BYTES = 64 * 2**20

#: At most this many elements are read ahead: with tiny elements, READ_AHEAD_BATCHES of
#: TARGET_BATCH_S would be millions of them. With 20,000, elements of ~1 µs filled a single
#: batch (split.MIN_BATCH_S), so the other slot idled until the next read; at 100,000 a
#: generator of 100,000 trivial items streams at 1.26 × apply's time on a list (was 1.6 ×).
MAX_READ_AHEAD = 100_000


class Feed:
    """Reads ``xs`` into ``items`` as the policy's queue runs short; ``budget_given``: the
    caller set max_failures (else the default budget scales with the input once it ends)."""

    def __init__(self, xs: Iterable[Any], budget_given: bool):
        self.items: list[Any] = []
        self.ended = False
        self._iterator = iter(xs)
        self._budget_given = budget_given
        self._released = 0  # elements of ledger.final_order whose items were dropped
        self._sampled_bytes = self._samples = 0  # the pickled size of an item of each read

    def __len__(self) -> int:
        """Elements read so far."""
        return len(self.items)

    def start(self, slots: int) -> None:
        """Read the first window, before the job starts: a batch of one per slot, twice
        over (no element was timed yet)."""
        want = slots * READ_AHEAD_BATCHES
        self.items = self.read(want)
        self.ended = len(self.items) < want

    def want(self, policy: Policy) -> int:
        """How many elements to read now: what the window lacks; none while preempted
        elements are parked: they leave the queue only once it is empty, so reading waits
        for them to have their turn."""
        if self.ended or policy.queue.parked:
            return 0
        return max(0, self._window(policy) - policy.queue.waiting)

    def read(self, want: int) -> list[Any]:
        """Up to ``want`` elements from the input, in the thread that iterates the job's
        results (job.Control.wait_for), outside the job's lock; fewer: it ended. What the
        iteration raises reaches that thread as it is."""
        chunk = list(itertools.islice(self._iterator, want))
        if chunk:
            self._sample(chunk[0])
        return chunk

    def add(self, policy: Policy, values: list[Any], chunk: list[Any], want: int) -> None:
        """Hand what was read to the policy (under the job's lock); the input ended if it
        gave fewer than ``want``."""
        if chunk:
            self.items.extend(chunk)
            values.extend([None] * len(chunk))
            policy.extend(len(chunk))
        if len(chunk) < want:
            self.ended = True
            policy.end_input(None if self._budget_given
                             else default_max_failures(policy.elements))

    def _sample(self, item: Any) -> None:
        """Its pickled size, for the mean that bounds the window in bytes."""
        try:
            size = len(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # what cannot be pickled here fails its own element later
            return
        self._sampled_bytes += size
        self._samples += 1

    def release(self, final_order: Any) -> None:
        """Drop the items of elements that became final: they run no more."""
        items = self.items
        for index in final_order[self._released:]:
            items[index] = None
        self._released = len(final_order)

    def _window(self, policy: Policy) -> int:
        slots = policy.rules.max_workers
        window = min(MAX_READ_AHEAD, slots * READ_AHEAD_BATCHES * policy.sizer.batch_size_wanted())
        if self._samples:
            by_bytes = int(MAX_READ_AHEAD_BYTES * self._samples / max(1, self._sampled_bytes))
            window = window if window < by_bytes else by_bytes
        return max(window, slots)
