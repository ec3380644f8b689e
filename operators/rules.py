"""Alert rules, edge-triggered: an alert fires when its condition becomes true, and re-arms only after a
tick where it is false, so one move gives one alert, not one per tick."""

from __future__ import annotations

import math
from collections import deque

from .snapshot import Snapshotted
from .tick import Tick


def _alert(tick: Tick, kind: str, reference: float, reference_time: int | None, rule: str,
           window_ms: int | None, alert_id: str) -> dict:
    return {
        "alert_id": alert_id, "symbol": tick.symbol, "kind": kind, "price": tick.price,
        "reference_price": reference, "reference_time": reference_time,
        "change_pct": 100.0 * (tick.price - reference) / reference,
        "rule": rule, "window_ms": window_ms, "event_time": tick.event_time, "seq": tick.seq,
    }


class SpikeRule(Snapshotted):
    """At a tick with price p, with the window's min and max including p: spike_up when
    p > min * (1 + x), spike_down when p < max * (1 - x)."""

    __slots__ = ("threshold_pct", "window_us", "_fraction", "up_armed", "down_armed")

    def __init__(self, threshold_pct: float, window_us: int) -> None:
        self.threshold_pct = threshold_pct
        self.window_us = window_us
        self._fraction = threshold_pct / 100.0
        self.up_armed = True
        self.down_armed = True

    def snapshot(self) -> tuple:
        return (self.threshold_pct, self.window_us, self.up_armed, self.down_armed)

    @classmethod
    def restore(cls, data: tuple) -> "SpikeRule":
        rule = cls(data[0], data[1])
        rule.up_armed, rule.down_armed = data[2], data[3]
        return rule

    def evaluate(self, tick: Tick, low: float, low_time: int, high: float, high_time: int) -> list[dict]:
        p = tick.price
        alerts = []
        up = p > low * (1 + self._fraction)
        if up and self.up_armed:
            alerts.append(self.alert(tick, "spike_up", low, low_time))
        self.up_armed = not up
        down = p < high * (1 - self._fraction)
        if down and self.down_armed:
            alerts.append(self.alert(tick, "spike_down", high, high_time))
        self.down_armed = not down
        return alerts

    def alert(self, tick: Tick, kind: str, reference: float, reference_time: int) -> dict:
        """The alert of kind spike_up (reference: the window's min) or spike_down (its max) at tick."""
        return _alert(tick, kind, reference, reference_time, self.rule(), self.window_us // 1000,
                      f"{tick.symbol}:{kind}:{tick.event_time}:{tick.seq}")

    def rule(self) -> str:
        """The rule as alerts name it (built only when one fires: evaluate runs for every tick)."""
        return f"spike {self.threshold_pct:g}% in {self.window_us // 1000} ms"


class ThresholdRule(Snapshotted):
    """Price levels: threshold_up when p > level, threshold_down when p < level, each edge-triggered."""

    __slots__ = ("levels", "up_armed", "down_armed")

    def __init__(self, levels) -> None:
        self.levels = tuple(sorted(float(level) for level in levels))
        self.up_armed = [True] * len(self.levels)
        self.down_armed = [True] * len(self.levels)

    def snapshot(self) -> tuple:
        return (self.levels, self.up_armed, self.down_armed)

    @classmethod
    def restore(cls, data: tuple) -> "ThresholdRule":
        rule = cls(data[0])
        rule.up_armed, rule.down_armed = data[1], data[2]
        return rule

    def evaluate(self, tick: Tick) -> list[dict]:
        alerts = []
        p = tick.price
        for i, level in enumerate(self.levels):
            up, down = p > level, p < level
            if up and self.up_armed[i]:
                alerts.append(self.alert(tick, "threshold_up", level))
            if down and self.down_armed[i]:
                alerts.append(self.alert(tick, "threshold_down", level))
            self.up_armed[i] = not up
            self.down_armed[i] = not down
        return alerts

    @staticmethod
    def alert(tick: Tick, kind: str, level: float) -> dict:
        """The alert of kind threshold_up (the price went above level) or threshold_down (below) at tick."""
        return _alert(tick, kind, level, None, f"{'above' if kind == 'threshold_up' else 'below'} {level:g}", None,
                      f"{tick.symbol}:{kind}:{level:g}:{tick.event_time}:{tick.seq}")


class MovingAverage(Snapshotted):
    """Mean price of the last n applied ticks."""

    __slots__ = ("n", "_prices")

    def __init__(self, n: int) -> None:
        self.n = n
        self._prices: deque[float] = deque(maxlen=n)

    def push(self, price: float) -> float:
        self._prices.append(price)
        return math.fsum(self._prices) / len(self._prices)

    def recent(self) -> list[float]:
        """The last n prices, oldest first."""
        return list(self._prices)

    def set_recent(self, prices: list[float]) -> None:
        self._prices = deque(prices, maxlen=self.n)

    def snapshot(self) -> tuple:
        return (self.n, list(self._prices))

    @classmethod
    def restore(cls, data: tuple) -> "MovingAverage":
        average = cls(data[0])
        average.set_recent(data[1])
        return average
