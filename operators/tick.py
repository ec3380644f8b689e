"""Parsing and validating one tick against schemas/tick.schema.json (the only definition of a tick).

`parse_tick` never raises on content: it returns a Tick, or a Rejection with a stable reason code that
the job sends to the dead-letter topic.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

# schemas/ is beside operators/ both in the checkout and in an installed wheel (stockmax/schemas).
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "tick.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
MAX_MESSAGE_BYTES = 64 * 1024


class Tick(NamedTuple):
    symbol: str
    price: float
    volume: float
    exchange: str
    seq: int
    event_time: int  # epoch microseconds, UTC


class Rejection(NamedTuple):
    """Why a message is not a tick: a stable code (REASON_CODES) and a readable message."""
    code: str
    message: str


@dataclass(frozen=True)
class TickLimits:
    """Bounds beyond the schema, from the settings (tick_max_bytes, event_time_floor, max_future_skew_ms)."""
    max_bytes: int = MAX_MESSAGE_BYTES
    min_event_time_us: int = 946_684_800_000_000  # 2000-01-01T00:00:00Z
    max_future_skew_us: int = 300_000_000  # how far past this machine's clock an event time may be
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000


# Epoch magnitudes: from 1973 on, an event time in µs is >= 1e14; the same instant in ms is < 1e14 and in
# seconds < 1e11 (until the year 5138). Above 1e17 µs (year 5138) it is nanoseconds.
_MS_BELOW_US, _S_BELOW_US, _NS_FROM_US = 10**14, 10**11, 10**17


def _type_ok(kind: str, value) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"schema type {kind!r} is not supported by the tick parser")


def _finite(number: int | float) -> bool:
    """A JSON number is a float in a tick: an integer beyond the float range is no finite one (math.isfinite
    raises on it)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _compile(schema: dict):
    """(name, type, required, default, checks) per field; a check(value) returns (code, text) or None.
    Codes are the field name plus what is wrong (e.g. price_not_positive): stable, and named after the
    schema keyword they come from."""
    required = set(schema["required"])
    fields, codes = [], []
    for name, spec in schema["properties"].items():
        checks = []

        def check(suffix, failed, text, name=name, checks=checks):
            code = f"{name}_{suffix}"
            codes.append(code)
            checks.append(lambda v: (code, text(v)) if failed(v) else None)

        if "minLength" in spec:
            n = spec["minLength"]
            check("empty" if n == 1 else "too_short", lambda v, n=n: len(v) < n,
                  lambda v, n=n: "is empty" if n == 1 else f"is shorter than {n}")
        if "maxLength" in spec:
            n = spec["maxLength"]
            check("too_long", lambda v, n=n: len(v) > n, lambda v, n=n: f"is {len(v)} characters, over {n}")
        if "pattern" in spec:
            # JSON Schema patterns are ECMA-262: "$" is the end of the text. Python's "$" also matches
            # before a final newline, which would let "AAPL\n" through.
            pattern = spec["pattern"]
            rx = re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern)
            check("bad_characters", lambda v, rx=rx: not rx.search(v),
                  lambda v, pattern=pattern: f"has characters outside {pattern}: {v[:64]!r}")
        if spec["type"] == "number":
            check("not_finite", lambda v: not _finite(v), lambda v: f"is not finite: {str(v)[:64]}")
        if "exclusiveMinimum" in spec:
            n = spec["exclusiveMinimum"]
            check("not_positive" if n == 0 else "too_small", lambda v, n=n: not v > n,
                  lambda v, n=n: f"must be above {n}: {v!r}")
        if "minimum" in spec:
            n = spec["minimum"]
            check("negative" if n == 0 else "too_small", lambda v, n=n: v < n, lambda v, n=n: f"is below {n}: {v!r}")
        if "maximum" in spec:
            n = spec["maximum"]
            check("too_large", lambda v, n=n: v > n, lambda v, n=n: f"is above {n:g}: {v!r}")
        fields.append((name, spec["type"], name in required, spec.get("default"), tuple(checks)))
    return tuple(fields), tuple(codes)


_FIELDS, _FIELD_CODES = _compile(SCHEMA)
if {f[0] for f in _FIELDS} != set(Tick._fields):
    raise RuntimeError(f"{SCHEMA_PATH} and operators.tick.Tick name different fields")

DEFAULT_LIMITS = TickLimits()

# Every reason a message can be refused with; the dead-letter topic carries one of these.
REASON_CODES = ("message_too_large", "not_utf8", "not_json", "not_object", "not_arrow_batch", "missing_field",
                "wrong_type",
                *_FIELD_CODES, "event_time_in_seconds", "event_time_in_milliseconds", "event_time_in_nanoseconds",
                "event_time_before_floor", "event_time_in_future", "timestamp_mismatch")


def check_event_time(us: int, limits: TickLimits) -> Rejection | None:
    """Why an event time (µs) is refused, or None. Each refusal bounds it from one side, so the accepted
    times are one interval: records.py checks a whole batch by its smallest and largest event time."""
    if us < _S_BELOW_US:
        return Rejection("event_time_in_seconds", f"event_time {us} looks like epoch seconds; ticks carry epoch µs")
    if us < _MS_BELOW_US:
        return Rejection("event_time_in_milliseconds",
                         f"event_time {us} looks like epoch milliseconds; ticks carry epoch µs")
    if us >= _NS_FROM_US:
        return Rejection("event_time_in_nanoseconds",
                         f"event_time {us} looks like epoch nanoseconds; ticks carry epoch µs")
    if us < limits.min_event_time_us:
        return Rejection("event_time_before_floor",
                         f"event_time {us} µs is before the floor {limits.min_event_time_us} µs (event_time_floor)")
    ahead = us - limits.clock_us()
    if ahead > limits.max_future_skew_us:
        return Rejection("event_time_in_future",
                         f"event_time {us} µs is {ahead / 1e6:.1f} s ahead of this machine's clock, over "
                         f"{limits.max_future_skew_us / 1e6:g} s (max_future_skew_ms)")
    return None


def parse_tick(raw: bytes | str, limits: TickLimits = DEFAULT_LIMITS) -> Tick | Rejection:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > limits.max_bytes:
        return Rejection("message_too_large", f"message is {len(raw)} bytes, over the {limits.max_bytes} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Rejection("not_json", f"not JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"a tick is a JSON object, got {type(obj).__name__}")
    return tick_from_fields(obj, limits)


def tick_from_fields(obj: dict, limits: TickLimits = DEFAULT_LIMITS) -> Tick | Rejection:
    """A tick from its fields (a JSON object's, or a row of an Arrow batch), checked against the schema."""
    values = {}
    for name, kind, required, default, checks in _FIELDS:
        value = obj.get(name)
        if value is None:
            if required:
                return Rejection("missing_field", f"field {name!r} is missing")
            values[name] = default
            continue
        if not _type_ok(kind, value):
            return Rejection("wrong_type", f"field {name!r} must be {kind}, got {type(value).__name__}")
        for check in checks:
            problem = check(value)
            if problem:
                return Rejection(problem[0], f"field {name!r} {problem[1]}")
        values[name] = value
    return check_event_time(values["event_time"], limits) or Tick(
        values["symbol"], float(values["price"]), float(values["volume"]), values["exchange"], values["seq"],
        values["event_time"])


def check_record_timestamp(tick: Tick, record_timestamp_ms: int | None) -> Rejection | None:
    """The job derives event time and watermarks, per partition, from the Kafka record timestamp (ms); the
    tick's own event time (µs) must fall within that millisecond or its lateness would be judged wrongly.
    `stockmax replay` stamps records this way; other producers must do the same."""
    if record_timestamp_ms is None or tick.event_time // 1000 == record_timestamp_ms:
        return None
    return Rejection("timestamp_mismatch",
                     f"record timestamp {record_timestamp_ms} ms is not the tick's event_time "
                     f"{tick.event_time} µs; producers must set the Kafka record timestamp to the event time")


def symbol_problem(symbol: str) -> str | None:
    """Why a text cannot be a tick's symbol (the schema's rules for the field), or None when it can."""
    checks = next(checks for name, _, _, _, checks in _FIELDS if name == "symbol")
    for check in checks:
        problem = check(symbol)
        if problem:
            return f"symbol {symbol[:40]!r} {problem[1]}"
    return None
