"""What a record of the ticks topic holds: one tick as JSON, or a batch of ticks as an Arrow IPC stream.

A batch moves many ticks through one Python call of the job (the per-record cost of PyFlink, ~20-40 µs,
dwarfs the per-tick work); `stockmax replay --batch-ticks N` writes batches. Both kinds may share a topic:
an Arrow stream starts with 0xFFFFFFFF, which no UTF-8 text does.

The Kafka record timestamp drives event time and watermarks. For a JSON tick it is the tick's event time
(ms); for a batch it is the newest event time (ms) of its ticks, so that the watermark after the batch is
the one that the same ticks sent one by one would give.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import operator
import sys
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .tick import _FIELDS, DEFAULT_LIMITS, SCHEMA, Rejection, Tick, TickLimits, check_event_time, \
    check_record_timestamp, parse_tick, tick_from_fields

ARROW_STREAM_START = b"\xff\xff\xff\xff"
_ARROW_TYPES = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64()}
# The batch's columns, from schemas/tick.schema.json (the one definition of a tick).
BATCH_SCHEMA = pa.schema([pa.field(name, _ARROW_TYPES[kind], nullable=not required)
                          for name, kind, required, _, _ in _FIELDS])


# A number's checks from these keywords (and its finiteness) hold for every value between two values that
# pass them: a column whose smallest and largest values pass, passes. Other keywords: rows one by one.
_INTERVAL_KEYWORDS = {"type", "exclusiveMinimum", "minimum", "maximum", "default", "description"}
_COLUMNWISE = all(set(SCHEMA["properties"][name]) <= _INTERVAL_KEYWORDS
                  for name, kind, _, _, _ in _FIELDS if kind != "string")


class RefusedTick(NamedTuple):
    """A record, or one row of a batch record, that is not a tick: why, and its content."""
    rejection: Rejection
    raw: bytes  # the record's bytes; for a batch row, the row as JSON
    row: int | None  # the row within a batch record


def is_batch(raw: bytes) -> bool:
    return raw[:4] == ARROW_STREAM_START


def encode_batch(table: pa.Table) -> bytes:
    """Ticks (columns as in BATCH_SCHEMA) as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    table = table.select(BATCH_SCHEMA.names).cast(BATCH_SCHEMA)
    with pa.ipc.new_stream(sink, BATCH_SCHEMA) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# What pyarrow raises for bytes that are not an Arrow IPC stream.
NOT_A_BATCH = (pa.ArrowInvalid, OSError, ValueError)


def decode_batch(raw: bytes) -> pa.Table:
    """An Arrow batch record's table, as encode_batch wrote it; raises one of NOT_A_BATCH for other bytes."""
    return pa.ipc.open_stream(raw).read_all()


def decode_record(raw: bytes, record_timestamp_ms: int | None, limits: TickLimits = DEFAULT_LIMITS,
                  fields_only: bool = False) -> tuple[list[Tick], list[RefusedTick]]:
    """The ticks of one ticks-topic record, and what in it is not a tick (never raises on content).
    fields_only: the ticks as plain tuples of their fields (what SymbolProcessor.accept takes), without a Tick made
    per tick on the common path (a Python call each: ~5 % of the job's Python time)."""
    ticks, refused = _decode_record(raw, record_timestamp_ms, limits, fields_only)
    if fields_only and ticks and type(ticks[0]) is not tuple:
        ticks = [tuple(t) for t in ticks]
    return ticks, refused


def _decode_record(raw: bytes, record_timestamp_ms: int | None, limits: TickLimits,
                   fields_only: bool) -> tuple[list, list[RefusedTick]]:
    """decode_record's work. Only the whole-batch path honours fields_only (it never makes a Tick); the
    others return Ticks, which decode_record turns into tuples."""
    if not is_batch(raw):
        tick = parse_tick(raw, limits)
        if isinstance(tick, Tick):
            tick = check_record_timestamp(tick, record_timestamp_ms) or tick
        return ([tick], []) if isinstance(tick, Tick) else ([], [RefusedTick(tick, raw, None)])
    try:
        table = decode_batch(raw)
    except NOT_A_BATCH as exc:
        return [], [RefusedTick(Rejection("not_arrow_batch", f"not an Arrow IPC stream: {str(exc)[:200]}"), raw, None)]
    refusal = _schema_refusal(table, raw)
    if refusal:
        return [], [refusal]
    if _whole_batch_is_good(table, record_timestamp_ms, limits):
        columns = _batch_columns(table)
        return list(zip(*columns)) if fields_only else list(map(Tick._make, zip(*columns))), []
    columns = {field.name: table.column(field.name).to_pylist() if field.name in table.column_names
               else [None] * table.num_rows for field in BATCH_SCHEMA}
    names = list(columns)
    ticks, rows, refused = [], [], []
    for row, values in enumerate(zip(*columns.values())):
        fields = dict(zip(names, values))
        tick = tick_from_fields(fields, limits)
        if isinstance(tick, Tick) and record_timestamp_ms is not None and tick.event_time // 1000 > record_timestamp_ms:
            tick = Rejection("timestamp_mismatch", f"event_time {tick.event_time} µs is after the batch's record "
                             f"timestamp {record_timestamp_ms} ms; a batch is stamped with its newest event time")
        if isinstance(tick, Tick):
            ticks.append(tick)
            rows.append(row)
        else:
            refused.append(RefusedTick(tick, _row_json(fields), row))
    if ticks and record_timestamp_ms is not None and max(t.event_time for t in ticks) // 1000 != record_timestamp_ms:
        # Stamped later than its newest tick, the batch would push the watermark past ticks still to come.
        rejection = Rejection("timestamp_mismatch", f"the batch's record timestamp {record_timestamp_ms} ms is not "
                              "the newest event time of its ticks; a batch is stamped with its newest event time")
        refused += [RefusedTick(rejection, _row_json(t._asdict()), row) for t, row in zip(ticks, rows)]
        ticks = []
    return ticks, refused


def _schema_refusal(table: pa.Table, raw: bytes) -> RefusedTick | None:
    """Why a batch's columns cannot be ticks', if they cannot."""
    for field in BATCH_SCHEMA:
        if field.name not in table.column_names:
            if not field.nullable:
                return RefusedTick(Rejection("missing_field", f"the batch has no column {field.name!r}"), raw, None)
        elif table.schema.field(field.name).type != field.type:
            return RefusedTick(Rejection(
                "wrong_type", f"column {field.name!r} must be {field.type}, got {table.schema.field(field.name).type}"),
                raw, None)
    return None


# Per string field, values that passed its checks (which depend on the value alone): a batch's distinct
# symbols are checked once, not in every batch (~0.3 ms of a 1,000-tick batch). Bounded: cleared when full.
_STRINGS_PASSED: dict[str, set[str]] = {name: set() for name, kind, _, _, _ in _FIELDS if kind == "string"}
_STRINGS_PASSED_MAX = 100_000


def _whole_batch_is_good(table: pa.Table, record_timestamp_ms: int | None, limits: TickLimits) -> bool:
    """True when every row of a batch (of the right columns) is certainly a tick, checked column by column in
    Arrow (the common case, ~10x faster than row by row, and no Python object per value); False when some
    row may not be one: the caller then checks the rows one by one, which gives each refused row its own
    reason."""
    if not _COLUMNWISE or table.num_rows == 0 or any(name not in table.column_names for name in BATCH_SCHEMA.names):
        return False
    probes = {}
    for name, kind, required, default, _ in _FIELDS:
        column = table.column(name)
        if column.null_count:
            if required:
                return False
            column = pc.fill_null(column, pa.scalar(default, column.type))
        if kind == "string":
            probes[name] = set(pc.unique(column).to_numpy(zero_copy_only=False).tolist())
        else:
            if kind == "number" and not pc.all(pc.is_finite(column)).as_py():
                return False
            extremes = pc.min_max(column).as_py()
            probes[name] = (extremes["min"], extremes["max"])
    return _probes_pass(probes, record_timestamp_ms, limits)


def _probes_pass(probes: dict, record_timestamp_ms: int | None, limits: TickLimits) -> bool:
    """Whether every value of every column passes the schema's checks (_FIELDS) and the event-time bounds,
    from each column's probes: a string column's distinct values, a number column's smallest and largest
    (every number check bounds one side: _COLUMNWISE), all finite and none absent. Strings seen to pass
    before are not checked again."""
    for name, kind, _, _, checks in _FIELDS:
        values = probes[name]
        if kind == "string":
            # Only the strings not seen to pass before (symbols and exchanges repeat batch after batch).
            passed = _STRINGS_PASSED[name]
            values = values.difference(passed)
        if any(check(value) for value in values for check in checks):
            return False
        if name == "event_time":
            if check_event_time(values[0], limits) or check_event_time(values[1], limits):
                return False
            if record_timestamp_ms is not None and values[1] // 1000 != record_timestamp_ms:
                return False
        if kind == "string":
            if len(passed) + len(values) > _STRINGS_PASSED_MAX:  # full: start over with this batch's strings
                passed.clear()
                values = probes[name]
            passed.update(values)
    return True


def _filled(table: pa.Table) -> pa.Table:
    """A batch's columns in Tick's field order, absent values as the schema's defaults."""
    defaults = {name: default for name, _, _, default, _ in _FIELDS}
    columns = [table.column(name) for name in Tick._fields]
    return pa.table([pc.fill_null(column, pa.scalar(defaults[name], column.type)) if column.null_count else column
                     for name, column in zip(Tick._fields, columns)], names=list(Tick._fields))


def _batch_columns(table: pa.Table) -> list[list]:
    """A batch's columns as lists in Tick's field order, absent values as the schema's defaults."""
    columns = []
    for column in _filled(table).columns:
        values = column.to_numpy(zero_copy_only=False).tolist()  # ~20x faster than to_pylist
        if values and isinstance(values[0], str):
            # One object per distinct symbol or exchange, not per row: pickle writes a string it has seen
            # once, then a reference (the state's buffered ticks and dedup keys hold these per tick), and its
            # hash is computed once.
            values = list(map(sys.intern, values))
        columns.append(values)
    return columns


def good_batch(raw: bytes, record_timestamp_ms: int | None, limits: TickLimits = DEFAULT_LIMITS) -> pa.Table | None:
    """A batch record whose rows are all ticks, as a table of Tick's fields (absent values as the schema's
    defaults), checked column by column; None for anything else (a JSON tick, or a batch with a row that
    may not be a tick: decode_record then says which rows are ticks and why the others are not)."""
    if not is_batch(raw):
        return None
    try:
        table = decode_batch(raw)
    except NOT_A_BATCH:
        return None
    if _schema_refusal(table, raw) is None and _whole_batch_is_good(table, record_timestamp_ms, limits):
        return _filled(table)
    return None


def record_ticks(raw: bytes, record_timestamp_ms: int | None, limits: TickLimits = DEFAULT_LIMITS
                 ) -> tuple[list[tuple], list[RefusedTick]]:
    """One record's ticks as plain tuples of their fields (what SymbolProcessor.accept takes), and what in it
    is not a tick, record by record. (The job parses a partition's records a group at a time, group_ticks,
    which gives what this gives record by record: tested against it.)"""
    table = good_batch(raw, record_timestamp_ms, limits)
    if table is not None:
        return list(zip(*_batch_columns(table))), []
    return decode_record(raw, record_timestamp_ms, limits, fields_only=True)


class RecordGroup(NamedTuple):
    """Records of one ticks partition, in the topic's order, as the job's JVM side hands them to Python in one
    element (jvm/, GroupRecords): each record's offset, timestamp (ms) and value."""
    offsets: list[int]
    timestamps_ms: list[int]
    values: list[bytes]


def decode_group(payload: bytes) -> RecordGroup:
    """GroupRecords' layout, little-endian: int32 n, n int64 offsets, n int64 record timestamps (ms), n int32
    value lengths, then the n values one after another."""
    n = int.from_bytes(payload[:4], "little")
    offsets = np.frombuffer(payload, "<i8", n, 4)
    stamps = np.frombuffer(payload, "<i8", n, 4 + 8 * n)
    ends = np.cumsum(np.frombuffer(payload, "<i4", n, 4 + 16 * n), dtype=np.int64) + (4 + 20 * n)
    starts = np.concatenate(([4 + 20 * n], ends[:-1])).tolist() if n else []
    if n and ends[-1] != len(payload):
        raise ValueError(f"a record group of {n} records should end at byte {ends[-1]}, not {len(payload)}")
    return RecordGroup(offsets.tolist(), stamps.tolist(), [payload[a:b] for a, b in zip(starts, ends.tolist())])


def encode_group(group: RecordGroup) -> bytes:
    """decode_group's inverse (GroupRecords writes it in the job; this is for tests and tools)."""
    n = len(group.values)
    return b"".join([n.to_bytes(4, "little"), np.asarray(group.offsets, "<i8").tobytes(),
                     np.asarray(group.timestamps_ms, "<i8").tobytes(),
                     np.asarray([len(v) for v in group.values], "<i4").tobytes(), *group.values])


_JSON_TYPES = {"string": {str}, "number": {float, int}, "integer": {int}}
# JSON ticks are checked column-wise this many at a time: a bad record sends only its chunk record by record.
JSON_CHUNK_RECORDS = 1000


def good_json_ticks(values: list[bytes], timestamps_ms: list[int], limits: TickLimits = DEFAULT_LIMITS
                    ) -> list[list] | None:
    """JSON tick records whose every one is certainly a tick, as columns in Tick's field order (absent values
    as the schema's defaults, symbols and exchanges interned, as _batch_columns gives a batch's), checked
    column by column with a batch's checks (_probes_pass); None when some record may not be one:
    decode_record then says, record by record, which are ticks and why the others are not. Accepts only
    what decode_record accepts, with the same fields: a JSON value that the strict parser here (orjson)
    refuses, a value of another JSON type than the schema's, or any failed check sends the whole chunk
    the record-by-record way."""
    if not values or not _COLUMNWISE or max(map(len, values)) > limits.max_bytes:
        return None
    try:
        objects = list(map(orjson.loads, values))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objects)) != {dict}:
        return None
    columns, probes = {}, {}
    for name, kind, required, default, _ in _FIELDS:
        column = [o.get(name) for o in objects]
        kinds = set(map(type, column))
        if type(None) in kinds:
            if required:
                return None
            column = [default if v is None else v for v in column]
            kinds = set(map(type, column))
        if not kinds <= _JSON_TYPES[kind]:  # bool is not int here: type(), not isinstance
            return None
        if kind == "string":
            probes[name] = set(column)
            column = list(map(sys.intern, column))
        else:
            # orjson gives finite numbers only (it refuses NaN, Infinity and overflowing literals); an integer
            # beyond int64 (it gives those as int) fails the schema's bounds below.
            if kind == "number" and int in kinds:
                column = list(map(float, column))
            probes[name] = (min(column), max(column))
        columns[name] = column
    if not _probes_pass(probes, None, limits):
        return None
    # Each tick's own record timestamp is its event time in ms (check_record_timestamp).
    if any(map(operator.ne, map(operator.floordiv, columns["event_time"], itertools.repeat(1000)), timestamps_ms)):
        return None
    return [columns[name] for name in Tick._fields]


def parse_json_records(values: list[bytes], timestamps_ms: list[int], limits: TickLimits = DEFAULT_LIMITS):
    """JSON tick records, JSON_CHUNK_RECORDS at a time: per chunk (its first index, its ticks' columns, None)
    when every record is a good tick (good_json_ticks), else (its first index, None, decode_record's
    (ticks, refused) per record) for exact reasons."""
    for start in range(0, len(values), JSON_CHUNK_RECORDS):
        chunk, stamps = values[start:start + JSON_CHUNK_RECORDS], timestamps_ms[start:start + JSON_CHUNK_RECORDS]
        columns = good_json_ticks(chunk, stamps, limits)
        if columns is not None:
            yield start, columns, None
        else:
            yield start, None, [decode_record(value, stamp, limits, fields_only=True)
                                for value, stamp in zip(chunk, stamps)]


class GroupTicks(NamedTuple):
    ticks: list[tuple]  # Tick's fields, what SymbolProcessor.accept takes, in the topic's order
    refused: list[tuple[int, RefusedTick]]  # what is not a tick, with its record's index in the group
    pieces: list  # the same ticks in the same order, as they were parsed: tables, or lists of Tick's columns


def group_ticks(group: RecordGroup, limits: TickLimits = DEFAULT_LIMITS) -> GroupTicks:
    """The job's parse step for a partition's records grouped in the JVM: their ticks as plain tuples of their
    fields, in the topic's order (and as the columns they were parsed into, for tick_batch_records), and
    what is not a tick, each with the index of its record in the group. The same ticks and refusals as
    record_ticks record by record."""
    fields: list[tuple] = []
    refused: list[tuple[int, RefusedTick]] = []
    pieces: list = []
    run: list[int] = []  # indexes of the JSON records not yet parsed

    def parse_run() -> None:
        for start, columns, decoded in parse_json_records([group.values[i] for i in run],
                                                          [group.timestamps_ms[i] for i in run], limits):
            if columns is not None:
                fields.extend(zip(*columns))
                pieces.append(columns)
                continue
            chunk_ticks = []
            for i, (ticks, bad) in zip(run[start:], decoded):
                chunk_ticks += ticks
                refused.extend((i, item) for item in bad)
            add(chunk_ticks)
        run.clear()

    def add(ticks: list[tuple]) -> None:
        if ticks:
            fields.extend(ticks)
            pieces.append(list(zip(*ticks)))

    for i, value in enumerate(group.values):
        if not is_batch(value):
            run.append(i)
            continue
        parse_run()
        table = good_batch(value, group.timestamps_ms[i], limits)
        if table is not None:
            fields.extend(zip(*_batch_columns(table)))
            pieces.append(table)
        else:
            ticks, bad = decode_record(value, group.timestamps_ms[i], limits, fields_only=True)
            add(ticks)
            refused.extend((i, item) for item in bad)
    parse_run()
    return GroupTicks(fields, refused, pieces)


# The ticks of a tick_batches record at most: a tick takes ~50 bytes in Arrow, and at most ~200 (a 32-character
# symbol and exchange, the exchange's characters 4 bytes each), so a record stays within Kafka's default
# largest record, 1 MiB (the producer's max.request.size; larger, the job would fail).
TICK_BATCH_ROWS = 4000


def tick_batch_records(key: bytes, pieces: list) -> list[bytes]:
    """A group's ticks (GroupTicks.pieces) as the job's tick_batches records, "key<TAB>an Arrow batch
    (encode_batch)" of at most TICK_BATCH_ROWS ticks each: what the loader stores as raw ticks, parsed once,
    by the job, not again from the JSON by the loader. From the parsed columns: no Python object per tick."""
    tables = [(piece if isinstance(piece, pa.Table) else pa.Table.from_arrays(
        [pa.array(column, BATCH_SCHEMA.field(name).type) for name, column in zip(Tick._fields, piece)],
        names=Tick._fields)).select(BATCH_SCHEMA.names).cast(BATCH_SCHEMA) for piece in pieces]
    if not tables:
        return []
    table = pa.concat_tables(tables).combine_chunks()  # one record batch per record: each costs ~0.4 kB of metadata
    return [key + b"\t" + encode_batch(table.slice(start, TICK_BATCH_ROWS))
            for start in range(0, table.num_rows, TICK_BATCH_ROWS)]


def _row_json(fields: dict) -> bytes:
    """A batch row as JSON; NaN and infinities as text (JSON has no such numbers)."""
    safe = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()}
    return json.dumps(safe, ensure_ascii=False).encode("utf-8", "surrogatepass")


def dead_letter(refused: RefusedTick, source_topic: str, partition: int, offset: int, record_timestamp_ms,
                rejected_at_us: int) -> tuple[str, dict]:
    """(key, value) of a dead letter: the reason, the content, and where it was read."""
    key = f"{partition}:{offset}" if refused.row is None else f"{partition}:{offset}:{refused.row}"
    return key, {
        "reason": refused.rejection.code, "message": refused.rejection.message, "source_topic": source_topic,
        "source_partition": partition, "source_offset": offset, "batch_row": refused.row,
        "record_timestamp_ms": record_timestamp_ms,
        "raw_base64": base64.b64encode(refused.raw).decode("ascii"),
        "raw_text": refused.raw[:1024].decode("utf-8", "replace"),
        "rejected_at": rejected_at_us,
    }
