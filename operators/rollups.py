"""Rolled-up buckets (open, high, low, close, count, volume, VWAP) per symbol at one resolution."""

from __future__ import annotations

from .tick import Tick

# A row's fields, in order (the rollups topic's value is the JSON object of these; schemas/rollup.schema.json).
ROLLUP_FIELDS = ("symbol", "resolution_s", "bucket_start", "open", "high", "high_time", "low", "low_time", "close",
                 "count", "volume", "vwap")


class RollupBuilder:
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
        self.add_run(tick.symbol, t - t % self.resolution_us, p, p, t, p, t, p, 1, tick.volume, p * tick.volume)

    def add_run(self, symbol: str, start: int, first: float, high: float, high_time: int, low: float, low_time: int,
                last: float, count: int, volume: float, price_volume: float) -> None:
        """Add ticks of one bucket, in order, given as their aggregate: first and last price, highest and
        lowest with the earliest time of each, count, volume, sum of price * volume. (One tick: add.)"""
        b = self._open_bucket
        if b is not None and b[1] != start:
            self._closed.append(self._row(b))
            b = None
        if b is None:
            # symbol, start, open, high, high_time, low, low_time, close, count, volume, price*volume
            self._open_bucket = [symbol, start, first, high, high_time, low, low_time, last, count, volume,
                                 price_volume]
            return
        if high > b[3]:
            b[3], b[4] = high, high_time
        if low < b[5]:
            b[5], b[6] = low, low_time
        b[7] = last
        b[8] += count
        b[9] += volume
        b[10] += price_volume

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
        symbol, start, o, h, ht, lo, lt, c, n, vol, pv = b
        return (symbol, self.resolution_s, start, o, h, ht, lo, lt, c, n, vol, (pv / vol) if vol > 0 else None)

    def __getstate__(self):
        return (self.resolution_s, self._open_bucket, self._closed)

    def __setstate__(self, state):
        self.resolution_s, self._open_bucket, self._closed = state
        # Checkpoints from before rows were tuples hold dicts.
        self._closed = [tuple(row[f] for f in ROLLUP_FIELDS) if isinstance(row, dict) else row for row in self._closed]
        self.resolution_us = self.resolution_s * 1_000_000
