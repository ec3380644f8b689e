"""The parts of `stockmax serve` that need no broker: the view over committed records, and a stream
client's bounded, coalescing backlog."""

from __future__ import annotations

from stockmax.live_view import LiveView
from stockmax.serve import Metrics, StreamClient


def update(symbol, window, event_time, high, seq=1):
    return {"symbol": symbol, "window": window, "window_ms": 0, "event_time": event_time, "seq": seq, "max": high,
            "max_time": event_time, "min": 1.0, "min_time": event_time, "moving_average": 1.0, "moving_average_ticks": 20}


def alert(symbol, event_time, seq):
    return {"symbol": symbol, "kind": "spike_up", "event_time": event_time, "seq": seq}


def test_the_view_keeps_the_newest_update_per_window_and_answers_alerts_newest_last():
    view = LiveView(alerts_kept=3, price_resolution_s=1)
    assert view.apply("max_updates", update("A", "1m", 10, 5.0)) == {"type": "max_change", **update("A", "1m", 10, 5.0)}
    view.apply("max_updates", update("A", "5m", 30, 7.0))
    view.apply("max_updates", update("A", "1m", 20, 6.0))
    # valid_at: the newest event time of any window's update (an unchanged window wrote none).
    assert view.live_max("A", "1m") == {**update("A", "1m", 20, 6.0), "valid_at": 30}
    assert view.live_max("A", "1h") is None and view.live_max("B", "1m") is None and not view.knows("B")
    for a in (alert("B", 5, 1), alert("A", 3, 1), alert("A", 9, 2), alert("B", 7, 2)):
        view.apply("alerts", a)
    # The last 3 read are kept; answered by event time, newest last.
    assert view.recent_alerts(None, None, 10) == [alert("A", 3, 1), alert("B", 7, 2), alert("A", 9, 2)]
    assert view.recent_alerts("A", None, 10) == [alert("A", 3, 1), alert("A", 9, 2)]
    assert view.recent_alerts(None, 6, 1) == [alert("A", 9, 2)]
    assert view.recent_alerts(None, None, 0) == []
    bar = {"symbol": "A", "resolution_s": 1, "bucket_start": 2_000_000, "close": 3.0}
    assert view.apply("rollups", bar)["type"] == "price_update"
    assert view.apply("rollups", {**bar, "resolution_s": 60}) is None  # only the finest resolution is a price
    view.apply("rollups", {**bar, "bucket_start": 1_000_000, "close": 9.0})  # an older bar (another partition)
    assert view.prices["A"]["close"] == 3.0


def test_a_slow_client_gets_max_updates_coalesced_and_is_dropped_before_an_alert_would_be():
    metrics = Metrics()
    client = StreamClient(socket=None, backlog=2, metrics=metrics)
    client.symbols = {"A"}
    for high in (1.0, 2.0, 3.0):
        event = {"type": "max_change", **update("A", "1m", int(high), high)}
        assert client.wants(event)
        client.offer(event)
    client.offer({"type": "alert", **alert("A", 1, 1)})
    client.offer({"type": "alert", **alert("A", 2, 2)})
    assert not client.overflowed
    # Alerts first, in order, then only the newest max update of the window.
    assert [e["type"] for e in client.take()] == ["alert", "alert", "max_change"]
    assert metrics.stream_coalesced._value.get() == 2
    for seq in range(3):
        client.offer({"type": "alert", **alert("A", seq, seq)})
    assert client.overflowed  # the sender closes it (1013) rather than drop the third alert
    assert not client.wants({"type": "alert", **alert("B", 1, 1)})
    client.windows = {"5m"}
    assert not client.wants({"type": "max_change", **update("A", "1m", 1, 1.0)})
