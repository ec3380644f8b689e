"""The tick parser: every bad input becomes a Rejection with a stable code; it never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from stockmax.operators.tick import (MAX_MESSAGE_BYTES, REASON_CODES, SCHEMA, Rejection, Tick, TickLimits,
                                     check_record_timestamp, parse_tick)

VALID = {"symbol": "AAPL", "price": 187.25, "volume": 300, "exchange": "XNAS", "seq": 12,
         "event_time": 1767623400123456}


def with_(**changes):
    d = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            d.pop(key)
        else:
            d[key] = value
    return json.dumps(d).encode()


def test_valid_tick():
    assert parse_tick(json.dumps(VALID).encode()) == Tick("AAPL", 187.25, 300.0, "XNAS", 12, 1767623400123456)


def test_optional_fields_take_schema_defaults():
    tick = parse_tick(b'{"symbol": "X", "price": 1, "event_time": 1767623400000005}')
    assert tick == Tick("X", 1.0, 0.0, "", 0, 1767623400000005)


NOW_US = 1767623400_000000  # the clock the limits below judge "the future" by
LIMITS = TickLimits(clock_us=lambda: NOW_US)

BAD_TICKS = [  # (raw message, the reason code it must be refused with)
    (b"\xff\xfe garbage", "not_utf8"),
    (b"not json", "not_json"),
    (b"", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"AAPL"', "not_object"),
    (with_(symbol=...), "missing_field"),
    (with_(price=...), "missing_field"),
    (with_(event_time=...), "missing_field"),
    (with_(price=None), "missing_field"),
    (with_(price="187.25"), "wrong_type"),
    (with_(price=True), "wrong_type"),
    (with_(price=[1]), "wrong_type"),
    (with_(event_time=1.5e15), "wrong_type"),
    (with_(seq="7"), "wrong_type"),
    (with_(symbol=7), "wrong_type"),
    (b'{"symbol": "AAPL", "price": NaN, "event_time": 1767623400000000}', "price_not_finite"),
    (b'{"symbol": "AAPL", "price": Infinity, "event_time": 1767623400000000}', "price_not_finite"),
    (b'{"symbol": "AAPL", "price": -Infinity, "event_time": 1767623400000000}', "price_not_finite"),
    (b'{"symbol": "AAPL", "price": 1e999, "event_time": 1767623400000000}', "price_not_finite"),
    # an integer literal beyond the float range (no float of it is finite; math.isfinite raises on it)
    (b'{"symbol": "AAPL", "price": 1' + b"0" * 400 + b', "event_time": 1767623400000000}', "price_not_finite"),
    (b'{"symbol": "AAPL", "price": 1, "volume": 2' + b"0" * 400 + b', "event_time": 1767623400000000}',
     "volume_not_finite"),
    (with_(price=0), "price_not_positive"),
    (with_(price=-3.5), "price_not_positive"),
    (with_(price=1e13), "price_too_large"),
    (with_(volume=-1), "volume_negative"),
    (with_(volume=1e16), "volume_too_large"),
    (with_(exchange="X" * 33), "exchange_too_long"),
    (b'{"symbol": "AAPL", "price": 1, "volume": NaN, "event_time": 1767623400000000}', "volume_not_finite"),
    (with_(symbol=""), "symbol_empty"),
    (with_(symbol="X" * 33), "symbol_too_long"),
    (with_(symbol="AA\u0007PL"), "symbol_bad_characters"),
    (with_(symbol="AAPL\n"), "symbol_bad_characters"),
    (with_(symbol="AA PL"), "symbol_bad_characters"),
    (with_(seq=-2), "seq_negative"),
    (with_(seq=2**64), "seq_too_large"),
    (with_(event_time=-1), "event_time_negative"),
    (with_(event_time=1767623400), "event_time_in_seconds"),
    (with_(event_time=0), "event_time_in_seconds"),
    (with_(event_time=1767623400123), "event_time_in_milliseconds"),
    (with_(event_time=1767623400123456789), "event_time_in_nanoseconds"),
    (with_(event_time=915148800000000), "event_time_before_floor"),  # 1999-01-01
    (with_(event_time=NOW_US + 301_000_000), "event_time_in_future"),
    (b'{"symbol": "' + b"A" * (MAX_MESSAGE_BYTES + 10) + b'"}', "message_too_large"),
]


@pytest.mark.parametrize("raw, code", BAD_TICKS)
def test_bad_ticks_are_rejected_with_their_reason(raw, code):
    result = parse_tick(raw, LIMITS)
    assert isinstance(result, Rejection), result
    assert result.code == code, result.message
    assert result.message


def test_every_reason_code_is_covered_and_codes_are_unique():
    assert len(set(REASON_CODES)) == len(REASON_CODES)
    # every code but the record-timestamp check (tested below) and the batch's own (test_batches_and_schedule)
    # comes out of a case above
    assert {code for _, code in BAD_TICKS} == set(REASON_CODES) - {"timestamp_mismatch", "not_arrow_batch"}


def test_limits_are_inclusive_boundaries():
    assert isinstance(parse_tick(with_(event_time=NOW_US + 300_000_000), LIMITS), Tick)  # exactly the skew
    assert parse_tick(with_(event_time=NOW_US + 300_000_001), LIMITS).code == "event_time_in_future"
    assert isinstance(parse_tick(with_(event_time=946684800000000), LIMITS), Tick)  # exactly the floor
    assert parse_tick(with_(event_time=946684799999999), LIMITS).code == "event_time_before_floor"
    raw = with_()
    exact = TickLimits(max_bytes=len(raw), clock_us=lambda: NOW_US)
    assert isinstance(parse_tick(raw, exact), Tick)
    assert parse_tick(raw + b" ", exact).code == "message_too_large"


def test_parser_follows_the_schema_file():
    # The schema is the one definition: its required fields are exactly the ones a tick cannot lack.
    for name in SCHEMA["properties"]:
        result = parse_tick(with_(**{name: ...}))
        assert isinstance(result, Rejection) == (name in SCHEMA["required"]), name


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)


@given(st.binary(max_size=300))
@hyp_settings(max_examples=500, deadline=None)
def test_random_bytes_never_raise(raw):
    assert isinstance(parse_tick(raw), (Tick, Rejection))


@given(st.fixed_dictionaries({}, optional={k: JSON_VALUES for k in VALID}) | JSON_VALUES)
@hyp_settings(max_examples=500, deadline=None)
def test_random_json_never_raises_and_valid_ticks_satisfy_the_schema(value):
    result = parse_tick(json.dumps(value).encode())
    assert isinstance(result, (Tick, Rejection))
    if isinstance(result, Tick):
        assert result.price > 0 and result.volume >= 0 and result.event_time >= 0 and result.symbol


def test_record_timestamp_must_be_the_event_time_millisecond():
    tick = parse_tick(json.dumps(VALID).encode())
    assert check_record_timestamp(tick, 1767623400123) is None
    assert check_record_timestamp(tick, None) is None  # no record timestamp: nothing to compare
    for wrong in (1767623400122, 1767623400124, 1767623400123456):
        assert check_record_timestamp(tick, wrong).code == "timestamp_mismatch"
