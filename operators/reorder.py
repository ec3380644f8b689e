"""Holds ticks that arrived out of order until the watermark says nothing earlier can still come."""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple

from .tick import Tick


class ReleasedTicks(NamedTuple):
    """Ticks released together, as columns in apply order (numbers as contiguous arrays)."""
    symbols: list[str]
    prices: array  # 'd'
    volumes: array  # 'd'
    exchanges: list[str]
    seqs: array  # 'q'
    event_times: array  # 'q'

    def ticks(self) -> list[Tick]:
        return list(map(Tick._make, zip(*self)))


class ReorderBuffer:
    """Releases ticks in (event_time, seq, arrival) order once their event time is below a frontier.

    Columns kept in that order: most ticks arrive in order and are appended; the few that do not are
    inserted after every held tick with the same (event_time, seq), which keeps arrival order among equals.
    Numbers go into arrays as they arrive: a release hands them on without touching a Python object per
    tick (operators.columnar reads them as numpy arrays; objects made long before are cache misses), and
    they pickle as bytes."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        self._columns = ReleasedTicks([], array("d"), array("d"), [], array("q"), array("q"))

    def __len__(self) -> int:
        return len(self._columns.event_times)

    def push(self, tick: Tick | tuple) -> None:
        """tick: a Tick or a plain tuple of its fields."""
        columns = self._columns
        times, seqs = columns.event_times, columns.seqs
        symbol, price, volume, exchange, seq, t = tick
        exchange = sys.intern(exchange)  # a few names, each held once
        if times and (t < times[-1] or (t == times[-1] and seq < seqs[-1])):
            low, high = bisect_left(times, t), bisect_right(times, t)
            at = low + bisect_right(seqs[low:high], seq)
            for column, value in zip(columns, (symbol, price, volume, exchange, seq, t)):
                column.insert(at, value)
            return
        columns.symbols.append(symbol)
        columns.prices.append(price)
        columns.volumes.append(volume)
        columns.exchanges.append(exchange)
        seqs.append(seq)
        times.append(t)

    def earliest(self) -> int | None:
        """The event time of the earliest held tick."""
        times = self._columns.event_times
        return times[0] if times else None

    def release_before(self, frontier_us: int) -> list[Tick]:
        """Every held tick with event_time < frontier_us, in order."""
        return self.release_columns_before(frontier_us).ticks()

    def release_columns_before(self, frontier_us: int) -> ReleasedTicks:
        """The same as columns."""
        columns = self._columns
        times = columns.event_times
        if not times or times[-1] < frontier_us:  # all of them: the common case
            self.__init__()
            return columns
        cut = bisect_left(times, frontier_us)
        out = ReleasedTicks(*(column[:cut] for column in columns))
        for column in columns:
            del column[:cut]
        return out

    def __getstate__(self):
        return (2, *self._columns)

    def __setstate__(self, state):
        if isinstance(state, dict):  # an older layout: a heap of (time, seq, arrival, tick)
            ticks = [entry[3] for entry in sorted(state["heap"])]
        elif state[0] != 2:  # an older layout: a list of Ticks as tuples, in order
            ticks = list(map(Tick._make, state[0]))
        else:
            self._columns = ReleasedTicks(*state[1:])
            return
        self.__init__()
        for tick in ticks:
            self.push(tick)
