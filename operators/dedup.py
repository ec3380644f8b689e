"""Drops a tick that repeats an already-seen (exchange, seq) of its symbol."""

from __future__ import annotations

import heapq
from collections import deque


class DuplicateFilter:
    """Remembers each accepted tick's (exchange, seq) until the event-time frontier is `horizon_us` past
    it. A repeat within that memory is a duplicate; an older repeat is behind the watermark, so it is late
    and is not applied either. The horizon keeps memory proportional to recent ticks, not to history.

    What to forget when: a queue in event-time order for the ticks that come in order (most of them: an
    append, and a pop from the front when forgotten), a heap for the others."""

    __slots__ = ("horizon_us", "_seen", "_in_order", "_out_of_order")

    def __init__(self, horizon_us: int) -> None:
        self.horizon_us = horizon_us
        self._seen: set[tuple[str, int]] = set()
        self._in_order: deque[tuple[int, tuple[str, int]]] = deque()  # (event time, key), times ascending
        self._out_of_order: list[tuple[int, tuple[str, int]]] = []  # heap of (event time, key)

    def seen(self, exchange: str, seq: int) -> bool:
        return (exchange, seq) in self._seen

    def remember(self, exchange: str, seq: int, time_us: int) -> None:
        key = (exchange, seq)
        self._seen.add(key)
        in_order = self._in_order
        if not in_order or in_order[-1][0] <= time_us:
            in_order.append((time_us, key))
        else:
            heapq.heappush(self._out_of_order, (time_us, key))

    def forget_before(self, frontier_us: int) -> None:
        cutoff = frontier_us - self.horizon_us
        seen, in_order, out_of_order = self._seen, self._in_order, self._out_of_order
        while in_order and in_order[0][0] < cutoff:
            seen.discard(in_order.popleft()[1])
        while out_of_order and out_of_order[0][0] < cutoff:
            seen.discard(heapq.heappop(out_of_order)[1])

    def __len__(self) -> int:
        return len(self._seen)

    def __getstate__(self):
        # The set is the keys of the two queues: not pickled (it would double the state).
        return (self.horizon_us, list(self._in_order), self._out_of_order)

    def __setstate__(self, state):
        if state[0] is None:  # a checkpoint from before this layout: its slots, with a heap of (time, exchange, seq)
            slots = state[1]
            self.horizon_us = slots["horizon_us"]
            entries = sorted((time_us, (exchange, seq)) for time_us, exchange, seq in slots["_expiry"])
        else:
            self.horizon_us, entries, out_of_order = state
            entries = sorted(entries + out_of_order)
        self._in_order = deque(entries)
        self._out_of_order = []
        self._seen = {key for _, key in entries}
