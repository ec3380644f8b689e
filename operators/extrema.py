"""Exact sliding maximum and minimum over a time window, for a stream applied in event-time order."""

from __future__ import annotations

from collections import deque


class SlidingExtrema:
    """Max and min over the window (t - window, t] where t is the time of the latest pushed value.

    Two monotonic deques of (time, price): amortised O(1) per push, and the deques hold only the values
    that can still become the max or min, never the whole window. On equal prices the later one is kept,
    so the reported time is the latest time the extreme price was seen in the window.
    """

    __slots__ = ("window_us", "_max", "_min")

    def __init__(self, window_us: int) -> None:
        if window_us <= 0:
            raise ValueError(f"window must be positive, got {window_us} µs")
        self.window_us = window_us
        self._max: deque[tuple[int, float]] = deque()  # prices strictly decreasing left to right
        self._min: deque[tuple[int, float]] = deque()  # prices strictly increasing left to right

    def push(self, time_us: int, price: float) -> None:
        highs, lows = self._max, self._min
        while highs and highs[-1][1] <= price:
            highs.pop()
        highs.append((time_us, price))
        while lows and lows[-1][1] >= price:
            lows.pop()
        lows.append((time_us, price))
        cutoff = time_us - self.window_us
        while highs[0][0] <= cutoff:
            highs.popleft()
        while lows[0][0] <= cutoff:
            lows.popleft()

    @property
    def max(self) -> tuple[float, int]:
        """(price, time) of the window's maximum."""
        time_us, price = self._max[0]
        return price, time_us

    @property
    def min(self) -> tuple[float, int]:
        time_us, price = self._min[0]
        return price, time_us

    def __len__(self) -> int:
        return len(self._max) + len(self._min)

    def __getstate__(self):
        return (self.window_us, list(self._max), list(self._min))

    def __setstate__(self, state):
        self.window_us, highs, lows = state
        self._max, self._min = deque(highs), deque(lows)
