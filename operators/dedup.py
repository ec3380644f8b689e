"""Drops a tick that repeats an already-seen (exchange, seq) of its symbol."""

from __future__ import annotations

import heapq


class DuplicateFilter:
    """Remembers each accepted tick's (exchange, seq) until the event-time frontier is `horizon_us` past
    it. A repeat within that memory is a duplicate; an older repeat is behind the watermark, so it is late
    and is not applied either. The horizon keeps memory proportional to recent ticks, not to history."""

    __slots__ = ("horizon_us", "_seen", "_expiry")

    def __init__(self, horizon_us: int) -> None:
        self.horizon_us = horizon_us
        self._seen: set[tuple[str, int]] = set()
        self._expiry: list[tuple[int, str, int]] = []  # heap of (event time, exchange, seq)

    def seen(self, exchange: str, seq: int) -> bool:
        return (exchange, seq) in self._seen

    def remember(self, exchange: str, seq: int, time_us: int) -> None:
        self._seen.add((exchange, seq))
        heapq.heappush(self._expiry, (time_us, exchange, seq))

    def forget_before(self, frontier_us: int) -> None:
        cutoff = frontier_us - self.horizon_us
        expiry = self._expiry
        while expiry and expiry[0][0] < cutoff:
            _, exchange, seq = heapq.heappop(expiry)
            self._seen.discard((exchange, seq))

    def __len__(self) -> int:
        return len(self._seen)
