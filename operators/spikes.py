"""Spike rule: a move of more than x % against the window's min or max, edge-triggered per direction."""

from __future__ import annotations

from .extrema import SlidingExtrema
from .tick import Tick


class SpikeDetector:
    """At a tick with price p, with the window's min and max including p:
    an up spike holds when p > min * (1 + x), a down spike when p < max * (1 - x).
    An alert fires when the condition becomes true for that direction and re-arms only after a tick where
    it is false, so one move gives one alert, not one per tick.
    """

    __slots__ = ("threshold_pct", "window_us", "_fraction", "_extrema", "_up_armed", "_down_armed")

    def __init__(self, threshold_pct: float, window_us: int) -> None:
        self.threshold_pct = threshold_pct
        self.window_us = window_us
        self._fraction = threshold_pct / 100.0
        self._extrema = SlidingExtrema(window_us)
        self._up_armed = True
        self._down_armed = True

    def on_tick(self, tick: Tick) -> list[dict]:
        """Apply one tick (in event-time order); return the alerts it fires."""
        self._extrema.push(tick.event_time, tick.price)
        p = tick.price
        low, low_time = self._extrema.min
        high, high_time = self._extrema.max
        alerts = []
        up = p > low * (1 + self._fraction)
        if up and self._up_armed:
            alerts.append(self._alert(tick, "spike_up", low, low_time))
        self._up_armed = not up
        down = p < high * (1 - self._fraction)
        if down and self._down_armed:
            alerts.append(self._alert(tick, "spike_down", high, high_time))
        self._down_armed = not down
        return alerts

    def _alert(self, tick: Tick, kind: str, reference: float, reference_time: int) -> dict:
        window_ms = self.window_us // 1000
        return {
            "alert_id": f"{tick.symbol}:{kind}:{tick.event_time}:{tick.seq}",
            "symbol": tick.symbol,
            "kind": kind,
            "price": tick.price,
            "reference_price": reference,
            "reference_time": reference_time,
            "change_pct": 100.0 * (tick.price - reference) / reference,
            "rule": f"spike {self.threshold_pct:g}% in {window_ms} ms",
            "window_ms": window_ms,
            "event_time": tick.event_time,
            "seq": tick.seq,
        }
