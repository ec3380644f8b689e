"""Brute-force expected outputs, computed from the ticks alone and written independently of operators/.

No deques, no incremental state: every window is re-scanned from the full list of applied ticks. Sums of
floats are exact (Fractions), rounded once at the end: the semantics say sums are correctly rounded. The
oracle takes ticks in arrival order and assumes none is late (the test data keeps its disorder within the
watermark bound); duplicates are the later arrivals of an already-seen (symbol, exchange, seq).
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

DEFAULT_WINDOWS_MS = (1000, 60_000, 300_000, 3_600_000)


def window_name(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms % size == 0:
            return f"{ms // size}{unit}"


def split_duplicates(ticks: list[dict]) -> tuple[list[dict], list[dict]]:
    seen, kept, repeats = set(), [], []
    for tick in ticks:
        key = (tick["symbol"], tick["exchange"], tick["seq"])
        (repeats if key in seen else kept).append(tick)
        seen.add(key)
    return kept, repeats


def exact_sum(values) -> float:
    """The sum of floats, computed exactly and rounded once to the nearest float."""
    return float(sum(map(Fraction, values), Fraction(0)))


def apply_order(ticks: list[dict]) -> dict[str, list[dict]]:
    """Per symbol, the ticks in the order stockmax applies them: event time, then seq, then arrival."""
    by_symbol = defaultdict(list)
    for arrival, tick in enumerate(ticks):
        by_symbol[tick["symbol"]].append((tick["event_time"], tick["seq"], arrival, tick))
    return {s: [t for *_, t in sorted(rows, key=lambda r: r[:3])] for s, rows in by_symbol.items()}


def segments(applied: list[dict], idle_gap_us: int | None) -> list[list[dict]]:
    """A symbol starts fresh after a gap longer than idle_gap between consecutive applied ticks."""
    out = []
    for tick in applied:
        if not out or (idle_gap_us is not None and tick["event_time"] - out[-1][-1]["event_time"] > idle_gap_us):
            out.append([])
        out[-1].append(tick)
    return out


def window_extremes(applied: list[dict], k: int, window_us: int):
    """(min, latest time of min, max, latest time of max) over the window (t_k - W, t_k] of ticks 0..k."""
    now = applied[k]["event_time"]
    # Applied ticks are in event-time order: the window is the run of them back from tick k.
    start = k
    while start and applied[start - 1]["event_time"] > now - window_us:
        start -= 1
    inside = applied[start: k + 1]
    low = min(t["price"] for t in inside)
    high = max(t["price"] for t in inside)
    low_time = max(t["event_time"] for t in inside if t["price"] == low)
    high_time = max(t["event_time"] for t in inside if t["price"] == high)
    return low, low_time, high, high_time


def _idle_gap(windows_ms, spike_window_ms, bound_ms):
    return (max(max(windows_ms), spike_window_ms) + bound_ms) * 1000


def expected_alerts(ticks: list[dict], threshold_pct: float, window_ms: int, levels=(), windows_ms=DEFAULT_WINDOWS_MS,
                    bound_ms: int = 2000, overrides=None) -> list[dict]:
    overrides = overrides or {}
    kept, _ = split_duplicates(ticks)
    alerts = []
    for symbol, applied in apply_order(kept).items():
        rule = overrides.get(symbol, {})
        x = rule.get("spike_threshold_pct", threshold_pct) / 100.0
        spike_ms = rule.get("spike_window_ms", window_ms)
        symbol_levels = sorted(rule.get("levels", levels))
        for segment in segments(applied, _idle_gap(windows_ms, spike_ms, bound_ms)):
            was = defaultdict(bool)  # condition -> held at the previous tick (False: armed)
            for k, tick in enumerate(segment):
                low, low_time, high, high_time = window_extremes(segment, k, spike_ms * 1000)
                p = tick["price"]
                base = {"symbol": symbol, "event_time": tick["event_time"], "seq": tick["seq"], "price": p}
                conditions = [("spike_up", None, p > low * (1 + x), low, low_time),
                              ("spike_down", None, p < high * (1 - x), high, high_time)]
                for level in symbol_levels:
                    conditions.append(("threshold_up", level, p > level, level, None))
                    conditions.append(("threshold_down", level, p < level, level, None))
                for kind, level, holds, reference, reference_time in conditions:
                    if holds and not was[(kind, level)]:
                        alerts.append({**base, "kind": kind, "reference_price": reference,
                                       "reference_time": reference_time})
                    was[(kind, level)] = holds
    return alerts


def expected_max_updates(ticks: list[dict], windows_ms=DEFAULT_WINDOWS_MS, spike_window_ms: int = 1000,
                         bound_ms: int = 2000, average_n: int = 20) -> list[dict]:
    kept, _ = split_duplicates(ticks)
    updates = []
    for symbol, applied in apply_order(kept).items():
        for segment in segments(applied, _idle_gap(windows_ms, spike_window_ms, bound_ms)):
            previous = {}
            for k, tick in enumerate(segment):
                last = [t["price"] for t in segment[max(0, k - average_n + 1): k + 1]]
                average = exact_sum(last) / len(last)
                for w in windows_ms:
                    low, low_time, high, high_time = window_extremes(segment, k, w * 1000)
                    if previous.get(w) != (high, low):
                        previous[w] = (high, low)
                        updates.append({"symbol": symbol, "window": window_name(w), "event_time": tick["event_time"],
                                        "seq": tick["seq"], "max": high, "max_time": high_time, "min": low,
                                        "min_time": low_time, "moving_average": average})
    return updates


def expected_rollups(ticks: list[dict], resolution_s: int) -> list[dict]:
    kept, _ = split_duplicates(ticks)
    size = resolution_s * 1_000_000
    rows = []
    for symbol, applied in apply_order(kept).items():
        buckets = defaultdict(list)
        for tick in applied:
            buckets[tick["event_time"] // size * size].append(tick)
        for start, members in sorted(buckets.items()):
            prices = [t["price"] for t in members]
            high, low = max(prices), min(prices)
            volume = exact_sum(t["volume"] for t in members)
            rows.append({
                "symbol": symbol, "resolution_s": resolution_s, "bucket_start": start,
                "open": prices[0], "close": prices[-1], "high": high, "low": low,
                "high_time": next(t["event_time"] for t in members if t["price"] == high),
                "low_time": next(t["event_time"] for t in members if t["price"] == low),
                "count": len(members), "volume": volume,
                "vwap": exact_sum(t["price"] * t["volume"] for t in members) / volume if volume > 0 else None,
            })
    return rows


def alert_key(alert: dict) -> tuple:
    return (alert["symbol"], alert["kind"], alert["event_time"], alert["seq"], alert["price"],
            alert["reference_price"], alert["reference_time"])


def update_key(update: dict) -> tuple:
    """A max update's fields the oracle computes (every field but window_ms and moving_average_ticks, which
    restate settings), compared exactly."""
    return (update["symbol"], update["window"], update["event_time"], update["seq"], update["max"],
            update["max_time"], update["min"], update["min_time"], update["moving_average"])
