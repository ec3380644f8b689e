"""Drops a tick that repeats an already-seen (exchange, seq) of its symbol."""

from __future__ import annotations

import heapq
import sys
from bisect import bisect_left


class DuplicateFilter:
    """Remembers each accepted tick's (exchange, seq) until the event-time frontier is `horizon_us` past
    it. A repeat within that memory is a duplicate; an older repeat is behind the watermark, so it is late
    and is not applied either. The horizon keeps memory proportional to recent ticks, not to history.

    What to forget when: the ticks that come in order (most of them) in a queue kept as three columns with
    a moving head (time, exchange, seq: an append each, a binary search to forget), the others in a heap.
    Columns because the state is pickled at every bundle's end: lists of ints and of a few interned
    exchange names pickle ~4x faster than a list of (time, (exchange, seq)) tuples."""

    __slots__ = ("horizon_us", "_seen", "_times", "_exchanges", "_seqs", "_head", "_out_of_order")

    def __init__(self, horizon_us: int) -> None:
        self.horizon_us = horizon_us
        self._seen: set[tuple[str, int]] = set()
        self._times: list[int] = []  # ascending from _head
        self._exchanges: list[str] = []
        self._seqs: list[int] = []
        self._head = 0
        self._out_of_order: list[tuple[int, str, int]] = []  # heap of (event time, exchange, seq)

    def seen(self, exchange: str, seq: int) -> bool:
        return (exchange, seq) in self._seen

    def remember(self, exchange: str, seq: int, time_us: int) -> None:
        self._seen.add((exchange, seq))
        times = self._times
        if len(times) == self._head or times[-1] <= time_us:
            times.append(time_us)
            self._exchanges.append(sys.intern(exchange))
            self._seqs.append(seq)
        else:
            heapq.heappush(self._out_of_order, (time_us, exchange, seq))

    def forget_before(self, frontier_us: int) -> None:
        cutoff = frontier_us - self.horizon_us
        seen, times, head = self._seen, self._times, self._head
        if head < len(times) and times[head] < cutoff:
            end = bisect_left(times, cutoff, head)
            exchanges, seqs = self._exchanges, self._seqs
            for i in range(head, end):
                seen.discard((exchanges[i], seqs[i]))
            if end > 64 and end * 2 > len(times):  # compact now and then: amortised O(1)
                del times[:end], exchanges[:end], seqs[:end]
                end = 0
            self._head = end
        out_of_order = self._out_of_order
        while out_of_order and out_of_order[0][0] < cutoff:
            _, exchange, seq = heapq.heappop(out_of_order)
            seen.discard((exchange, seq))

    def __len__(self) -> int:
        return len(self._seen)

    def __getstate__(self):
        # The set is the keys of the queue and the heap: not pickled (it would double the state).
        head = self._head
        return (self.horizon_us, self._times[head:], self._exchanges[head:], self._seqs[head:], self._out_of_order)

    def __setstate__(self, state):
        if state[0] is None:  # a checkpoint from before this layout: its slots, with a heap of (time, exchange, seq)
            slots = state[1]
            self.horizon_us = slots["horizon_us"]
            entries = sorted(slots["_expiry"])
            self._times = [time_us for time_us, _, _ in entries]
            self._exchanges = [sys.intern(exchange) for _, exchange, _ in entries]
            self._seqs = [seq for _, _, seq in entries]
            self._out_of_order = []
        else:
            self.horizon_us, self._times, self._exchanges, self._seqs, self._out_of_order = state
        self._head = 0
        self._seen = set(zip(self._exchanges, self._seqs))
        self._seen.update((exchange, seq) for _, exchange, seq in self._out_of_order)
