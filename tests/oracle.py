"""Brute-force expected outputs, computed from the ticks alone and written independently of operators/.

No deques, no incremental state: every window is re-scanned from the full list of applied ticks.
"""

from __future__ import annotations

from collections import defaultdict


def apply_order(ticks: list[dict]) -> dict[str, list[dict]]:
    """Per symbol, the ticks in the order stockmax applies them: event time, then seq, then arrival."""
    by_symbol = defaultdict(list)
    for arrival, tick in enumerate(ticks):
        by_symbol[tick["symbol"]].append((tick["event_time"], tick["seq"], arrival, tick))
    return {s: [t for *_, t in sorted(rows, key=lambda r: r[:3])] for s, rows in by_symbol.items()}


def window_extremes(applied: list[dict], k: int, window_us: int):
    """(min, latest time of min, max, latest time of max) over the window (t_k - W, t_k] of ticks 0..k."""
    now = applied[k]["event_time"]
    inside = [t for t in applied[: k + 1] if t["event_time"] > now - window_us]
    low = min(t["price"] for t in inside)
    high = max(t["price"] for t in inside)
    low_time = max(t["event_time"] for t in inside if t["price"] == low)
    high_time = max(t["event_time"] for t in inside if t["price"] == high)
    return low, low_time, high, high_time


def expected_alerts(ticks: list[dict], threshold_pct: float, window_ms: int) -> list[dict]:
    x = threshold_pct / 100.0
    window_us = window_ms * 1000
    alerts = []
    for symbol, applied in apply_order(ticks).items():
        up_was_true = down_was_true = False
        for k, tick in enumerate(applied):
            low, low_time, high, high_time = window_extremes(applied, k, window_us)
            p = tick["price"]
            up = p > low * (1 + x)
            down = p < high * (1 - x)
            if up and not up_was_true:
                alerts.append({"symbol": symbol, "kind": "spike_up", "event_time": tick["event_time"],
                               "seq": tick["seq"], "price": p, "reference_price": low, "reference_time": low_time})
            if down and not down_was_true:
                alerts.append({"symbol": symbol, "kind": "spike_down", "event_time": tick["event_time"],
                               "seq": tick["seq"], "price": p, "reference_price": high, "reference_time": high_time})
            up_was_true, down_was_true = up, down
    return alerts


def expected_rollups(ticks: list[dict], resolution_s: int) -> list[dict]:
    size = resolution_s * 1_000_000
    rows = []
    for symbol, applied in apply_order(ticks).items():
        buckets = defaultdict(list)
        for tick in applied:
            buckets[tick["event_time"] // size * size].append(tick)
        for start, members in sorted(buckets.items()):
            prices = [t["price"] for t in members]
            high, low = max(prices), min(prices)
            volume = sum(t["volume"] for t in members)
            rows.append({
                "symbol": symbol, "resolution_s": resolution_s, "bucket_start": start,
                "open": prices[0], "close": prices[-1], "high": high, "low": low,
                "high_time": next(t["event_time"] for t in members if t["price"] == high),
                "low_time": next(t["event_time"] for t in members if t["price"] == low),
                "count": len(members), "volume": volume,
                "vwap": sum(t["price"] * t["volume"] for t in members) / volume if volume > 0 else None,
            })
    return rows


def alert_key(alert: dict) -> tuple:
    return (alert["symbol"], alert["kind"], alert["event_time"], alert["seq"], alert["price"],
            alert["reference_price"], alert["reference_time"])
