"""Parsing and validating one tick against schemas/tick.schema.json (the only definition of a tick).

`parse_tick` never raises on content: it returns a Tick, or a Rejection with a stable reason code that
the job sends to the dead-letter topic.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import NamedTuple

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
    # stable: too_large, not_utf8, not_json, not_object, missing_field, wrong_type, invalid_value,
    # timestamp_mismatch
    code: str
    message: str


def _type_ok(kind: str, value) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"schema type {kind!r} is not supported by the tick parser")


def _compile(schema: dict):
    """(name, type, required, default, check) per field; check(value) -> error text or None."""
    required = set(schema["required"])
    fields = []
    for name, spec in schema["properties"].items():
        checks = []
        if "minLength" in spec:
            checks.append(lambda v, n=spec["minLength"]: f"is shorter than {n}" if len(v) < n else None)
        if "maxLength" in spec:
            checks.append(lambda v, n=spec["maxLength"]: f"is longer than {n}" if len(v) > n else None)
        if "pattern" in spec:
            rx = re.compile(spec["pattern"])
            checks.append(lambda v, rx=rx: "has characters outside " + rx.pattern if not rx.search(v) else None)
        if spec["type"] == "number":
            checks.append(lambda v: "is not finite" if not math.isfinite(v) else None)
        if "exclusiveMinimum" in spec:
            checks.append(lambda v, n=spec["exclusiveMinimum"]: f"is not above {n}" if not v > n else None)
        if "minimum" in spec:
            checks.append(lambda v, n=spec["minimum"]: f"is below {n}" if v < n else None)
        if "maximum" in spec:
            checks.append(lambda v, n=spec["maximum"]: f"is above {n}" if v > n else None)
        fields.append((name, spec["type"], name in required, spec.get("default"), tuple(checks)))
    return tuple(fields)


_FIELDS = _compile(SCHEMA)
if {f[0] for f in _FIELDS} != set(Tick._fields):
    raise RuntimeError(f"{SCHEMA_PATH} and operators.tick.Tick name different fields")


def parse_tick(raw: bytes | str) -> Tick | Rejection:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection("too_large", f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
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
    values = {}
    for name, kind, required, default, checks in _FIELDS:
        if name not in obj or obj[name] is None:
            if required:
                return Rejection("missing_field", f"field {name!r} is missing")
            values[name] = default
            continue
        value = obj[name]
        if not _type_ok(kind, value):
            return Rejection("wrong_type", f"field {name!r} must be {kind}, got {type(value).__name__}")
        for check in checks:
            problem = check(value)
            if problem:
                return Rejection("invalid_value", f"field {name!r} {problem}: {str(value)[:64]!r}")
        values[name] = value
    return Tick(values["symbol"], float(values["price"]), float(values["volume"]), values["exchange"],
                values["seq"], values["event_time"])


def check_record_timestamp(tick: Tick, record_timestamp_ms: int | None) -> Rejection | None:
    """The job derives event time and watermarks, per partition, from the Kafka record timestamp (ms); the
    tick's own event time (µs) must fall within that millisecond or its lateness would be judged wrongly.
    `stockmax replay` stamps records this way; other producers must do the same."""
    if record_timestamp_ms is None or tick.event_time // 1000 == record_timestamp_ms:
        return None
    return Rejection("timestamp_mismatch",
                     f"record timestamp {record_timestamp_ms} ms is not the tick's event_time "
                     f"{tick.event_time} µs; producers must set the Kafka record timestamp to the event time")
