"""The pure operators against the brute-force oracle (and pandas), over random streams (hypothesis)."""

from __future__ import annotations

import gc
import json
from fractions import Fraction
import io
import pickle
from pathlib import Path
import random

import pandas as pd
import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from oracle import (alert_key, apply_order, expected_alerts, expected_max_updates, expected_rollups, update_key,
                    window_extremes)
from stockmax.operators import columnar as columnar_module
from stockmax.operators.columnar import StepOutputs, advance_symbols
from stockmax.operators.wire import output_line
from stockmax.operators.dedup import DuplicateFilter
from stockmax.operators.durations import format_duration, parse_duration_us, parse_windows
from stockmax.operators.extrema import MultiWindowExtrema
from stockmax.operators.reorder import ReorderBuffer
from stockmax.operators.rollups import RollupBuilder
from stockmax.operators.symbol import Rules, SymbolProcessor, frontier_from_watermark_ms
from stockmax.operators.tick import SCHEMA_PATH, Tick
from pure_run import END_OF_INPUT, keyed_values, run_processor

MS = 1000
HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US
START = 1_700_000_000_000_000


def _tick(symbol, t, price, seq, volume=1.0, exchange="X"):
    return Tick(symbol, price, volume, exchange, seq, t)


# -- multi-window extrema ---------------------------------------------------------------------------

@st.composite
def ordered_stream(draw, max_len=120):
    """Time-ordered ticks of one symbol: bursts at equal times, small steps and long gaps."""
    n = draw(st.integers(1, max_len))
    gaps = draw(st.lists(st.one_of(st.just(0), st.integers(1, 2_000), st.integers(1, 3 * DAY_US)),
                         min_size=n, max_size=n))
    prices = draw(st.lists(st.sampled_from([1.0, 1.01, 1.02, 1.05, 0.97, 0.99, 100.0, 100.5]) |
                           st.floats(0.01, 1e6, allow_nan=False), min_size=n, max_size=n))
    t, out = START, []
    for i, (gap, price) in enumerate(zip(gaps, prices)):
        t += gap
        out.append(_tick("S", t, price, i, volume=float(i % 7)))
    return out


WINDOW_SETS = st.lists(st.sampled_from([MS, 250 * MS, 1000 * MS, 60_000 * MS, HOUR_US, DAY_US]),
                       min_size=1, max_size=4, unique=True)


@given(ordered_stream(), WINDOW_SETS)
@hyp_settings(max_examples=300, deadline=None)
def test_every_window_equals_brute_force(ticks, windows):
    extrema = MultiWindowExtrema(max(windows))
    as_dicts = [t._asdict() for t in ticks]
    for k, tick in enumerate(ticks):
        extrema.push(tick.event_time, tick.price)
        for w in windows:
            low, low_time, high, high_time = window_extremes(as_dicts, k, w)
            assert extrema.min(w) == (low, low_time)
            assert extrema.max(w) == (high, high_time)
            assert extrema.window(w) == (high, high_time, low, low_time)


def test_max_per_tick_equals_pandas_time_rolling():
    """A second oracle: pandas' time-based rolling max/min over (t - W, t], on a random walk."""
    rng = random.Random(5)
    t, price, ticks = START, 100.0, []
    for i in range(4000):
        t += rng.choice([0, 1, 500, 20_000, 300_000, 2_000_000, 90_000_000])
        price = round(price * (1 + rng.gauss(0, 0.002)), 4)
        ticks.append(_tick("S", t, price, i))
    windows = (MS, 1000 * MS, 60_000 * MS, 300_000 * MS, HOUR_US)
    extrema = MultiWindowExtrema(max(windows))
    ours = {w: ([], []) for w in windows}
    for tick in ticks:
        extrema.push(tick.event_time, tick.price)
        for w in windows:
            ours[w][0].append(extrema.max(w)[0])
            ours[w][1].append(extrema.min(w)[0])
    series = pd.Series([x.price for x in ticks], index=pd.to_datetime([x.event_time for x in ticks], unit="us"))
    for w in windows:
        rolling = series.rolling(pd.Timedelta(microseconds=w), closed="right")
        assert ours[w][0] == rolling.max().tolist(), format_duration(w)
        assert ours[w][1] == rolling.min().tolist(), format_duration(w)


def test_window_is_open_on_the_left():
    extrema = MultiWindowExtrema(1_000_000)
    extrema.push(0, 10.0)
    extrema.push(999_999, 5.0)
    assert extrema.max(1_000_000) == (10.0, 0)  # 0 is inside (999_999 - 1 s, 999_999]
    extrema.push(1_000_000, 6.0)
    assert extrema.max(1_000_000) == (6.0, 1_000_000)  # 0 left the window (1_000_000 - 1 s, 1_000_000]


def test_pushing_back_in_time_is_refused():
    extrema = MultiWindowExtrema(1_000_000)
    extrema.push(10, 1.0)
    with pytest.raises(ValueError):
        extrema.push(9, 1.0)


# -- the whole per-symbol processor ----------------------------------------------------------------

@st.composite
def market(draw):
    """Many symbols; bursts at equal timestamps; disorder within the watermark bound; duplicates; gaps
    longer than the longest window; windows from 1 ms to 24 h; per-symbol rule overrides and levels."""
    windows_ms = tuple(sorted(draw(st.lists(st.sampled_from([1, 250, 1000, 60_000, 3_600_000, 86_400_000]),
                                            min_size=1, max_size=3, unique=True))))
    bound_ms = draw(st.sampled_from([0, 5, 2000]))
    n = draw(st.integers(1, 150))
    t, ticks = START, []
    seqs = {}
    for _ in range(n):
        t += draw(st.sampled_from([0, 0, 1, 700, 300_000, 1_100_000, 65_000_000, 2 * DAY_US]))
        symbol = draw(st.sampled_from(["AAA", "BBB", "CCC", "DDD"]))
        seqs[symbol] = seqs.get(symbol, 0) + 1
        price = draw(st.sampled_from([10.0, 10.1, 10.25, 9.7, 9.9, 11.0, 10.0]))
        ticks.append(_tick(symbol, t, price, seqs[symbol], volume=float(draw(st.integers(0, 3))),
                           exchange=draw(st.sampled_from(["XNAS", "BATS"]))))
    # Disorder within the bound: a tick may arrive after ticks up to bound_ms later than itself.
    keyed = [(tk.event_time + draw(st.integers(0, bound_ms * 1000)), i, tk) for i, tk in enumerate(ticks)]
    arrivals = [tk for *_, tk in sorted(keyed)]
    # Duplicates: some ticks are delivered twice, the copy shortly after the original.
    for i in sorted(draw(st.lists(st.integers(0, len(arrivals) - 1), max_size=8, unique=True)), reverse=True):
        arrivals.insert(min(len(arrivals), i + draw(st.integers(1, 3))), arrivals[i])
    rules = Rules(windows_us=tuple(w * 1000 for w in windows_ms), spike_threshold_pct=2.0, spike_window_us=1_000_000,
                  levels=(10.05, 10.5), moving_average_ticks=draw(st.sampled_from([1, 3, 20])),
                  watermark_bound_us=bound_ms * 1000,
                  overrides={"BBB": {"spike_threshold_pct": 1.0, "spike_window_us": 250_000, "levels": [9.8]}})
    return arrivals, rules


def _oracle_overrides(rules: Rules) -> dict:
    return {s: {"spike_threshold_pct": o["spike_threshold_pct"], "spike_window_ms": o["spike_window_us"] // 1000,
                "levels": o["levels"]} for s, o in rules.overrides.items()}


@pytest.mark.parametrize("columnar", [False, True], ids=["per-tick", "columnar"])
@given(case=market())
@hyp_settings(max_examples=300, deadline=None)
def test_processor_outputs_equal_the_oracle(columnar, case):
    arrivals, rules = case
    got = run_processor(arrivals, rules, columnar)
    ticks = [tk._asdict() for tk in arrivals]
    windows_ms = tuple(w // 1000 for w in rules.windows_us)
    bound_ms = rules.watermark_bound_us // 1000

    want_alerts = expected_alerts(ticks, 2.0, 1000, levels=rules.levels, windows_ms=windows_ms, bound_ms=bound_ms,
                                  overrides=_oracle_overrides(rules))
    assert sorted(map(alert_key, got["alerts"]), key=repr) == sorted(map(alert_key, want_alerts), key=repr)

    want_updates = expected_max_updates(ticks, windows_ms, 1000, bound_ms, rules.moving_average_ticks)
    # BBB's own spike window also bounds its idle gap; recompute that symbol with its override.
    want_updates = [u for u in want_updates if u["symbol"] != "BBB"] + [
        u for u in expected_max_updates([t for t in ticks if t["symbol"] == "BBB"], windows_ms, 250, bound_ms,
                                        rules.moving_average_ticks)]
    assert sorted(map(update_key, got["max_updates"]), key=repr) == sorted(map(update_key, want_updates), key=repr)

    want_rollups = [row for r in rules.rollup_resolutions_s for row in expected_rollups(ticks, r)]
    rollup_key = lambda r: (r["symbol"], r["resolution_s"], r["bucket_start"])
    assert sorted(map(rollup_key, got["rollups"])) == sorted(map(rollup_key, want_rollups))
    for g, w in zip(sorted(got["rollups"], key=rollup_key), sorted(want_rollups, key=rollup_key)):
        assert g == w

    copies = len(arrivals) - len({(t.symbol, t.exchange, t.seq) for t in arrivals})
    assert [reason for reason, _ in got["rejected"]] == ["duplicate"] * copies


def _exact_state(p: SymbolProcessor) -> tuple:
    """What a processor holds; an open bucket's sums as their exact values (their terms may differ)."""
    buckets = [None if b._open_bucket is None else
               b._open_bucket[:9] + [sum(map(Fraction, terms), Fraction(0)) for terms in b._open_bucket[9:]]
               for b in p.rollups]
    return (p.extrema.candidate_lists(), p.extrema.now, p.last_values, p.last_applied, p.spike.up_armed,
            p.spike.down_armed, p.thresholds.up_armed, p.thresholds.down_armed, buckets, len(p.pending),
            p.average.recent())


def _by_key(kind: str, records: list) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, value in keyed_values(kind, records):
        out.setdefault(key, []).append(value)
    return out


@given(case=market(), data=st.data())
@hyp_settings(max_examples=300, deadline=None)
def test_columnar_advance_gives_and_leaves_what_per_tick_advance_does(case, data):
    """Many advances, state carried (and pickled) between them: every key's outputs in the same order, and
    each processor left holding the same. The columnar step picks of a processor's held candidates only
    those its windows can start at; with `_ALL_HELD_UP_TO` at 0 it picks whenever anything is held."""
    arrivals, rules = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar_module, "_ALL_HELD_UP_TO", data.draw(st.sampled_from([0, 1, 8])))
        _columnar_against_per_tick(arrivals, rules, data)


def _columnar_against_per_tick(arrivals, rules, data):
    steps = data.draw(st.lists(st.booleans(), min_size=len(arrivals), max_size=len(arrivals)))
    per_tick, columnar = {}, {}
    got, want = StepOutputs([], [], []), StepOutputs([], [], [])
    frontier, newest = -END_OF_INPUT, -END_OF_INPUT

    def advance(to):
        for symbol, p in per_tick.items():
            out = p.advance(to)
            want.max_updates.extend(tuple(u.values()) for u in out.max_updates)
            want.alerts.extend(output_line(symbol.encode(), a) for a in out.alerts)
            want.rollups.extend(tuple(r.values()) for r in out.rollups)
        for kind, records in zip(StepOutputs._fields, advance_symbols(list(columnar.items()), to, min_columnar_ticks=0)):
            getattr(got, kind).extend(records)
        for symbol, p in per_tick.items():
            assert _exact_state(columnar[symbol]) == _exact_state(p), symbol

    for tick, step in zip(arrivals, steps):
        if step:
            frontier = max(frontier, newest - rules.watermark_bound_us)
            advance(frontier)
            if data.draw(st.booleans()):  # a checkpoint and restore
                columnar = {s: pickle.loads(pickle.dumps(p)) for s, p in columnar.items()}
        for processors in (per_tick, columnar):
            p = processors.setdefault(tick.symbol, SymbolProcessor(rules.for_symbol(tick.symbol)))
            p.accept(tick, frontier)
        newest = max(newest, tick.event_time)
    advance(END_OF_INPUT)
    for kind in StepOutputs._fields:
        g, w = _by_key(kind, getattr(got, kind)), _by_key(kind, getattr(want, kind))
        assert g.keys() == w.keys()
        for key in w:
            assert g[key] == w[key], (kind, key)  # every field, bit for bit


def test_output_records_have_their_schemas_fields_and_types():
    """What the operators write is what schemas/ documents: every property, in its order, of its type."""
    schemas = {kind: json.loads((SCHEMA_PATH.parent / f"{name}.schema.json").read_text())
               for kind, name in (("max_updates", "max_update"), ("rollups", "rollup"), ("alerts", "alert"))}
    ticks = [_tick("S", START + i * 400_000, p, i, volume=float(i % 2)) for i, p in enumerate([10.0, 10.5, 9.0, 9.0])]
    for columnar in (False, True):
        out = run_processor(ticks, Rules(levels=(9.5,)), columnar)
        types = {"integer": int, "number": float, "string": str, "null": type(None)}
        for kind, schema in schemas.items():
            assert out[kind] and {r.get("kind") for r in out[kind]} >= ({"spike_up", "threshold_down"} if kind == "alerts" else {None})
            for record in out[kind]:
                assert tuple(record) == tuple(schema["properties"]) and set(schema["required"]) == set(record)
                for name, value in record.items():
                    allowed = schema["properties"][name]["type"]
                    allowed = [allowed] if isinstance(allowed, str) else allowed
                    assert any(type(value) is types[t] for t in allowed), (kind, name, value)
                    assert value in schema["properties"][name].get("enum", [value])


def test_columnar_step_over_a_very_long_span_of_many_symbols():
    """Keys stay within int64 however long the released span: ten segments a quintillion µs apart."""
    rules = Rules(windows_us=(1_000_000,), spike_window_us=1_000_000, rollup_resolutions_s=(1,))
    ticks = [_tick(s, START + i * 10**18 + j, 10.0 + j, 3 * i + j) for s in "ABCDE" for i in range(2) for j in range(3)]
    per_tick = run_processor(ticks, rules)
    columnar = run_processor(ticks, rules, columnar=True)
    assert columnar["max_updates"] == per_tick["max_updates"] and len(per_tick["max_updates"]) == 30


def test_columnar_state_forgets_exactly_what_left_the_longest_window():
    """A held value exactly one longest window before the newest tick is outside every window: dropped."""
    rules = Rules(windows_us=(1_000_000,), spike_window_us=1_000_000, rollup_resolutions_s=(1,))
    prices = [9.0, 8.0, 7.0, 6.0, 5.0]  # each a max candidate until it leaves the window
    ticks = [_tick("S", START + i * 500_000, price, i) for i, price in enumerate(prices)]
    per_tick, columnar = SymbolProcessor(rules), SymbolProcessor(rules)
    for tick in ticks:
        for p in (per_tick, columnar):
            p.accept(tick, -END_OF_INPUT)
    per_tick.advance(END_OF_INPUT)
    advance_symbols([("S", columnar)], END_OF_INPUT, min_columnar_ticks=0)
    assert per_tick.extrema.candidate_lists() == ([START + 1_500_000, START + 2_000_000], [6.0, 5.0],
                                                  [START + 2_000_000], [5.0])
    assert _exact_state(columnar) == _exact_state(per_tick)


@st.composite
def arrivals_with_watermarks(draw):
    """Several symbols, delivered in any order, with the frontier advancing between deliveries."""
    symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=80))
    ticks, t = [], START
    for i, symbol in enumerate(symbols):
        t += draw(st.sampled_from([0, 1, 700, 300_000, 1_200_000, 70_000_000]))
        ticks.append(_tick(symbol, t, draw(st.sampled_from([10.0, 10.1, 10.3, 9.7, 9.9, 11.0])), i, 2.0))
    shuffled = draw(st.permutations(ticks))
    steps = draw(st.lists(st.booleans(), min_size=len(shuffled), max_size=len(shuffled)))
    return shuffled, steps


@given(arrivals_with_watermarks())
@hyp_settings(max_examples=300, deadline=None)
def test_late_ticks_are_exactly_those_behind_the_frontier_and_the_rest_is_exact(case):
    arrivals, steps = case
    rules = Rules(windows_us=(1_000_000, 60_000_000))
    processors, frontier, accepted, alerts, updates = {}, -END_OF_INPUT, [], [], []
    for tick, step in zip(arrivals, steps):
        if step:  # the watermark advances to the newest time seen so far
            frontier = max([frontier] + [t.event_time for t in accepted])
            for p in processors.values():
                out = p.advance(frontier)
                alerts += out.alerts
                updates += out.max_updates
        p = processors.setdefault(tick.symbol, SymbolProcessor(rules))
        p = processors[tick.symbol] = pickle.loads(pickle.dumps(p))  # state survives a checkpoint anywhere
        reason = p.accept(tick, frontier)
        assert (reason == "late") == (tick.event_time < frontier)
        if reason is None:
            accepted.append(tick)
    for p in processors.values():
        out = p.advance(END_OF_INPUT)
        alerts += out.alerts
        updates += out.max_updates
    as_dicts = [t._asdict() for t in accepted]
    assert sorted(map(alert_key, alerts)) == sorted(map(alert_key, expected_alerts(as_dicts, 2.0, 1000, windows_ms=(1000, 60_000))))
    assert sorted(map(update_key, updates)) == sorted(map(update_key, expected_max_updates(as_dicts, (1000, 60_000))))


@given(case=market(), data=st.data())
@hyp_settings(max_examples=200, deadline=None)
def test_stored_processors_restored_anywhere_give_exactly_what_uninterrupted_ones_give(case, data):
    """The job's layout (operators/stored.py): each processor stored without its sealed dedup chunks, each
    chunk written once and removed once forgotten. Restored from that store at any point (as after a
    checkpoint), processors give the same outputs and rejections, field for field, as processors that
    never stopped; and the store then holds exactly the chunks the live filters still need."""
    from stockmax.operators import dedup

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dedup, "SEAL_KEYS", data.draw(st.sampled_from([1, 2, 5])))
        _stored_against_live(*case, data)


def _stored_against_live(arrivals, rules, data):
    from stockmax.operators.stored import StoredSymbolProcessor, attach_chunks, chunk_key, store_chunks

    steps = data.draw(st.lists(st.sampled_from(["tick", "tick", "advance", "restore", "repeat"]),
                               min_size=len(arrivals), max_size=len(arrivals)))
    live, stored, store, frontier = {}, {}, DictChunks(), -END_OF_INPUT
    got = {"live": [], "stored": []}
    arrived = []

    def advance(frontier_us):
        for name, processors in (("live", live), ("stored", stored)):
            for symbol in sorted(processors):
                got[name].append(processors[symbol].advance(frontier_us))
                if name == "stored":
                    store_chunks(symbol, processors[symbol], store)

    for tick, step in zip(arrivals, steps):
        if step == "advance":
            frontier = max([frontier] + [t.event_time - rules.watermark_bound_us for t in arrived])
            advance(frontier)
        elif step == "restore":
            for symbol, processor in stored.items():
                store_chunks(symbol, processor, store)
            stored = {symbol: attach_chunks(symbol, pickle.loads(pickle.dumps(p)), store) for symbol, p in stored.items()}
        # "repeat": a copy of an earlier tick too, maybe long released (remembered, or forgotten and late).
        repeats = [data.draw(st.sampled_from(arrived))] if step == "repeat" and arrived else []
        arrived.append(tick)
        for each in [tick, *repeats]:
            for name, processors in (("live", live), ("stored", stored)):
                kind = SymbolProcessor if name == "live" else StoredSymbolProcessor
                p = processors.setdefault(each.symbol, kind(rules.for_symbol(each.symbol)))
                got[name].append(p.accept(each, frontier))
    advance(END_OF_INPUT)
    assert got["stored"] == got["live"]
    for symbol, processor in stored.items():
        store_chunks(symbol, processor, store)
    assert sorted(store) == sorted(chunk_key(symbol, chunk[0]) for symbol, p in stored.items()
                                   for chunk in p.duplicates._chunks)


# -- rules, one behaviour each ---------------------------------------------------------------------

def _apply_all(rules, ticks):
    return run_processor(ticks, rules)


def test_one_move_gives_one_alert_then_rearms():
    prices = [100.0, 103.0, 104.0, 105.0, 105.0, 108.0]
    times = [0, 1000, 2000, 3000, 3_000_000, 3_100_000]  # 2 s pause: the window then holds one tick
    out = _apply_all(Rules(), [_tick("S", START + t, p, i) for i, (t, p) in enumerate(zip(times, prices))])
    assert [(a["kind"], a["price"]) for a in out["alerts"]] == [("spike_up", 103.0), ("spike_up", 108.0)]


def test_both_directions_in_one_window():
    out = _apply_all(Rules(), [_tick("S", START + i * 100_000, p, i) for i, p in enumerate([100.0, 97.0, 100.0])])
    assert [a["kind"] for a in out["alerts"]] == ["spike_down", "spike_up"]


def test_threshold_crossings_are_edge_triggered_both_ways():
    prices = [99.0, 101.0, 102.0, 99.0, 98.0, 101.0]
    out = _apply_all(Rules(levels=(100.0,)), [_tick("S", START + i * 5_000_000, p, i) for i, p in enumerate(prices)])
    kinds = [(a["kind"], a["price"]) for a in out["alerts"] if a["kind"].startswith("threshold")]
    assert kinds == [("threshold_down", 99.0), ("threshold_up", 101.0), ("threshold_down", 99.0),
                     ("threshold_up", 101.0)]
    assert out["alerts"][0]["reference_price"] == 100.0 and out["alerts"][0]["reference_time"] is None


def test_per_symbol_overrides():
    rules = Rules(overrides={"B": {"spike_threshold_pct": 10.0}})
    ticks = [_tick(s, START + i * 1000, p, i) for s in ("A", "B") for i, p in enumerate([100.0, 103.0])]
    assert [a["symbol"] for a in _apply_all(rules, ticks)["alerts"]] == ["A"]


def test_max_update_only_when_a_value_changes():
    ticks = [_tick("S", START + i * 1000, p, i) for i, p in enumerate([5.0, 5.0, 4.0, 4.5])]
    updates = _apply_all(Rules(windows_us=(1_000_000,)), ticks)["max_updates"]
    assert [(u["max"], u["min"], u["seq"]) for u in updates] == [(5.0, 5.0, 0), (5.0, 4.0, 2)]
    assert updates[1]["moving_average"] == 14.0 / 3


def test_duplicates_are_dropped_and_reported():
    tick = _tick("S", START, 5.0, 7, exchange="XNAS")
    same_seq_other_exchange = _tick("S", START, 6.0, 7, exchange="BATS")
    out = _apply_all(Rules(), [tick, tick, same_seq_other_exchange])
    assert out["rejected"] == [("duplicate", tick)]
    assert out["rollups"][0]["count"] == 2


def test_duplicate_memory_is_bounded_by_its_horizon():
    p = SymbolProcessor(Rules(dedup_horizon_us=10_000_000))
    tick = _tick("S", START, 5.0, 1)
    assert p.accept(tick, -END_OF_INPUT) is None
    p.advance(START + 5_000_000)
    assert p.accept(tick, START + 5_000_000) == "duplicate"  # still remembered
    p.advance(START + 10_000_001)
    assert len(p.duplicates) == 0
    assert p.accept(tick, START + 10_000_001) == "late"  # forgotten, and behind the watermark anyway


def test_idle_symbol_state_expires_and_a_fresh_one_gives_the_same_results():
    rules = Rules(windows_us=(1_000_000, 60_000_000), levels=(5.5,), rollup_resolutions_s=(60,))
    first = [_tick("S", START + i * 1000, p, i) for i, p in enumerate([5.0, 6.0, 5.2])]
    later = [_tick("S", START + 70_000_000 + i * 1000, p, 10 + i) for i, p in enumerate([6.0, 6.05])]
    kept = SymbolProcessor(rules)
    for t in first:
        kept.accept(t, -END_OF_INPUT)
    kept.advance(first[-1].event_time + 1)
    gap_end = first[-1].event_time + rules.idle_gap_us
    assert not kept.expired(gap_end)  # the rollup bucket is still open, the gap not yet over
    kept.advance(gap_end + 1)
    assert kept.expired(gap_end + 1)
    fresh = SymbolProcessor(rules)  # what the job holds after dropping the state
    for p in (kept, fresh):
        for t in later:
            p.accept(t, gap_end + 1)
    a, b = kept.advance(END_OF_INPUT), fresh.advance(END_OF_INPUT)
    assert a.alerts == b.alerts and a.max_updates == b.max_updates and a.rollups == b.rollups
    assert [x["kind"] for x in a.alerts] == ["threshold_up"]  # the level re-arms after the idle gap


def test_rollups_equal_brute_force():
    rng = random.Random(9)
    ticks = sorted((_tick("S", START + rng.randrange(0, 600_000_000), round(rng.uniform(9, 11), 2), i, rng.randint(0, 9))
                    for i in range(2000)), key=lambda t: (t.event_time, t.seq))
    builder = RollupBuilder(60)
    for tick in ticks:
        builder.add(tick)
    got = builder.close_before(END_OF_INPUT)
    want = expected_rollups([t._asdict() for t in ticks], 60)
    assert got == want  # every field, volume and VWAP too, bit for bit


def test_bucket_closes_only_when_the_frontier_reaches_its_end():
    builder = RollupBuilder(60)
    builder.add(_tick("S", 0, 1.0, 0))
    assert builder.close_before(59_999_999) == []
    assert [r["bucket_start"] for r in builder.close_before(60_000_000)] == [0]


def test_frontier_from_flink_watermark():
    # A Flink watermark of W ms promises every tick with a timestamp <= W ms has arrived: every µs below W+1 ms.
    assert frontier_from_watermark_ms(999) == 1_000_000
    p = SymbolProcessor(Rules())
    assert p.accept(_tick("S", 999_999, 1.0, 0), frontier_from_watermark_ms(999)) == "late"
    assert p.accept(_tick("S", 1_000_000, 1.0, 1), frontier_from_watermark_ms(999)) is None


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), max_size=40), st.integers(0, 7), st.integers(0, 40))
@hyp_settings(max_examples=300, deadline=None)
def test_reorder_buffer_releases_in_time_seq_arrival_order(keys, frontier, pickled_after):
    """Pickled after some pushes (which sorts what arrived so far into the held ticks), then the rest pushed."""
    buffer = ReorderBuffer()
    ticks = [_tick("S", t, 1.0, seq, exchange=f"E{i}") for i, (t, seq) in enumerate(keys)]
    for i, tick in enumerate(ticks):
        if i == pickled_after:
            buffer = pickle.loads(pickle.dumps(buffer))
        buffer.push(tick)
    assert buffer.earliest() == min((t.event_time for t in ticks), default=None)
    want = sorted((t for t in ticks if t.event_time < frontier), key=lambda t: (t.event_time, t.seq, ticks.index(t)))
    assert buffer.release_before(frontier) == want
    rest = sorted((t for t in ticks if t.event_time >= frontier), key=lambda t: (t.event_time, t.seq, ticks.index(t)))
    assert len(buffer) == len(rest) and buffer.earliest() == (rest[0].event_time if rest else None)
    assert pickle.loads(pickle.dumps(buffer)).release_before(99) == rest


class DictChunks(dict):
    """A MapState's get/put/remove over a dict (what operators/stored.py writes sealed chunks to)."""

    def put(self, key, value):
        assert key not in self, "a sealed chunk is written once"
        self[key] = pickle.loads(pickle.dumps(value))

    def remove(self, key):
        del self[key]


@given(st.lists(st.tuples(st.sampled_from(["claim", "release", "forget", "pickle", "store"]),
                          st.sampled_from(["X", "Y"]), st.integers(0, 150), st.integers(-20, 30)), max_size=400),
       st.sampled_from([1, 3, 64]))
@hyp_settings(max_examples=300, deadline=None)
def test_duplicate_filter_equals_a_dict_of_key_to_time(steps, seal_keys):
    """Against plain dicts of key -> time: claim (only what is not seen, as the processor does); release
    claimed keys in batches in time order (each batch up to the present time: mostly after the previous
    one, sometimes before it); forget released keys older than frontier - horizon; survive pickling at any
    point, the owner claiming its unreleased keys again; and survive a restore from a snapshot without its
    sealed chunks, those written once and removed once forgotten to a store of their own, which then
    holds exactly the chunks the filter still has."""
    dups, released, claimed, now, store = DuplicateFilter(50, seal_keys), {}, {}, 0, DictChunks()
    for action, exchange, seq, step in steps:
        now += step  # mostly forward, sometimes back
        key = (exchange, seq)
        if action == "claim" and key not in released and key not in claimed:
            dups.claim(exchange, seq)
            claimed[key] = now
        elif action == "release":
            batch = sorted((t, k) for k, t in claimed.items() if t <= now)
            dups.remember_released([k[0] for _, k in batch], [k[1] for _, k in batch], [t for t, _ in batch])
            for t, k in batch:
                released[k] = claimed.pop(k)
        elif action == "forget":
            dups.forget_before(now)
            released = {k: t for k, t in released.items() if t >= now - 50}
        elif action == "pickle":  # a whole snapshot: stands alone, its chunks all written afresh if stored
            dups = pickle.loads(pickle.dumps(dups))
            dups.claim_all(claimed)
            store.clear()
        elif action == "store":
            sealed, dropped = dups.take_changes()
            for chunk_id, contents in sealed:
                store.put(chunk_id, contents)
            for chunk_id in dropped:
                store.remove(chunk_id)
            assert sorted(store) == [chunk[0] for chunk in dups._chunks]
            dups = DuplicateFilter.restore(pickle.loads(pickle.dumps(dups.snapshot(external=True))))
            assert sorted(dups.missing_chunks) == sorted(store)
            for chunk_id in dups.missing_chunks:
                dups.attach(chunk_id, store[chunk_id])
            dups.claim_all(claimed)
        assert len(dups) == len(released) + len(claimed)
        assert all(dups.seen(*key) for key in [*released, *claimed]) and not dups.seen(exchange, seq + 1000)


def test_a_duplicate_filter_gives_the_garbage_collector_no_object_per_key():
    """A live feed keeps a horizon's worth of keys (~1 M at 20 k ticks/s) and forgets as many a second: were
    each an object the collector tracks, its collections would come rarely and walk them all, stopping the
    worker for up to a second (bench/README.md). Tens of thousands of keys may add only a few objects."""
    dups = DuplicateFilter(horizon_us=10**9)
    exchanges = ["XNAS" if seq % 3 else "ARCX" for seq in range(20_000)]
    gc.collect()
    gc.disable()  # as in the job, where collections came rarely: none here to untrack a tuple
    try:
        before = len(gc.get_objects())
        for seq, exchange in enumerate(exchanges):
            dups.claim(exchange, seq)
        dups.remember_released(exchanges, list(range(20_000)), list(range(20_000)))
        added = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert len(dups) == 20_000 and dups.seen("ARCX", 3) and not dups.seen("XNAS", 3)
    assert added < 1_000


def test_a_pickled_processor_still_refuses_repeats_of_its_buffered_ticks():
    """Buffered ticks' keys are not in the duplicate filter's pickled state; the processor claims them
    again when it is restored."""
    p = SymbolProcessor(Rules())
    ticks = [_tick("S", START + i, 5.0, i) for i in range(4)]
    for tick in ticks:
        assert p.accept(tick, -END_OF_INPUT) is None
    p.advance(START + 2)  # two released, two still buffered
    restored = pickle.loads(pickle.dumps(p))
    assert len(restored.duplicates) == 4 and len(restored.pending) == 2
    assert [restored.accept(tick, START + 2) for tick in ticks] == ["duplicate"] * 4


V1_TICKS = [(0, 5.0), (1_000, 6.0), (3_000, 7.0), (2_000, 8.0), (5_000, 9.0), (4_000, 10.0)]


def _v1_processor() -> SymbolProcessor:
    """tests/checkpoints/symbol-processor-v1.pickle holds this processor, pickled at snapshot version 1: six
    ticks (one out of order), an advance that applied three of them, a level and every part in use."""
    p = SymbolProcessor(Rules(levels=(7.5,)))
    for i, (t, price) in enumerate(V1_TICKS):
        p.accept(_tick("S", START + t, price, i), -END_OF_INPUT)
    p.advance(START + 2_500)
    return p


def test_a_version_1_snapshot_restores_and_goes_on_as_a_live_processor():
    """A checkpoint's symbol state written at snapshot version 1 restores into this code (through
    snapshot.migrate) and gives, from then on, what a processor that never stopped gives; and forgets every
    duplicate key once its horizon has passed."""
    stored = Path(__file__).parent / "checkpoints" / "symbol-processor-v1.pickle"
    assert pickle.loads(stored.read_bytes()).snapshot() == _v1_processor().snapshot()
    restored, live = pickle.loads(stored.read_bytes()), _v1_processor()
    ticks = [_tick("S", START + t, price, i) for i, (t, price) in enumerate(V1_TICKS)]
    later = [_tick("S", START + t, 4.0 + i, 10 + i) for i, t in enumerate([2_600, 4_500, 9_000])]
    for p in (restored, live):
        assert len(p.pending) == 3 and len(p.duplicates) == 6
        assert [p.accept(tick, START + 2_500) for tick in ticks + later] == ["duplicate"] * 6 + [None] * 3
    assert restored.advance(START + 10_000) == live.advance(START + 10_000)
    horizon_end = START + 9_000 + Rules().dedup_horizon_us + 1
    assert restored.advance(horizon_end) == live.advance(horizon_end)
    assert len(restored.duplicates) == len(live.duplicates) == 0


def _v2_stored_processor():
    """tests/checkpoints/symbol-processor-v2.pickle (and -v3) hold this processor as the job stores it at
    snapshot version 2 (3): {"processor": its pickle without sealed dedup chunks, "chunks": {chunk key:
    contents}}. 100
    ticks (every tenth out of order), 80 of them applied: a sealed chunk of 64 keys, a tail of 16, 20
    buffered."""
    from stockmax.operators.stored import StoredSymbolProcessor

    p = StoredSymbolProcessor(Rules(levels=(7.5,)))
    for i in range(100):
        p.accept(_tick("S", START + (i - 1 if i % 10 == 5 else i) * 1_000, 5.0 + (i % 7), i), -END_OF_INPUT)
    p.advance(START + 80_000)
    return p


def _pickled_version(data: bytes) -> int:
    """The snapshot version a stored processor's pickle was written at."""
    class VersionOnly(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "restore_stored_processor":
                return lambda version, _: version
            return super().find_class(module, name)

    return VersionOnly(io.BytesIO(data)).load()


def test_the_current_version_has_a_stored_snapshot():
    """Each version's layout is kept as a file, so that a later version is tested against it."""
    from stockmax.operators import snapshot

    stored = pickle.loads((Path(__file__).parent / "checkpoints" / f"symbol-processor-v{snapshot.VERSION}.pickle").read_bytes())
    assert _pickled_version(stored["processor"]) == snapshot.VERSION


@pytest.mark.parametrize("version", [2, 3])
def test_a_stored_snapshot_restores_and_goes_on_as_a_live_processor(version):
    """A symbol's state as the job stored it at snapshot version 2 and 3 (processor entry and sealed-chunk
    entries) restores into this code and gives, from then on, what a processor that never stopped gives."""
    from stockmax.operators.stored import attach_chunks, store_chunks

    stored = pickle.loads((Path(__file__).parent / "checkpoints" / f"symbol-processor-v{version}.pickle").read_bytes())
    assert _pickled_version(stored["processor"]) == version
    restored = attach_chunks("S", pickle.loads(stored["processor"]), stored["chunks"])
    live = _v2_stored_processor()
    written = DictChunks()
    store_chunks("S", live, written)
    assert written == stored["chunks"] and len(written) == 1
    assert restored.snapshot() == live.snapshot()
    later = [_tick("S", START + t * 1_000, 4.0 + t % 5, 200 + t) for t in range(81, 140)]
    for p in (restored, live):
        assert len(p.pending) == 20 and len(p.duplicates) == 100
        assert [p.accept(_tick("S", START, 1.0, i), START + 80_000) for i in range(100)] == ["duplicate"] * 100
        assert [p.accept(tick, START + 80_000) for tick in later] == [None] * len(later)
    assert restored.advance(START + 150_000) == live.advance(START + 150_000)
    horizon_end = START + 140_000 + Rules().dedup_horizon_us
    assert restored.advance(horizon_end) == live.advance(horizon_end)
    assert len(restored.duplicates) == len(live.duplicates) == 0


def test_state_from_before_versioned_snapshots_or_of_an_unknown_version_is_refused_clearly():
    """tests/checkpoints/symbol-processor-221d457.pickle: a processor pickled before snapshots had versions.
    The policy (operators/snapshot.py) refuses it, saying how to start afresh; so is a version this code
    does not know."""
    from stockmax.operators.snapshot import SnapshotError
    from stockmax.operators.symbol import restore_processor

    legacy = (Path(__file__).parent / "checkpoints" / "symbol-processor-221d457.pickle").read_bytes()
    with pytest.raises(SnapshotError, match=r"before versioned snapshots .*stockmax run --fresh"):
        pickle.loads(legacy)
    with pytest.raises(SnapshotError, match="snapshot version 99"):
        restore_processor(99, _v1_processor().snapshot())


def test_apply_order_breaks_time_ties_by_seq_then_arrival():
    ticks = [{"symbol": "S", "event_time": 5, "seq": 2, "price": 1.0},
             {"symbol": "S", "event_time": 5, "seq": 1, "price": 2.0},
             {"symbol": "S", "event_time": 4, "seq": 9, "price": 3.0}]
    assert [t["price"] for t in apply_order(ticks)["S"]] == [3.0, 2.0, 1.0]


@pytest.mark.parametrize("text, us", [("1ms", 1000), ("500ms", 500_000), ("1s", 1_000_000), ("5m", 300_000_000),
                                      ("24h", DAY_US)])
def test_durations(text, us):
    assert parse_duration_us(text) == us
    assert format_duration(us) == text


@pytest.mark.parametrize("text", ["0s", "25h", "1d", "fast", "1.5s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_windows(text)
