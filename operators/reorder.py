"""Holds ticks that arrived out of order until the watermark says nothing earlier can still come."""

from __future__ import annotations

import heapq
import itertools

from .tick import Tick


class ReorderBuffer:
    """Releases ticks in (event_time, seq, arrival) order once their event time is below a frontier."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, Tick]] = []
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, tick: Tick) -> None:
        heapq.heappush(self._heap, (tick.event_time, tick.seq, next(self._arrivals), tick))

    def earliest(self) -> int | None:
        """The event time of the earliest held tick."""
        return self._heap[0][0] if self._heap else None

    def release_before(self, frontier_us: int) -> list[Tick]:
        """Every held tick with event_time < frontier_us, in order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] < frontier_us:
            out.append(heapq.heappop(heap)[3])
        return out

    def __getstate__(self):
        # itertools.count does not pickle; keep the next arrival number instead.
        return {"heap": self._heap, "next": next(self._arrivals)}

    def __setstate__(self, state):
        self._heap = state["heap"]
        self._arrivals = itertools.count(state["next"])
