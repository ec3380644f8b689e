"""The pure operators against the brute-force oracle, over random streams (hypothesis)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from oracle import alert_key, apply_order, expected_alerts, expected_rollups, window_extremes
from stockmax.operators.extrema import SlidingExtrema
from stockmax.operators.rollups import RollupBuilder
from stockmax.operators.spikes import SpikeDetector
from stockmax.operators.symbol import SymbolProcessor, frontier_from_watermark_ms
from stockmax.operators.tick import Tick

DAY_US = 24 * 3600 * 1_000_000
WINDOWS_US = st.sampled_from([1, 1_000, 250_000, 1_000_000, 60_000_000, 3600 * 1_000_000, DAY_US])


def _tick(symbol, t, price, seq, volume=1.0):
    return Tick(symbol, price, volume, "X", seq, t)


@st.composite
def ordered_stream(draw, max_len=120):
    """Time-ordered ticks of one symbol: bursts at equal times, small steps and long gaps."""
    n = draw(st.integers(1, max_len))
    gaps = draw(st.lists(st.one_of(st.just(0), st.integers(1, 2_000), st.integers(1, 3 * DAY_US)),
                         min_size=n, max_size=n))
    prices = draw(st.lists(st.sampled_from([1.0, 1.01, 1.02, 1.05, 0.97, 0.99, 100.0, 100.5]) |
                           st.floats(0.01, 1e6, allow_nan=False), min_size=n, max_size=n))
    t, out = 1_700_000_000_000_000, []
    for i, (gap, price) in enumerate(zip(gaps, prices)):
        t += gap
        out.append(_tick("S", t, price, i, volume=float(i % 7)))
    return out


@given(ordered_stream(), WINDOWS_US)
@hyp_settings(max_examples=300, deadline=None)
def test_sliding_extrema_equals_brute_force(ticks, window_us):
    extrema = SlidingExtrema(window_us)
    as_dicts = [t._asdict() for t in ticks]
    for k, tick in enumerate(ticks):
        extrema.push(tick.event_time, tick.price)
        low, low_time, high, high_time = window_extremes(as_dicts, k, window_us)
        assert extrema.min == (low, low_time)
        assert extrema.max == (high, high_time)


def test_window_is_open_on_the_left():
    extrema = SlidingExtrema(1_000_000)
    extrema.push(0, 10.0)
    extrema.push(999_999, 5.0)
    assert extrema.max == (10.0, 0)  # 0 is inside (999_999 - 1 s, 999_999]
    extrema.push(1_000_000, 6.0)
    assert extrema.max == (6.0, 1_000_000)  # 0 left the window (1_000_000 - 1 s, 1_000_000]


@given(ordered_stream(), st.sampled_from([0.5, 2.0, 5.0]), st.sampled_from([1, 1000, 60_000]))
@hyp_settings(max_examples=300, deadline=None)
def test_spike_alerts_equal_brute_force(ticks, threshold_pct, window_ms):
    detector = SpikeDetector(threshold_pct, window_ms * 1000)
    got = [a for t in ticks for a in detector.on_tick(t)]
    want = expected_alerts([t._asdict() for t in ticks], threshold_pct, window_ms)
    assert [alert_key(a) for a in got] == [alert_key(a) for a in want]


def test_one_move_gives_one_alert_then_rearms():
    detector = SpikeDetector(2.0, 1_000_000)
    prices = [100.0, 103.0, 104.0, 105.0]  # one move up: the condition stays true for three ticks
    alerts = [a for i, p in enumerate(prices) for a in detector.on_tick(_tick("S", i * 1000, p, i))]
    assert [a["kind"] for a in alerts] == ["spike_up"]
    # 2 s later the window holds only the new tick: the condition is false, the rule re-arms ...
    assert detector.on_tick(_tick("S", 3_000_000, 105.0, 4)) == []
    # ... and the next move fires again.
    assert [a["kind"] for a in detector.on_tick(_tick("S", 3_100_000, 108.0, 5))] == ["spike_up"]


def test_both_directions_in_one_window():
    detector = SpikeDetector(2.0, 1_000_000)
    kinds = [a["kind"] for i, p in enumerate([100.0, 97.0, 100.0])
             for a in detector.on_tick(_tick("S", i * 100_000, p, i))]
    assert kinds == ["spike_down", "spike_up"]


@given(ordered_stream(), st.sampled_from([1, 60, 3600]))
@hyp_settings(max_examples=200, deadline=None)
def test_rollups_equal_brute_force(ticks, resolution_s):
    builder = RollupBuilder(resolution_s)
    for tick in ticks:
        builder.add(tick)
    got = builder.close_before(ticks[-1].event_time + resolution_s * 1_000_000 + 1)
    want = expected_rollups([t._asdict() for t in ticks], resolution_s)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in ("volume", "vwap")} == \
               {k: v for k, v in w.items() if k not in ("volume", "vwap")}
        assert g["volume"] == pytest.approx(w["volume"])
        assert g["vwap"] == pytest.approx(w["vwap"])


def test_bucket_closes_only_when_the_frontier_reaches_its_end():
    builder = RollupBuilder(60)
    builder.add(_tick("S", 0, 1.0, 0))
    assert builder.close_before(59_999_999) == []
    assert [r["bucket_start"] for r in builder.close_before(60_000_000)] == [0]


@st.composite
def arrivals_with_watermarks(draw):
    """Several symbols, delivered out of order, with the frontier advancing between deliveries."""
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=80))
    ticks, t = [], 1_700_000_000_000_000
    for i, symbol in enumerate(symbols):
        t += draw(st.sampled_from([0, 1, 700, 300_000, 1_200_000, 70_000_000]))
        ticks.append(_tick(symbol, t, draw(st.sampled_from([10.0, 10.1, 10.3, 9.7, 9.9, 11.0])), i, 2.0))
    shuffled = draw(st.permutations(ticks))
    # A frontier step before each delivery: it may stay, or move up to just past some tick time.
    steps = draw(st.lists(st.booleans(), min_size=len(shuffled), max_size=len(shuffled)))
    return shuffled, steps


@given(arrivals_with_watermarks())
@hyp_settings(max_examples=300, deadline=None)
def test_symbol_processor_applies_in_order_and_rejects_late_ticks(case):
    arrivals, steps = case
    processors, frontier, accepted, alerts, rollups = {}, -(2**62), [], [], []
    for tick, step in zip(arrivals, steps):
        if step:  # the watermark advances to the newest time seen so far, as a bounded watermark would
            frontier = max(frontier, max(t.event_time for t in accepted) if accepted else frontier)
            for p in processors.values():
                a, r = p.advance(frontier)
                alerts += a
                rollups += r
        p = processors.setdefault(tick.symbol, SymbolProcessor(2.0, 1000, 60))
        p = pickle.loads(pickle.dumps(p))  # state survives a checkpoint round trip at any point
        processors[tick.symbol] = p
        if p.accept(tick, frontier):
            assert tick.event_time >= frontier
            accepted.append(tick)
        else:
            assert tick.event_time < frontier  # late exactly when behind the frontier
    for p in processors.values():  # end of input: the watermark goes to +infinity
        a, r = p.advance(2**62)
        alerts += a
        rollups += r
    as_dicts = [t._asdict() for t in accepted]
    assert sorted(map(alert_key, alerts)) == sorted(map(alert_key, expected_alerts(as_dicts, 2.0, 1000)))
    want = expected_rollups(as_dicts, 60)
    key = lambda r: (r["symbol"], r["bucket_start"])
    assert sorted(map(key, rollups)) == sorted(map(key, want))
    for g, w in zip(sorted(rollups, key=key), sorted(want, key=key)):
        assert (g["open"], g["high"], g["low"], g["close"], g["count"]) == \
               (w["open"], w["high"], w["low"], w["close"], w["count"])


def test_frontier_from_flink_watermark():
    # A Flink watermark of W ms promises every tick with a timestamp <= W ms has arrived: every µs below W+1 ms.
    assert frontier_from_watermark_ms(999) == 1_000_000
    processor = SymbolProcessor(2.0, 1000, 60)
    assert not processor.accept(_tick("S", 999_999, 1.0, 0), frontier_from_watermark_ms(999))
    assert processor.accept(_tick("S", 1_000_000, 1.0, 1), frontier_from_watermark_ms(999))


def test_apply_order_breaks_time_ties_by_seq_then_arrival():
    ticks = [{"symbol": "S", "event_time": 5, "seq": 2, "price": 1.0},
             {"symbol": "S", "event_time": 5, "seq": 1, "price": 2.0},
             {"symbol": "S", "event_time": 4, "seq": 9, "price": 3.0}]
    assert [t["price"] for t in apply_order(ticks)["S"]] == [3.0, 2.0, 1.0]
