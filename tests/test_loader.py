"""The store loader: the rows it makes of the topics' records (column by column) and its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple

import orjson
import pyarrow as pa
import pytest

from stockmax import kafka_io
from stockmax.loader import LoaderProcess, record_tables
from stockmax.operators import records as records_module
from stockmax.operators.records import RecordGroup, encode_batch, group_ticks, tick_batch_records
from stockmax.operators.tick import DEFAULT_LIMITS
from stockmax.store import Store, StoreLockedError

Record = namedtuple("Record", "topic value timestamp")


def _tick(i: int, symbol: str, **changes) -> dict:
    return {"symbol": symbol, "price": 100.0 + i * 0.37, "volume": float(i % 7), "exchange": "XNAS" if i % 2 else "ARCX",
            "seq": 1000 + i, "event_time": 1_767_623_400_000_000 + i * 250_001, **changes}


def _batch(rows: list[dict]) -> Record:
    return Record("ticks", encode_batch(pa.Table.from_pylist(rows)), max(r["event_time"] for r in rows) // 1000)


def test_loaded_rows_are_the_records_ticks_and_rollups(store_settings, monkeypatch, caplog):
    """Raw ticks reach the store as the job parsed them (its tick-batches records: group_ticks, then
    tick_batch_records, as its parse step does), late ones marked not applied; rollups as their records.
    Oracle: the input rows, by hand."""
    good = [_tick(i, f"S{i % 5}") for i in range(2000)]
    with_bad_row = [_tick(i, "B") for i in range(3000, 3010)]
    with_bad_row[4]["price"] = -1.0  # not a tick: the job sent this row to the dead letters
    nulls = [_tick(4000, "N", volume=None), _tick(4001, "N", exchange=None), _tick(4002, "N", seq=None)]  # defaults
    single = _tick(5000, "J")
    late = {**_tick(7, "S2"), "reason": "late", "watermark_ms": 1}  # a tick of `good` the job did not apply
    rollups = [{"symbol": "S0", "resolution_s": 1, "bucket_start": 1_767_623_400_000_000, "open": 0.1 + 0.2,
                "high": 1e-300, "high_time": 1_767_623_400_000_001, "low": 123456.789, "low_time": 1_767_623_400_999_999,
                "close": 2.5, "count": 3, "volume": 0.0, "vwap": None},
               {"symbol": "S1", "resolution_s": 3600, "bucket_start": 1_767_621_600_000_000, "open": 7.0, "high": 9.5,
                "high_time": 1_767_621_600_000_002, "low": 6.25, "low_time": 1_767_621_600_000_003, "close": 8.0,
                "count": 2**40, "volume": 12.5, "vwap": 7.123456789012345, "a_field_added_later": 1}]
    read = [_batch(good[:1000]), _batch(good[1000:]), _batch(with_bad_row), _batch(nulls),
            Record("ticks", orjson.dumps(single), single["event_time"] // 1000), Record("ticks", b'{"symbol": "broken', 1)]
    monkeypatch.setattr(records_module, "TICK_BATCH_ROWS", 700)  # several records of one group's ticks
    ticks, refused, pieces = group_ticks(RecordGroup(list(range(len(read))), [r.timestamp for r in read],
                                                     [r.value for r in read]), DEFAULT_LIMITS)
    assert len(ticks) == 2000 + 9 + 3 + 1 and len(refused) == 2
    batches = [record.split(b"\t", 1) for record in tick_batch_records(b"0", pieces)]
    assert len(batches) == 3 and {key for key, _ in batches} == {b"0"}
    records = [Record("tick-batches", batches[0][1], 0), Record("rollups", orjson.dumps(rollups[0]), 0),
               Record("tick-batches", b"not a batch: nobody but the job writes here", 0),
               Record("tick-batches", batches[1][1], 0), Record("ticks-late", orjson.dumps(late), 0),
               Record("tick-batches", batches[2][1], 0), Record("rollups", orjson.dumps(rollups[1]), 0)]

    rollup_table, tick_table = record_tables(records, "rollups", "tick-batches")
    assert "not an Arrow batch" in caplog.text  # the foreign record: logged and skipped
    with Store(store_settings) as store:
        store.migrate()
        store.insert_ticks(tick_table)
        store.insert_rollups(rollup_table)
        got_ticks = store.client.query(
            "SELECT symbol, price, volume, exchange, seq, toUnixTimestamp64Micro(event_time), applied "
            "FROM ticks FINAL ORDER BY symbol, event_time").result_rows
        got_rollups = store.query("rollups_for_symbols", symbol_prefix="")

    # The oracle: the input rows themselves, by hand.
    defaults = {"volume": 0.0, "exchange": "", "seq": 0}
    raw = good + [r for r in with_bad_row if r["price"] > 0] + nulls + [single]
    expected = sorted((r["symbol"], r["price"], *((r[k] if r[k] is not None else defaults[k]) for k in ("volume", "exchange", "seq")),
                       r["event_time"], 0 if (r["symbol"], r["seq"]) == (late["symbol"], late["seq"]) else 1)
                      for r in raw)
    assert sorted(got_ticks) == expected
    assert len(got_ticks) == 2000 + 9 + 3 + 1
    assert [{k: r[k] for k in rollups[0]} for r in got_rollups] == [{k: r[k] for k in rollups[0]} for r in rollups]


def test_no_records_load_nothing():
    rollup_table, tick_table = record_tables([], "rollups", "tick-batches")
    assert rollup_table.num_rows == tick_table.num_rows == 0


def test_loader_process_holds_the_store_until_stopped_or_orphaned(settings, tmp_path):
    s = settings.with_(data_dir=tmp_path / "loader", topic_prefix=f"loader-{os.getpid()}-{time.time_ns()}-")
    kafka_io.create_topics(s)
    loader = LoaderProcess(s)
    try:
        assert loader.is_alive()
        with pytest.raises(StoreLockedError) as held:
            Store(s)
        assert f"process {loader.process.pid}" in str(held.value)
    finally:
        loader.stop()
    assert not loader.is_alive() and loader.process.exitcode == 0
    with Store(s):  # let go of it; and a loader cannot start on a store held elsewhere
        with pytest.raises(StoreLockedError, match=f"process {os.getpid()}"):
            LoaderProcess(s)

    # Its parent killed outright: the loader notices and exits, and the store is free again.
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pickle, sys, time
        from stockmax.loader import LoaderProcess
        loader = LoaderProcess(pickle.loads({__import__('pickle').dumps(s)!r}))
        print(loader.process.pid, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while _running(child):
        assert time.monotonic() < deadline, "the orphaned loader is still running"
        time.sleep(0.2)
    with Store(s):
        pass


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
