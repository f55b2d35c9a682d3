"""The input of an imap over an iterator: read as the job goes, a bounded window ahead.

An endless or huge generator works because the loop reads only what its slots will want soon
(joblib's ``pre_dispatch``): READ_AHEAD_BATCHES batches per slot of the size the batch sizer
asks for. Elements read become the policy's (Policy.extend), and an element's item is dropped
once it is final: what stays per element read is a list slot for its item and one for its
value, a byte of ledger state and its place in the order elements became final (about 25
bytes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from gpar.policy import Policy, default_max_failures

#: Batches per slot the input is read ahead of them (joblib's pre_dispatch default, 2 × n_jobs).
READ_AHEAD_BATCHES = 2

#: At most this many elements are read ahead: with tiny elements, READ_AHEAD_BATCHES of
#: TARGET_BATCH_S would be millions of them. Not tuned: on 2 slots its batches of 5,000 still
#: last MIN_BATCH_S when elements take 4 µs or more.
MAX_READ_AHEAD = 20_000


class Feed:
    """Reads ``xs`` into ``items`` as the policy's queue runs short; ``budget_given``: the
    caller set max_failures (else the default budget scales with the input once it ends)."""

    def __init__(self, xs: Iterable[Any], budget_given: bool):
        self.items: list[Any] = []
        self.ended = False
        self._iterator = iter(xs)
        self._budget_given = budget_given
        self._released = 0  # elements of ledger.final_order whose items were dropped

    def __len__(self) -> int:
        """Elements read so far."""
        return len(self.items)

    def top_up(self, policy: Policy, values: list[Any]) -> int:
        """Read elements until the queue holds the window, or the input ends; returns how
        many were read. What the iteration raises reaches the caller as it is."""
        if self.ended:
            return 0
        want = self._window(policy) - policy.queue.waiting
        if want <= 0:
            return 0
        chunk = list(itertools.islice(self._iterator, want))
        if chunk:
            self.items.extend(chunk)
            values.extend([None] * len(chunk))
            policy.extend(len(chunk))
        if len(chunk) < want:
            self.ended = True
            policy.end_input(None if self._budget_given
                             else default_max_failures(policy.elements))
        return len(chunk)

    def release(self, final_order: Any) -> None:
        """Drop the items of elements that became final: they run no more."""
        items = self.items
        for index in final_order[self._released:]:
            items[index] = None
        self._released = len(final_order)

    @staticmethod
    def _window(policy: Policy) -> int:
        slots = policy.rules.max_workers
        return min(MAX_READ_AHEAD, slots * READ_AHEAD_BATCHES * policy.sizer.batch_size_wanted())
