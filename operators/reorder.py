"""Holds ticks that arrived out of order until the watermark says nothing earlier can still come."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from operator import itemgetter, lt
from typing import Iterable, NamedTuple

from .snapshot import Snapshotted, column, column_bytes
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


_TIME_SEQ = itemgetter(5, 4)  # a tick's (event_time, seq)
_NONE_YET = 1 << 63  # above every event time (int64 µs)


class ReorderBuffer(Snapshotted):
    """Releases ticks in (event_time, seq, arrival) order once their event time is below a frontier.

    A push only appends the tick to a list of arrivals: a symbol's ticks come one at a time among those of
    thousands of other symbols, and every object a push touches is a cache miss. Arrivals go into the
    held columns when the buffer is released or pickled, many at once: in order (most of them), they are
    appended column by column as they are; otherwise they are sorted by (event_time, seq), stably (arrival
    order among equals), and merged with the held ticks they precede. Numbers are kept in arrays: a
    release hands them on without touching a Python object per tick (operators.columnar reads them as
    numpy arrays), and they pickle as bytes."""

    __slots__ = ("_columns", "_arrivals", "_earliest_arrival")

    def __init__(self) -> None:
        self._columns = ReleasedTicks([], array("d"), array("d"), [], array("q"), array("q"))
        self._arrivals: list[tuple] = []
        self._earliest_arrival = _NONE_YET

    def __len__(self) -> int:
        return len(self._columns.event_times) + len(self._arrivals)

    def push(self, tick: Tick | tuple) -> None:
        """tick: a Tick or a plain tuple of its fields."""
        self._arrivals.append(tick)
        if tick[5] < self._earliest_arrival:
            self._earliest_arrival = tick[5]

    def earliest(self) -> int | None:
        """The event time of the earliest held tick."""
        times = self._columns.event_times
        earliest = min(times[0], self._earliest_arrival) if times else self._earliest_arrival
        return None if earliest == _NONE_YET else earliest

    def keys(self) -> Iterable[tuple[str, int]]:
        """(exchange, seq) of every held tick."""
        self._sort_arrivals()
        return zip(self._columns.exchanges, self._columns.seqs)

    def release_before(self, frontier_us: int) -> list[Tick]:
        """Every held tick with event_time < frontier_us, in order."""
        return self.release_columns_before(frontier_us).ticks()

    def release_columns_before(self, frontier_us: int) -> ReleasedTicks:
        """The same as columns."""
        self._sort_arrivals()
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

    def _sort_arrivals(self) -> None:
        arrivals = self._arrivals
        if not arrivals:
            return
        self._arrivals, self._earliest_arrival = [], _NONE_YET
        columns = self._columns
        times, seqs = columns.event_times, columns.seqs
        fields = list(zip(*arrivals))
        # Most arrivals come in order, each strictly later than the one before and than every held tick:
        # checked without a Python step per tick, they need no sort.
        arrived_times = fields[5]
        if (times and arrived_times[0] <= times[-1]) or not all(map(lt, arrived_times, arrived_times[1:])):
            arrivals.sort(key=_TIME_SEQ)  # stable: arrival order among equals
            first_time, first_seq = arrivals[0][5], arrivals[0][4]
            if times and (first_time < times[-1] or (first_time == times[-1] and first_seq < seqs[-1])):
                # Some go before held ticks: merge with the held ticks from the first arrival's time on
                # (held ones first: at equal (time, seq) they arrived earlier).
                cut = bisect_left(times, first_time)
                arrivals = list(zip(*(column[cut:] for column in columns))) + arrivals
                arrivals.sort(key=_TIME_SEQ)
                for column in columns:
                    del column[cut:]
            fields = zip(*arrivals)
        for column, values in zip(columns, fields):
            column.extend(values)

    def snapshot(self) -> tuple:
        self._sort_arrivals()
        symbols, prices, volumes, exchanges, seqs, event_times = self._columns
        return (symbols, column_bytes(prices), column_bytes(volumes), exchanges, column_bytes(seqs),
                column_bytes(event_times))

    @classmethod
    def restore(cls, data: tuple) -> "ReorderBuffer":
        symbols, prices, volumes, exchanges, seqs, event_times = data
        buffer = cls()
        buffer._columns = ReleasedTicks(symbols, column("d", prices), column("d", volumes), exchanges,
                                        column("q", seqs), column("q", event_times))
        return buffer
