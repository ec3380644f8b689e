"""The tick parser: every bad input becomes a Rejection with a stable code; it never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from stockmax.operators.tick import MAX_MESSAGE_BYTES, SCHEMA, Rejection, Tick, check_record_timestamp, parse_tick

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
    tick = parse_tick(b'{"symbol": "X", "price": 1, "event_time": 5}')
    assert tick == Tick("X", 1.0, 0.0, "", 0, 5)


@pytest.mark.parametrize("raw, code", [
    (b"\xff\xfe garbage", "not_utf8"),
    (b"not json", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"AAPL"', "not_object"),
    (with_(symbol=...), "missing_field"),
    (with_(price=...), "missing_field"),
    (with_(event_time=...), "missing_field"),
    (with_(price="187.25"), "wrong_type"),
    (with_(price=True), "wrong_type"),
    (with_(event_time=1.5e15), "wrong_type"),
    (with_(seq="7"), "wrong_type"),
    (b'{"symbol": "AAPL", "price": NaN, "event_time": 1}', "invalid_value"),
    (b'{"symbol": "AAPL", "price": Infinity, "event_time": 1}', "invalid_value"),
    (b'{"symbol": "AAPL", "price": -Infinity, "event_time": 1}', "invalid_value"),
    (with_(price=0), "invalid_value"),
    (with_(price=-3.5), "invalid_value"),
    (with_(price=1e13), "invalid_value"),
    (with_(volume=-1), "invalid_value"),
    (with_(symbol=""), "invalid_value"),
    (with_(symbol="X" * 33), "invalid_value"),
    (with_(symbol="AA\u0007PL"), "invalid_value"),
    (with_(symbol="AA PL"), "invalid_value"),
    (with_(event_time=-1), "invalid_value"),
    (b'{"symbol": "' + b"A" * (MAX_MESSAGE_BYTES + 10) + b'"}', "too_large"),
])
def test_bad_ticks_are_rejected_with_their_reason(raw, code):
    result = parse_tick(raw)
    assert isinstance(result, Rejection), result
    assert result.code == code, result.message
    assert result.message


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
