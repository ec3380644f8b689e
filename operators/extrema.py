"""Exact sliding maximum and minimum over several time windows at once, for a stream in event-time order.

One monotonic structure per side serves every window: it holds the values that can still be the max
(or min) of the longest window, newest last; the max of a shorter window W at time t is the first held
value with time > t - W, found by binary search on time. Amortised O(1) per push plus O(log n) per query,
and memory proportional to the candidates, not to the ticks in the window.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

from .snapshot import Snapshotted, column, column_bytes


class _MonotonicSide(Snapshotted):
    """(time, price) candidates; prices strictly decreasing (max side) or increasing (min side) from the
    head. Kept in two arrays ('q' and 'd') with a moving head so that binary search on time is cheap; as
    arrays, a checkpoint writes each side as two strings of bytes, not an object per number."""

    __slots__ = ("times", "prices", "head", "is_max")

    def __init__(self, is_max: bool) -> None:
        self.times = array("q")
        self.prices = array("d")
        self.head = 0
        self.is_max = is_max

    def push(self, time_us: int, price: float, oldest_kept_after_us: int) -> None:
        times, prices, head = self.times, self.prices, self.head
        # A newer price at least as extreme outlives an older one in every window: drop the older.
        if self.is_max:
            while len(prices) > head and prices[-1] <= price:
                prices.pop()
                times.pop()
        else:
            while len(prices) > head and prices[-1] >= price:
                prices.pop()
                times.pop()
        times.append(time_us)
        prices.append(price)
        while times[head] <= oldest_kept_after_us:
            head += 1
        if head > 64 and head * 2 > len(times):  # compact now and then: amortised O(1)
            del times[:head]
            del prices[:head]
            head = 0
        self.head = head

    def query(self, after_us: int) -> tuple[float, int]:
        """(price, time) of the extreme among candidates with time > after_us (the newest always is)."""
        i = bisect_right(self.times, after_us, self.head)
        return self.prices[i], self.times[i]

    def __len__(self) -> int:
        return len(self.times) - self.head

    def snapshot(self) -> tuple:
        return (self.is_max, column_bytes(self.times, self.head), column_bytes(self.prices, self.head))

    @classmethod
    def restore(cls, data: tuple) -> "_MonotonicSide":
        side = cls(data[0])
        side.times, side.prices = column("q", data[1]), column("d", data[2])
        return side


class MultiWindowExtrema(Snapshotted):
    """Max and min over (t - W, t] for each configured W, where t is the time of the latest push."""

    __slots__ = ("longest_us", "_max", "_min", "now")

    def __init__(self, longest_window_us: int) -> None:
        if longest_window_us <= 0:
            raise ValueError(f"window must be positive, got {longest_window_us} µs")
        self.longest_us = longest_window_us
        self._max = _MonotonicSide(is_max=True)
        self._min = _MonotonicSide(is_max=False)
        self.now: int | None = None

    def snapshot(self) -> tuple:
        return (self.longest_us, self.now, self._max.snapshot(), self._min.snapshot())

    @classmethod
    def restore(cls, data: tuple) -> "MultiWindowExtrema":
        extrema = cls(data[0])
        extrema.now, extrema._max, extrema._min = data[1], _MonotonicSide.restore(data[2]), _MonotonicSide.restore(data[3])
        return extrema

    def push(self, time_us: int, price: float) -> None:
        if self.now is not None and time_us < self.now:
            raise ValueError(f"ticks must be pushed in time order: {time_us} after {self.now}")
        cutoff = time_us - self.longest_us
        self._max.push(time_us, price, cutoff)
        self._min.push(time_us, price, cutoff)
        self.now = time_us

    def max(self, window_us: int) -> tuple[float, int]:
        """(price, time) of the maximum over the window ending now; on equal prices, the latest time."""
        return self._max.query(self.now - window_us)

    def min(self, window_us: int) -> tuple[float, int]:
        return self._min.query(self.now - window_us)

    def window(self, window_us: int) -> tuple[float, int, float, int]:
        """(max, its time, min, its time) over the window ending now: max() and min() in one call (the
        per-tick path asks this for every window)."""
        after = self.now - window_us
        return (*self._max.query(after), *self._min.query(after))

    def candidate_lists(self) -> tuple[list[int], list[float], list[int], list[float]]:
        """What is held: (times, prices) of the max side, then of the min side, oldest first."""
        mx, mn = self._max, self._min
        return (mx.times[mx.head:].tolist(), mx.prices[mx.head:].tolist(), mn.times[mn.head:].tolist(),
                mn.prices[mn.head:].tolist())

    def side(self, is_max: bool) -> tuple[array, array, int, bool]:
        """One side's candidates as held, not copied: (times, prices, head, is_max); those before head are
        gone."""
        side = self._max if is_max else self._min
        return side.times, side.prices, side.head, is_max

    def set_candidates(self, now: int, max_times: array, max_prices: array, min_times: array,
                       min_prices: array) -> None:
        """Hold these (arrays 'q', 'd', 'q', 'd', adopted), as pushes up to `now` would have left them
        (operators.columnar computes them)."""
        self._max.times, self._max.prices, self._max.head = max_times, max_prices, 0
        self._min.times, self._min.prices, self._min.head = min_times, min_prices, 0
        self.now = now

    def candidates(self) -> int:
        """How many (time, price) pairs are held, both sides: the state's size."""
        return len(self._max) + len(self._min)
