"""Holds ticks that arrived out of order until the watermark says nothing earlier can still come."""

from __future__ import annotations

from bisect import bisect_left, insort_right
from operator import attrgetter

from .tick import Tick

_order = attrgetter("event_time", "seq")
_event_time = attrgetter("event_time")


class ReorderBuffer:
    """Releases ticks in (event_time, seq, arrival) order once their event time is below a frontier.

    A list kept in that order: most ticks arrive in order and are appended; the few that do not are inserted
    after every held tick with the same (event_time, seq), which keeps arrival order among equals. (A heap
    paid a tuple and O(log n) comparisons per tick for the rare out-of-order one.)"""

    __slots__ = ("_ticks",)

    def __init__(self) -> None:
        self._ticks: list[Tick] = []

    def __len__(self) -> int:
        return len(self._ticks)

    def push(self, tick: Tick) -> None:
        ticks = self._ticks
        if ticks:
            last = ticks[-1]
            if tick.event_time < last.event_time or (tick.event_time == last.event_time and tick.seq < last.seq):
                insort_right(ticks, tick, key=_order)
                return
        ticks.append(tick)

    def earliest(self) -> int | None:
        """The event time of the earliest held tick."""
        return self._ticks[0].event_time if self._ticks else None

    def release_before(self, frontier_us: int) -> list[Tick]:
        """Every held tick with event_time < frontier_us, in order."""
        ticks = self._ticks
        if not ticks or ticks[-1].event_time < frontier_us:  # all of them: the common case
            self._ticks = []
            return ticks
        cut = bisect_left(ticks, frontier_us, key=_event_time)
        out = ticks[:cut]
        del ticks[:cut]
        return out

    def __getstate__(self):
        # Plain tuples: pickling a Tick calls its Python-level __getnewargs__. In a tuple: pickle skips
        # __setstate__ for a false state, such as an empty list.
        return (list(map(tuple, self._ticks)),)

    def __setstate__(self, state):
        if isinstance(state, dict):  # a checkpoint from before this layout: a heap of (time, seq, arrival, tick)
            self._ticks = [entry[3] for entry in sorted(state["heap"])]
        else:
            self._ticks = list(map(Tick._make, state[0]))
