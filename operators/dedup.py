"""Drops a tick that repeats an already-seen (exchange, seq) of its symbol."""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from typing import Iterable, Sequence

from .snapshot import Snapshotted


class DuplicateFilter(Snapshotted):
    """Remembers each accepted tick's (exchange, seq) until the event-time frontier is `horizon_us` past
    it. A repeat within that memory is a duplicate; an older repeat is behind the watermark, so it is late
    and is not applied either. The horizon keeps memory proportional to recent ticks, not to history.

    Two steps, because the one per tick must touch little: a symbol's ticks come one at a time among those
    of thousands of other symbols, so every object a tick touches is a cache miss. `claim` adds the key
    when its tick is accepted. `remember_released` says when to forget keys, for many ticks at once, when
    they are released in event-time order: a queue of three columns with a moving head (an extend per
    release, a binary search to forget). Released ticks that come before the queued ones (not expected:
    releases follow the frontier) go to a heap instead. Keys claimed and not yet released belong to
    ticks their owner still buffers: they are not pickled here, the owner claims them again on restore
    (SymbolProcessor.restore)."""

    __slots__ = ("horizon_us", "_seen", "_times", "_exchanges", "_seqs", "_head", "_out_of_order")

    def __init__(self, horizon_us: int) -> None:
        self.horizon_us = horizon_us
        self._seen: set[tuple[str, int]] = set()
        self._times = array("q")  # ascending from _head
        self._exchanges: list[str] = []
        self._seqs = array("q")
        self._head = 0
        self._out_of_order: list[tuple[int, str, int]] = []  # heap of (event time, exchange, seq)

    def seen(self, exchange: str, seq: int) -> bool:
        return (exchange, seq) in self._seen

    def claim(self, exchange: str, seq: int) -> None:
        """Seen from now on, until remember_released has said when to forget it."""
        self._seen.add((exchange, seq))

    def claim_all(self, keys: Iterable[tuple[str, int]]) -> None:
        self._seen.update(keys)

    def remember_released(self, exchanges: Sequence[str], seqs: Sequence[int], times: Sequence[int]) -> None:
        """Forget these claimed keys once the frontier is horizon_us past their event times (ascending)."""
        if not times:
            return
        queued = self._times
        if len(queued) == self._head or queued[-1] <= times[0]:
            queued.extend(times)
            self._exchanges.extend(exchanges)
            self._seqs.extend(seqs)
        else:
            for entry in zip(times, exchanges, seqs):
                heapq.heappush(self._out_of_order, entry)

    def forget_before(self, frontier_us: int) -> None:
        cutoff = frontier_us - self.horizon_us
        seen, times, head = self._seen, self._times, self._head
        if head < len(times) and times[head] < cutoff:
            end = bisect_left(times, cutoff, head)
            seen.difference_update(zip(self._exchanges[head:end], self._seqs[head:end]))
            if end > 64 and end * 2 > len(times):  # compact now and then: amortised O(1)
                del times[:end], self._exchanges[:end], self._seqs[:end]
                end = 0
            self._head = end
        out_of_order = self._out_of_order
        while out_of_order and out_of_order[0][0] < cutoff:
            _, exchange, seq = heapq.heappop(out_of_order)
            seen.discard((exchange, seq))

    def __len__(self) -> int:
        return len(self._seen)

    def snapshot(self) -> tuple:
        # The set is the keys of the queue and the heap (and the claimed ones, see above): not kept.
        head = self._head
        return (self.horizon_us, self._times[head:], self._exchanges[head:], self._seqs[head:], self._out_of_order)

    @classmethod
    def restore(cls, data: tuple) -> "DuplicateFilter":
        dups = cls(data[0])
        dups._times, dups._exchanges, dups._seqs, dups._out_of_order = data[1:]
        dups._seen = set(zip(dups._exchanges, dups._seqs))
        dups._seen.update((exchange, seq) for _, exchange, seq in dups._out_of_order)
        return dups
