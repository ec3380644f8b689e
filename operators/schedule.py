"""When each symbol next needs the event-time frontier: one timer per job key instead of one per tick.

The job keys its state by Kafka partition (many symbols per key); Flink's timers are per key and time, so
the symbols' own due points are kept here and the job sets one timer, at the earliest of them.
"""

from __future__ import annotations

import heapq


class DueSchedule:
    """symbol -> the frontier (µs) at which it is due. A heap with lazy deletion: a symbol's newer due point
    supersedes the older heap entry, which is skipped when it surfaces."""

    __slots__ = ("_due", "_heap")

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def due(self, symbol: str) -> int | None:
        return self._due.get(symbol)

    def set(self, symbol: str, due_us: int | None) -> None:
        """Due at due_us, or no longer (None)."""
        if due_us is None:
            self._due.pop(symbol, None)
            return
        if self._due.get(symbol) == due_us:
            return
        self._due[symbol] = due_us
        heapq.heappush(self._heap, (due_us, symbol))
        if len(self._heap) > 64 + 2 * len(self._due):  # stale entries outnumber live ones: rebuild
            self._heap = [(due, s) for s, due in self._due.items()]
            heapq.heapify(self._heap)

    def earliest(self) -> int | None:
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, frontier_us: int) -> list[str]:
        """The symbols due at or below the frontier, earliest first; they are no longer scheduled."""
        out = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= frontier_us:
            at, symbol = heapq.heappop(heap)
            if due.get(symbol) == at:
                del due[symbol]
                out.append(symbol)
        return out
