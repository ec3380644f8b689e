"""Replays a recorded tick file (CSV or Parquet) into the ticks topic."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from kafka.partitioner import murmur2
from tqdm import tqdm

from .config import Settings
from .operators.records import encode_batch
from .kafka_io import producer

REQUIRED = ("symbol", "price", "event_time")
OPTIONAL = {"volume": 0.0, "exchange": "", "seq": None}


class TickFileError(ValueError):
    pass


def _event_time_us(column: pa.ChunkedArray, path: Path) -> pa.ChunkedArray:
    """ISO-8601 UTC text, timestamps, or integer epoch µs -> int64 epoch µs."""
    kind = column.type
    try:
        if pa.types.is_integer(kind):
            return pc.cast(column, pa.int64())
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            # Text without a zone is taken to be UTC: give it one, so that every value casts the same way.
            zoned = pc.match_substring_regex(column, r"(Z|[+-]\d\d:?\d\d)$")
            column = pc.if_else(zoned, column, pc.binary_join_element_wise(column, "+00:00", ""))
            column = pc.cast(column, pa.timestamp("us", tz="UTC"))
            kind = column.type
        if pa.types.is_timestamp(kind):
            return pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TickFileError(f"{path}: event_time is neither ISO-8601 UTC nor epoch microseconds: {exc}") from None
    raise TickFileError(f"{path}: event_time has type {kind}; expected ISO-8601 text or integer epoch µs")


def read_tick_file(path: str | Path) -> pa.Table:
    """The file's ticks as a table with columns symbol, price, volume, exchange, seq, event_time (µs).

    A missing seq column is numbered by row, so every tick of the file has a distinct sequence number.
    """
    path = Path(path)
    if not path.is_file():
        raise TickFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"symbol": pa.string(), "exchange": pa.string()}))
        else:
            raise TickFileError(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise TickFileError(f"{path}: cannot read: {exc}") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise TickFileError(f"{path}: missing column(s) {', '.join(missing)}; have {', '.join(table.column_names)}")
    n = table.num_rows
    columns = {
        "symbol": pc.cast(table["symbol"], pa.string()),
        "price": pc.cast(table["price"], pa.float64()),
        "volume": pc.cast(table["volume"], pa.float64()) if "volume" in table.column_names
        else pa.chunked_array([pa.array([0.0] * n, pa.float64())]),
        "exchange": pc.cast(table["exchange"], pa.string()) if "exchange" in table.column_names
        else pa.chunked_array([pa.array([""] * n, pa.string())]),
        "seq": pc.cast(table["seq"], pa.int64()) if "seq" in table.column_names
        else pa.chunked_array([pa.array(range(n), pa.int64())]),
        "event_time": _event_time_us(table["event_time"], path),
    }
    for name in ("symbol", "price", "event_time"):
        if columns[name].null_count:
            raise TickFileError(f"{path}: column {name} has {columns[name].null_count} empty value(s)")
    columns["volume"] = pc.fill_null(columns["volume"], 0.0)
    columns["exchange"] = pc.fill_null(columns["exchange"], "")
    return pa.table(columns)


def tick_record(row: dict) -> tuple[bytes, bytes, int]:
    """(key, value, record timestamp ms) of one tick as stockmax publishes it: keyed by symbol, stamped
    with its event time."""
    return row["symbol"].encode(), json.dumps(row, separators=(",", ":")).encode(), row["event_time"] // 1000


def replay(settings: Settings, path: str | Path, speed: float | None = None, progress: bool = True,
           batch_ticks: int = 1, ticks_per_s: float | None = None) -> int:
    """Publish every tick of the file, in file order, with the Kafka record timestamp set to the tick's
    event time. `speed`: N x recorded time (None: as fast as possible), one JSON record per tick.
    As fast as possible with batch_ticks > 1, ticks go as Arrow batches of up to `batch_ticks` per record
    (the fast path of the job): the ticks of one partition in file order, to the partition their symbol's
    records go to, stamped with the batch's newest event time; ticks_per_s paces them (a load test's fixed
    rate) instead. Returns the number of ticks published."""
    table = read_tick_file(path)
    n = table.num_rows
    kafka = producer(settings)
    topic = settings.topic("ticks")
    try:
        with tqdm(total=n, unit="tick", desc=f"replay {Path(path).name}", disable=not progress,
                  file=sys.stderr, mininterval=1.0, unit_scale=True) as bar:
            if speed or batch_ticks <= 1:
                _send_records(kafka, topic, table, speed, bar)
            else:
                _send_batches(kafka, topic, table, batch_ticks, bar, ticks_per_s)
            kafka.flush()
    finally:
        kafka.close()
    return n


def _send_records(kafka, topic: str, table: pa.Table, speed: float | None, bar) -> None:
    start_wall = time.monotonic()
    first_event = None
    for batch in table.to_batches(max_chunksize=10_000):
        rows = batch.to_pylist()
        for row in rows:
            if speed:
                if first_event is None:
                    first_event = row["event_time"]
                due = start_wall + (row["event_time"] - first_event) / 1e6 / speed
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            key, value, timestamp_ms = tick_record(row)
            kafka.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
        bar.update(len(rows))


def _send_batches(kafka, topic: str, table: pa.Table, batch_ticks: int, bar, ticks_per_s: float | None = None) -> None:
    """Each partition's ticks in file order, cut into batches. The partition is the one Kafka's default
    partitioner gives the symbol as key (what per-tick records get), so a symbol's ticks never move."""
    partitions = sorted(kafka.partitions_for(topic))
    symbols = table["symbol"].to_pylist()
    # Kafka's default partitioner (the Java client's and kafka-python's alike) for a keyed record
    of_symbol = {s: partitions[(murmur2(s.encode()) & 0x7FFFFFFF) % len(partitions)] for s in set(symbols)}
    by_partition: dict[int, list[int]] = {}
    for row, symbol in enumerate(symbols):
        by_partition.setdefault(of_symbol[symbol], []).append(row)
    # One take groups the rows by partition (file order kept within each); batches are slices of it,
    # sent interleaved in file order so that a consumer sees the stream advance evenly.
    order, cuts = [], []
    for partition, rows in by_partition.items():
        for i in range(0, len(rows), batch_ticks):
            cuts.append((rows[i], partition, len(order) + i, min(batch_ticks, len(rows) - i)))
        order += rows
    grouped = table.take(pa.array(order, pa.int64())).combine_chunks()
    event_times = grouped["event_time"]
    started, sent = time.monotonic(), 0
    for _, partition, offset, length in sorted(cuts):
        if ticks_per_s:
            wait = started + sent / ticks_per_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent += length
        newest_ms = pc.max(event_times.slice(offset, length)).as_py() // 1000
        kafka.send(topic, value=encode_batch(grouped.slice(offset, length)), partition=partition,
                   timestamp_ms=newest_ms)
        bar.update(length)
