"""What the fast path adds around the operators: Arrow batch records, and advancing each symbol only at its
due points (one timer per job key). Each against an independent reference: per-tick JSON parsing, advancing
every symbol at every watermark step, a plain dict."""

from __future__ import annotations

import base64
import json
import math
import random

import pyarrow as pa
from hypothesis import given, settings as hyp_settings, strategies as st

from oracle import alert_key, update_key
from stockmax.operators.records import BATCH_SCHEMA, RecordGroup, _batch_columns, _whole_batch_is_good, dead_letter, \
    decode_batch, decode_group, decode_record, encode_batch, encode_group, good_json_ticks, group_ticks, record_ticks, \
    tick_batch_records
from stockmax.operators.schedule import DueSchedule
from stockmax.operators.symbol import SymbolProcessor, frontier_from_watermark_ms, watermark_ms_for_frontier
from stockmax.operators.tick import DEFAULT_LIMITS, Rejection, Tick, parse_tick
from test_operators import END_OF_INPUT, market

NOW_US = 1_767_623_400_000_000


# -- Arrow batches --------------------------------------------------------------------------------------

row_values = st.fixed_dictionaries({
    "symbol": st.sampled_from(["AAPL", "BRK.B", "", "aapl", "X" * 40, "A\n", None]),
    "price": st.sampled_from([187.25, 0.0, -1.0, math.inf, math.nan, 1e-9, None]),
    "volume": st.sampled_from([0.0, 10.0, -5.0, None]),
    "exchange": st.sampled_from(["XNAS", "", None]),
    "seq": st.sampled_from([0, 7, -1, 2**63 - 1, None]),
    "event_time": st.sampled_from([NOW_US, NOW_US + 1, NOW_US + 999, 1_767_623_400, 1_767_623_400_000, None]),
})


@given(st.lists(row_values, min_size=1, max_size=30))
@hyp_settings(max_examples=300, deadline=None)
def test_a_batch_row_is_a_tick_exactly_when_the_same_json_is(rows):
    # nulls where the schema forbids them too: a producer's batch may have them
    _check_batch_against_json(rows, 0)


# Good values at the schema's edges, and bad ones just past them: a batch is mostly good, as real ones are.
GOOD = {"symbol": ["AAPL", "A", "X" * 32, "a.b:c/d-e_F9"], "price": [187.25, 5e-324, 1e12],
        "volume": [0.0, -0.0, 1e15, None], "exchange": ["XNAS", "", "Ä" * 32, None],
        "seq": [0, 2**63 - 1, None], "event_time": [NOW_US, NOW_US + 1, NOW_US + 999]}
BAD = {"symbol": ["X" * 33, "A B", "", None], "price": [0.0, math.nextafter(1e12, math.inf), math.nan, -math.inf, None],
       "volume": [-1e-300, math.nextafter(1e15, math.inf), math.inf], "exchange": ["Y" * 33],
       "seq": [-1], "event_time": [1_767_623_400_000, 10**17, None]}


@st.composite
def mostly_good_rows(draw):
    rows = [{name: draw(st.sampled_from(values)) for name, values in GOOD.items()}
            for _ in range(draw(st.integers(1, 40)))]
    if draw(st.booleans()):  # one bad cell
        name = draw(st.sampled_from(sorted(BAD)))
        draw(st.sampled_from(rows))[name] = draw(st.sampled_from(BAD[name]))
    return rows


# -- a partition's records grouped in the JVM ---------------------------------------------------------------

OTHER_RECORDS = [b"\xff\xfe{}", b'{"symbol": "AAPL"', b"[1, 2]", b"", b"null", b'"AAPL"',
                 b'{"symbol": "AAPL", "price": 1.5, "event_time": 1767623400000000, "symbol": "MSFT"}',
                 b'{"symbol": "AAPL", "price": 1, "event_time": 1767623400000000, "seq": 1.0}',
                 b'{"symbol": "AAPL", "price": 1, "event_time": 1767623400000000, "seq": 18446744073709551615}',
                 b'{"symbol": "AAPL", "price": true, "event_time": 1767623400000000}',
                 b'{"symbol": "AAPL", "price": 100, "volume": 7, "event_time": 1767623400000000}',
                 b'{"symbol": "AAPL", "price": 0.1000000000000000055511151231257827, "event_time": 1767623400000000}',
                 b'{"symbol": "AAPL", "price": 1e400, "event_time": 1767623400000000}',
                 b'{"symbol": "AAPL", "price": 1.5, "event_time": -9223372036854775809}',
                 b'{"symbol": "A\\ud800", "price": 1.5, "event_time": 1767623400000000}',
                 b' {"symbol": "AAPL", "price": 2.5, "event_time": 1767623400000001, "extra": [1]}\n',
                 b'{"symbol": "AAPL", "price": 2.5, "event_time": 1767623400000001, "note": "' + b"x" * 70_000 + b'"}']


NULLABLE_BATCH_SCHEMA = pa.schema([field.with_nullable(True) for field in BATCH_SCHEMA])


@st.composite
def record_groups(draw):
    """A partition's records: mostly JSON ticks, some of them bad, some other bytes, now and then an Arrow batch;
    each stamped with its event time (ms), or now and then otherwise."""
    values, stamps = [], []
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["tick"] * 6 + ["other", "batch"]))
        if kind == "other":
            value = draw(st.sampled_from(OTHER_RECORDS))
            stamp = 1_767_623_400_000
        elif kind == "batch":
            rows = draw(mostly_good_rows())
            table = pa.Table.from_pylist(rows, schema=NULLABLE_BATCH_SCHEMA)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            value = sink.getvalue().to_pybytes()
            stamp = max((r["event_time"] or 0) for r in rows) // 1000
        else:
            row = draw(mostly_good_rows())[0]
            value = json.dumps({k: v for k, v in row.items() if v is not None or draw(st.booleans())}).encode()
            stamp = (row["event_time"] or NOW_US) // 1000
        values.append(value)
        stamps.append(stamp + draw(st.sampled_from([0] * 8 + [1, -1])))
    return RecordGroup(list(range(100, 100 + len(values))), stamps, values)


def _exactly(ticks: list[tuple]) -> list[tuple]:
    """Ticks compared by type and bits too (1 and 1.0, 0.0 and -0.0 differ)."""
    return [tuple((type(v), repr(v)) for v in tick) for tick in ticks]


@given(record_groups())
@hyp_settings(max_examples=150, deadline=None)
def test_a_group_of_records_gives_what_its_records_give_one_by_one(group):
    assert decode_group(encode_group(group)) == group
    want_ticks, want_refused = [], []
    for i, (value, stamp) in enumerate(zip(group.values, group.timestamps_ms)):
        ticks, refused = record_ticks(value, stamp)
        want_ticks += ticks
        want_refused += [(i, item) for item in refused]
    got_ticks, refused, pieces = group_ticks(group)
    assert _exactly(got_ticks) == _exactly(want_ticks)
    assert refused == want_refused
    # The same ticks as the job's tick_batches records (the store's raw ticks), each value in its column's type.
    floats = {name for name in Tick._fields if BATCH_SCHEMA.field(name).type == pa.float64()}
    batched = [tuple(row.values()) for record in tick_batch_records(b"0", pieces)
               for row in decode_batch(record.split(b"\t", 1)[1]).to_pylist()]
    assert _exactly(batched) == _exactly([tuple(float(v) if name in floats else v for name, v in zip(Tick._fields, t))
                                          for t in got_ticks])


def test_tick_batches_records_fit_in_a_kafka_record_whatever_their_ticks():
    """The job's tick_batches records must each fit in Kafka's default largest record (1 MiB; the job fails
    on a larger one), however large the ticks and however many pieces they were parsed in. Oracle: the
    schema's largest tick, counted."""
    largest = ("S" * 32, 1e12, 1e15, "\U0001F642" * 32, 2**63 - 1, NOW_US)  # 32 characters of 4 bytes each
    pieces = [list(zip(*[largest] * 7)) for _ in range(1500)]  # 10,500 ticks, parsed 7 at a time
    records = tick_batch_records(b"12", pieces)
    tables = [decode_batch(record.split(b"\t", 1)[1]) for record in records]
    assert [t.num_rows for t in tables] == [4000, 4000, 2500]
    assert all(t.to_pylist() == [dict(zip(Tick._fields, largest))] * t.num_rows for t in tables)
    assert max(map(len, records)) < 1_000_000  # with room for the record's key and headers


def test_good_json_ticks_take_the_column_wise_path():
    ticks = [{"symbol": f"J{i % 7}", "price": 100 + i / 8, "volume": float(i), "exchange": "XNAS", "seq": i,
              "event_time": NOW_US + i * 1000} for i in range(500)]
    values = [json.dumps(t).encode() for t in ticks]
    stamps = [t["event_time"] // 1000 for t in ticks]
    columns = good_json_ticks(values, stamps)
    assert columns is not None and list(zip(*columns)) == [tuple(t.values()) for t in ticks]
    assert good_json_ticks(values, stamps[:-1] + [stamps[-1] + 1]) is None  # one mis-stamped record: row by row
    assert good_json_ticks(values[:-1] + [b"{"], stamps) is None


# Literals that JSON parsers read differently, or that only some accept: numbers at and past the float and
# int64 ranges, every number shape JSON forbids, other JSON types, escapes, broken UTF-8, raw control bytes.
TRICKY_LITERALS = [
    b"1", b"1.0", b"-0", b"-0.0", b"1e3", b"1E3", b"1e+3", b"1e-3", b"1.5e2", b"01", b"1.", b".5", b"-", b"+1",
    b"0x10", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"4.9e-324",
    b"2.4703282292062328e-324", b"2.4703282292062327e-324", b"0.1000000000000000055511151231257827",
    b"9007199254740993", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
    b"18446744073709551615", b"18446744073709551616", b"1" + b"0" * 25, b"1" + b"0" * 400, b"1" + b"0" * 5000,
    b"true", b"false", b"null", b'"1"', b"[]", b"{}", b"[1]",
    b'"AAPL"', b'"A\\u0041PL"', b'"\\u00e9"', '"é"'.encode(), b'"\\ud800"', b'"\\ud83d\\ude00"', b'"a\\u0000b"',
    b'"\\xff"', b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b'"a\tb"', b'"a\\/b"', b'"A',
]


def _tick_text(**literals: bytes) -> bytes:
    fields = {"symbol": b'"AAPL"', "price": b"187.25", "volume": b"3", "exchange": b'"XNAS"', "seq": b"7",
              "event_time": str(NOW_US).encode(), **literals}
    return b"{" + b",".join(b'"%s":%s' % (name.encode(), value) for name, value in fields.items()) + b"}"


def tricky_json_records() -> list[bytes]:
    records = [_tick_text(**{name: literal}) for name in Tick._fields for literal in TRICKY_LITERALS]
    records += [_tick_text(extra=literal) for literal in TRICKY_LITERALS]  # an unknown field: skipped, not unchecked
    good = _tick_text()
    records += [
        good[:-1] + b',"symbol":"MSFT"}', good[:-1] + b',"price":2}', good[:-1] + b',"price":null}',
        b'{"price":1,' + good[1:], good + b"x", good + good, good + b"," + good, b"[" + good + b"]", b"\xef\xbb\xbf" + good,
        b" \n\t" + good + b"\r\n ", good.replace(b",", b" , "), good.replace(b":", b"\n:\n"), b"{}", b"",
        good[:-1] + b',"deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}", good[:-1] + b',"deep":' + b"[" * 1000 + b"}",
        good.replace(b'"symbol"', b'"sym\u0062ol"'), good.replace(b'"symbol"', b'"Symbol"'),
    ]
    return records


def test_a_json_record_takes_the_column_wise_path_only_as_the_tick_that_it_is():
    """good_json_ticks (orjson, column-wise) against decode_record (the standard library's json, record by
    record), one record at a time over tricky JSON: whenever the fast path takes a record, the record is
    that tick, field for field, type and bits too; and it does take the plain variants."""
    taken = 0
    for value in tricky_json_records():
        stamp = NOW_US // 1000
        columns = good_json_ticks([value], [stamp])
        want, refused = decode_record(value, stamp, fields_only=True)
        if columns is not None:
            assert not refused and _exactly(list(zip(*columns))) == _exactly(want), value
            taken += 1
    # The variants that are ticks and plain: a number as int, -0, exponents, big integers, escapes, \u0000, an
    # unknown field of any valid value, duplicates, whitespace: all but a handful of the ones that are ticks.
    assert taken >= 80


@given(mostly_good_rows(), st.sampled_from([0, 1, -1]))
@hyp_settings(max_examples=400, deadline=None)
def test_a_mostly_good_batch_gives_what_its_rows_as_json_give(rows, stamp_offset):
    """The column-wise check of a whole batch against per-tick JSON parsing: the same ticks, the same refusals
    (a bad cell sends the batch row by row), for batches stamped right, too late and too early."""
    _check_batch_against_json(rows, stamp_offset)


def test_every_bad_value_in_an_otherwise_good_batch_is_found():
    for name, values in BAD.items():
        for value in values:
            rows = [{field: good[i % len(good)] for field, good in GOOD.items()} for i in range(5)]
            rows[2][name] = value
            _check_batch_against_json(rows, 0)


def _check_batch_against_json(rows, stamp_offset):
    table = pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in BATCH_SCHEMA]))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    want = [parse_tick(json.dumps({k: v for k, v in row.items() if v is not None})) for row in rows]
    good = [t for t in want if isinstance(t, Tick)]
    stamp = (max(t.event_time for t in good) // 1000 if good else 0) + stamp_offset
    # the reference for the stamp: rows after it refused one by one; then all, unless the newest is at it
    want = [Rejection("timestamp_mismatch", "") if isinstance(t, Tick) and t.event_time // 1000 > stamp else t
            for t in want]
    kept = [t for t in want if isinstance(t, Tick)]
    if kept and max(t.event_time for t in kept) // 1000 != stamp:
        want = [Rejection("timestamp_mismatch", "") if isinstance(t, Tick) else t for t in want]
    ticks, refused = decode_record(sink.getvalue().to_pybytes(), stamp)
    assert ticks == [t for t in want if isinstance(t, Tick)]
    assert all(type(t) is Tick and type(t.price) is float and type(t.volume) is float for t in ticks)
    assert sorted((r.row, r.rejection.code) for r in refused) == [
        (i, t.code) for i, t in enumerate(want) if isinstance(t, Rejection)]


def test_a_good_batch_is_checked_column_wise():
    rows = [{name: values[i % len(values)] for name, values in GOOD.items()} for i in range(12)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in BATCH_SCHEMA]))
    stamp = max(r["event_time"] for r in rows) // 1000
    assert _whole_batch_is_good(table, stamp, DEFAULT_LIMITS)
    assert list(map(Tick._make, zip(*_batch_columns(table)))) == [parse_tick(json.dumps(
        {k: v for k, v in row.items() if v is not None})) for row in rows]
    assert not _whole_batch_is_good(table, stamp + 1, DEFAULT_LIMITS)


def _ticks(n, seed=3):
    rng = random.Random(seed)
    return [Tick(rng.choice(["A", "B", "C"]), round(rng.uniform(1, 100), 4), float(rng.randint(0, 9)), "X", i,
                 NOW_US + rng.randint(0, 3_000_000)) for i in range(n)]


def test_a_batch_round_trips_and_is_refused_when_stamped_wrongly():
    ticks = _ticks(200)
    raw = encode_batch(pa.Table.from_pylist([t._asdict() for t in ticks]))
    newest_ms = max(t.event_time for t in ticks) // 1000
    assert decode_record(raw, newest_ms) == (ticks, [])
    # Stamped later than its newest tick, the batch would push the watermark too far: all of it is refused.
    got, refused = decode_record(raw, newest_ms + 1)
    assert got == [] and {r.rejection.code for r in refused} == {"timestamp_mismatch"} and len(refused) == 200
    # Stamped earlier, at a tick's time: the ticks after the stamp are refused, one by one, with their row.
    stamp = sorted(t.event_time // 1000 for t in ticks)[100]
    got, refused = decode_record(raw, stamp)
    assert [r.row for r in refused] == [i for i, t in enumerate(ticks) if t.event_time // 1000 > stamp]
    assert got == [t for t in ticks if t.event_time // 1000 <= stamp]
    # The job's form (fields_only): the same ticks as plain tuples, on both paths, the same refusals.
    for record_stamp in (newest_ms, stamp, newest_ms + 1):
        ticks_of, refused_of = decode_record(raw, record_stamp)
        fields, refused_fields = decode_record(raw, record_stamp, fields_only=True)
        assert fields == [tuple(t) for t in ticks_of] and all(type(f) is tuple for f in fields)
        assert refused_fields == refused_of
        # What the job's parse step takes (the whole-batch path when all of it is ticks): the same.
        fields_of, refused_fields_of = record_ticks(raw, record_stamp)
        assert fields_of == fields and refused_fields_of == refused_of
        assert all(type(f) is tuple and type(f[1]) is float and type(f[5]) is int for f in fields_of)


def test_a_bad_batch_row_is_a_dead_letter_of_its_own():
    ticks = _ticks(3)
    rows = [t._asdict() for t in ticks]
    rows[1]["price"] = -4.0
    raw = encode_batch(pa.Table.from_pylist(rows))
    good, (refused,) = decode_record(raw, max(t.event_time for t in ticks) // 1000)
    assert good == [ticks[0], ticks[2]] and refused.row == 1
    key, value = dead_letter(refused, "ticks", 1, 42, 5, 7)
    assert key == "1:42:1" and value["batch_row"] == 1 and value["reason"] == "price_not_positive"
    assert json.loads(base64.b64decode(value["raw_base64"])) == rows[1]


def test_a_bad_symbol_is_refused_however_many_good_batches_came_before():
    """Strings that passed their checks are remembered (a batch's symbols are checked once, not in every
    batch): a bad one among remembered ones is still found, and a full memory starts over."""
    from stockmax.operators import records

    ticks = _ticks(50)
    stamp = max(t.event_time for t in ticks) // 1000
    raw = encode_batch(pa.Table.from_pylist([t._asdict() for t in ticks]))
    for _ in range(3):
        assert record_ticks(raw, stamp) == ([tuple(t) for t in ticks], [])
    assert {"A", "B", "C"} <= records._STRINGS_PASSED["symbol"]
    for bad in ("bad symbol", "", "X" * 33):
        rows = [t._asdict() for t in ticks]
        rows[7]["symbol"] = bad
        fields, refused = record_ticks(encode_batch(pa.Table.from_pylist(rows)), stamp)
        assert [r.row for r in refused] == [7] and refused[0].rejection.code.startswith("symbol")
        assert [t[0] for t in fields] == [t.symbol for i, t in enumerate(ticks) if i != 7]
        assert bad not in records._STRINGS_PASSED["symbol"]
    many = [t._replace(symbol=f"S{i}", seq=i) for i, t in enumerate(_ticks(3000))]
    limit = records._STRINGS_PASSED_MAX
    try:
        records._STRINGS_PASSED_MAX = 1000
        raw = encode_batch(pa.Table.from_pylist([t._asdict() for t in many]))
        assert record_ticks(raw, max(t.event_time for t in many) // 1000)[1] == []
        assert len(records._STRINGS_PASSED["symbol"]) == 3000  # cleared first, then holds this batch's
    finally:
        records._STRINGS_PASSED_MAX = limit


def test_broken_batches_are_refused_whole_with_a_reason():
    good = encode_batch(pa.Table.from_pylist([t._asdict() for t in _ticks(5)]))
    assert decode_record(good[:40], 0)[1][0].rejection.code == "not_arrow_batch"
    wrong = pa.table({"symbol": ["A"], "price": ["1.0"], "event_time": [NOW_US]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, wrong.schema) as writer:
        writer.write_table(wrong)
    (refused,) = decode_record(sink.getvalue().to_pybytes(), NOW_US // 1000)[1]
    assert refused.rejection.code == "wrong_type" and refused.row is None
    no_price = pa.table({"symbol": ["A"], "event_time": [NOW_US]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, no_price.schema) as writer:
        writer.write_table(no_price)
    assert decode_record(sink.getvalue().to_pybytes(), NOW_US // 1000)[1][0].rejection.code == "missing_field"


# -- due points -----------------------------------------------------------------------------------------

@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.one_of(st.none(), st.integers(0, 50))), max_size=200),
       st.lists(st.integers(0, 60), max_size=20))
@hyp_settings(max_examples=300, deadline=None)
def test_due_schedule_equals_a_dict(sets, pops):
    schedule, reference = DueSchedule(), {}
    for (symbol, due), frontier in zip(sets, pops + [None] * len(sets)):
        schedule.set(symbol, due)
        if due is None:
            reference.pop(symbol, None)
        else:
            reference[symbol] = due
        assert schedule.earliest() == (min(reference.values()) if reference else None)
        if frontier is not None:
            want = sorted((d, s) for s, d in reference.items() if d <= frontier)
            assert schedule.pop_due(frontier) == [s for _, s in want]
            for _, s in want:
                del reference[s]
        assert len(schedule) == len(reference)


def test_a_timer_at_the_due_watermark_reaches_the_due_frontier_and_no_earlier_one_does():
    for due in (1, 999, 1000, 1001, 1_767_623_400_123_457, 1_767_623_401_000_000):
        at = watermark_ms_for_frontier(due)
        assert frontier_from_watermark_ms(at) >= due > frontier_from_watermark_ms(at - 1)


@given(market(), st.randoms(use_true_random=False))
@hyp_settings(max_examples=300, deadline=None)
def test_advancing_only_at_due_points_gives_what_advancing_everything_always_gives(case, rng):
    """The job advances a symbol only when its due point is reached (and drops it when it expires), taking
    the due point after accepts from the one before them (due_after_accepting); the reference advances
    every symbol at every watermark step and keeps everything."""
    arrivals, rules = case
    bound = rules.watermark_bound_us
    everything: dict[str, SymbolProcessor] = {}
    scheduled: dict[str, SymbolProcessor] = {}
    schedule = DueSchedule()
    want, got = [], []
    newest, frontier = None, -END_OF_INPUT

    def collect(out, into):
        into += [("alert", alert_key(a)) for a in out.alerts] + [("update", update_key(u)) for u in out.max_updates]
        into += [("rollup", tuple(sorted(r.items(), key=str))) for r in out.rollups]

    def step(to):
        for p in everything.values():
            collect(p.advance(to), want)
        for symbol in schedule.pop_due(to):
            p = scheduled[symbol]
            collect(p.advance(to), got)
            if p.expired(to):
                del scheduled[symbol]
            else:
                schedule.set(symbol, p.next_due())

    for tick in arrivals:
        if newest is not None and rng.random() < 0.3:
            frontier = max(frontier, newest - bound)
            step(frontier)
        ref = everything.setdefault(tick.symbol, SymbolProcessor(rules.for_symbol(tick.symbol)))
        reason = ref.accept(tick, frontier)
        p = scheduled.get(tick.symbol) or SymbolProcessor(rules.for_symbol(tick.symbol))
        assert p.accept(tick, frontier) == reason
        due = p.due_after_accepting(schedule.due(tick.symbol))  # what the job asks after a batch's accepts
        assert (due is None) == (p.next_due() is None) and (due is None or due <= p.next_due())
        if due is not None:
            scheduled[tick.symbol] = p
            schedule.set(tick.symbol, due)
        newest = tick.event_time if newest is None else max(newest, tick.event_time)
    step(END_OF_INPUT)
    assert sorted(got, key=repr) == sorted(want, key=repr)
    assert scheduled == {} and len(schedule) == 0
