"""Rolled-up buckets (open, high, low, close, count, volume, VWAP) per symbol at one resolution."""

from __future__ import annotations

from . import sums
from .snapshot import Snapshotted
from .tick import Tick

# A row's fields, in order (the rollups topic's value is the JSON object of these; schemas/rollup.schema.json).
ROLLUP_FIELDS = ("symbol", "resolution_s", "bucket_start", "open", "high", "high_time", "low", "low_time", "close",
                 "count", "volume", "vwap")


def row(symbol: str, resolution_s: int, start: int, first: float, high: float, high_time: int, low: float,
        low_time: int, last: float, count: int, volume_terms: list[float], price_volume_terms: list[float]) -> tuple:
    """A closed bucket's row (ROLLUP_FIELDS): its volume the correctly rounded sum of its ticks' volumes, its
    VWAP the correctly rounded sum of price * volume (each product rounded) over that volume; None when no
    volume."""
    volume = sums.value(volume_terms)
    return (symbol, resolution_s, start, first, high, high_time, low, low_time, last, count, volume,
            sums.value(price_volume_terms) / volume if volume > 0 else None)


class RollupBuilder(Snapshotted):
    """Builds buckets [start, start + resolution) from ticks applied in event-time order.

    A bucket is handed out by `close_before(frontier)` once frontier >= its end, i.e. once the watermark
    guarantees no tick of it can still arrive; a closed bucket never changes, so every row is a
    deterministic function of the input (what makes the ClickHouse writes idempotent). Rows are tuples
    in ROLLUP_FIELDS order (the job turns them into JSON objects in bulk); close_before gives dicts.
    """

    __slots__ = ("resolution_s", "resolution_us", "_open_bucket", "_closed")

    def __init__(self, resolution_s: int) -> None:
        if resolution_s <= 0:
            raise ValueError(f"resolution must be positive, got {resolution_s} s")
        self.resolution_s = resolution_s
        self.resolution_us = resolution_s * 1_000_000
        self._open_bucket: list | None = None
        self._closed: list[tuple] = []

    def bucket_end(self, time_us: int) -> int:
        return (time_us // self.resolution_us + 1) * self.resolution_us

    def add(self, tick: Tick) -> None:
        t, p = tick.event_time, tick.price
        self.add_run(tick.symbol, t - t % self.resolution_us, p, p, t, p, t, p, 1, [tick.volume], [p * tick.volume])

    def add_run(self, symbol: str, start: int, first: float, high: float, high_time: int, low: float, low_time: int,
                last: float, count: int, volume: list[float], price_volume: list[float]) -> None:
        """Add ticks of one bucket, in order, given as their aggregate: first and last price, highest and
        lowest with the earliest time of each, count, and the volumes and prices * volumes (any terms whose
        exact sums are theirs: operators.sums). (One tick: add.)"""
        b = self._open_bucket
        if b is not None and b[1] != start:
            self._closed.append(self._row(b))
            b = None
        if b is None:
            # symbol, start, open, high, high_time, low, low_time, close, count, volume, price*volume
            self._open_bucket = [symbol, start, first, high, high_time, low, low_time, last, count, list(volume),
                                 list(price_volume)]
            return
        if high > b[3]:
            b[3], b[4] = high, high_time
        if low < b[5]:
            b[5], b[6] = low, low_time
        b[7] = last
        b[8] += count
        b[9] = sums.add(b[9], volume)
        b[10] = sums.add(b[10], price_volume)

    def add_closed(self, rows: list[tuple]) -> None:
        """Rows of complete buckets that follow the open one (which this closes), oldest first: what add_run
        of each bucket's aggregate and then of a later bucket's would leave (operators.columnar builds them
        in bulk)."""
        if self._open_bucket is not None:
            self._closed.append(self._row(self._open_bucket))
            self._open_bucket = None
        self._closed.extend(rows)

    def close_before(self, frontier_us: int) -> list[dict]:
        """Every bucket whose end is <= frontier_us, oldest first."""
        return [dict(zip(ROLLUP_FIELDS, row)) for row in self.close_rows_before(frontier_us)]

    def close_rows_before(self, frontier_us: int) -> list[tuple]:
        """The same as rows."""
        b = self._open_bucket
        if b is not None and b[1] + self.resolution_us <= frontier_us:
            self._closed.append(self._row(b))
            self._open_bucket = None
        out, self._closed = self._closed, []
        return out

    def open_end(self) -> int | None:
        """The end of the open bucket (µs), if one is open."""
        b = self._open_bucket
        return None if b is None else b[1] + self.resolution_us

    def is_empty(self) -> bool:
        return self._open_bucket is None and not self._closed

    def _row(self, b: list) -> tuple:
        symbol, start, o, h, ht, lo, lt, c, n, volume_terms, pv_terms = b
        return row(symbol, self.resolution_s, start, o, h, ht, lo, lt, c, n, volume_terms, pv_terms)

    def snapshot(self) -> tuple:
        return (self.resolution_s, self._open_bucket, self._closed)

    @classmethod
    def restore(cls, data: tuple) -> "RollupBuilder":
        builder = cls(data[0])
        builder._open_bucket, builder._closed = data[1], data[2]
        return builder
