"""The whole pipeline as a user runs it: replay a tick file into the real broker, run the job bounded on
the Flink mini-cluster, then read the alerts back with read_committed and the rollups from ClickHouse
(embedded engine), and compare both with the oracle computed from the same file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from cli_env import cli_env
from oracle import alert_key, apply_order, expected_alerts, expected_max_updates, expected_rollups, split_duplicates, \
    update_key
from stockmax import kafka_io, sample
from stockmax.operators.durations import format_duration
from stockmax.store import Store

pytestmark = pytest.mark.e2e

BAD = {  # raw message -> the reason code it must reach the dead-letter topic with
    b"definitely not json": "not_json",
    b'{"symbol": "AAPL", "price": -1, "event_time": 1767623400000000}': "price_not_positive",
    b'{"symbol": "AAPL", "event_time": 1767623400000000}': "missing_field",
    b'{"symbol": "AAPL", "price": "1.5", "event_time": 1767623400000000}': "wrong_type",
    b"\xc3\x28\xff": "not_utf8",
}


def update_values(update: dict) -> tuple:
    return (update["symbol"], update["window"], update["event_time"], update["seq"], update["max"], update["min"])


def pandas_max_updates(ticks: list[dict], windows_us) -> list[tuple]:
    """Per symbol and window, pandas' rolling max/min over (t - W, t] at every tick, kept where it changed."""
    out = []
    for symbol, applied in apply_order(ticks).items():
        series = pd.Series([t["price"] for t in applied], index=pd.to_datetime([t["event_time"] for t in applied], unit="us"))
        for w in windows_us:
            rolling = series.rolling(pd.Timedelta(microseconds=w), closed="right")
            previous = None
            for tick, high, low in zip(applied, rolling.max(), rolling.min()):
                if (high, low) != previous:
                    out.append((symbol, format_duration(w), tick["event_time"], tick["seq"], high, low))
                    previous = (high, low)
    return out


def stockmax(settings, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stockmax {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


MISMATCHED = b'{"symbol": "AAPL", "price": 10.0, "event_time": 1767623400000000}'  # record stamped otherwise


def test_replay_run_bounded_read_back(settings, tmp_path):
    # Parallelism 1 over 2 partitions: one reader interleaves the partitions in large batches, which only
    # per-partition watermarks in the source survive without marking ticks late.
    assert settings.parallelism == 1 and settings.topic_partitions == 2
    # Watermarks every 50 ms and Python bundles of 100 records: many watermarks pass through the run.
    settings = settings.with_(symbol_rules={"IDLE": {"levels": [100.0]}}, watermark_interval_ms=50,
                              python_bundle_size=100)
    generated = sample.generate(symbols=10, duration_s=600, ticks_per_second=5, spikes_per_symbol=4,
                                duplicate_share=0.005, seed=11,
                                max_delay_ms=sample.delay_within(settings.watermark_bound_ms)).to_pylist()
    start = min(t["event_time"] for t in generated)
    # IDLE ticks at the start and returns after more than the longest window (1 h) + the bound: it starts
    # fresh, so its price level fires again. Its return comes last: it moves event time an hour on.
    idle = [{"symbol": "IDLE", "price": p, "volume": 1.0, "exchange": "XNAS", "seq": i, "event_time": start + i * 1000}
            for i, p in enumerate([99.0, 101.0, 102.0])]
    idle_back = [{"symbol": "IDLE", "price": 103.0, "volume": 1.0, "exchange": "XNAS", "seq": 3,
                  "event_time": start + 3_700_000_000}]
    # Out of order within the watermark bound, never late. (A tick is late when the watermark has passed it
    # before it arrives, which a bounded run that reads the topic at once cannot promise:
    # test_bad_input publishes late ticks to a running job after a watermark has passed them.)
    ticks = idle + generated + idle_back
    tick_file = tmp_path / "ticks.csv"
    pacsv.write_csv(pa.Table.from_pylist(ticks), tick_file)
    applied_input = ticks

    stockmax(settings, "topics", "create")
    # One JSON record per tick, as a live feed sends them (batches: test_history, test_faults).
    stockmax(settings, "replay", str(tick_file), "--no-progress")
    producer = kafka_io.producer(settings)
    for raw in BAD:  # malformed ticks mixed into the stream: they must not stop the job
        producer.send(settings.topic("ticks"), raw, key=b"AAPL")
    producer.send(settings.topic("ticks"), MISMATCHED, key=b"AAPL", timestamp_ms=1767623400000 + 5)
    producer.flush()
    producer.close()
    stockmax(settings, "run", "--bounded")

    # Late: none; the file keeps its disorder within the watermark bound.
    assert kafka_io.read_committed_json(settings, "late") == []

    # Duplicates: every repeated (symbol, exchange, seq) is reported once per extra copy, never applied.
    kept, repeats = split_duplicates(applied_input)
    assert len(repeats) >= 50, "the sample should contain duplicates"
    duplicates = kafka_io.read_committed_json(settings, "duplicates")
    assert sorted((d["symbol"], d["exchange"], d["seq"]) for d in duplicates) == \
           sorted((d["symbol"], d["exchange"], d["seq"]) for d in repeats)

    # Max updates: values equal pandas' time-based rolling max/min, and every field equals the brute-force
    # oracle's (times and moving average included), exactly.
    updates = kafka_io.read_committed_json(settings, "max_updates")
    assert Counter(map(update_values, updates)) == Counter(pandas_max_updates(kept, settings.rules().windows_us))
    want_updates = expected_max_updates(applied_input, tuple(w // 1000 for w in settings.rules().windows_us),
                                        settings.spike_window_ms, settings.watermark_bound_ms,
                                        settings.moving_average_ticks)
    assert Counter(map(update_key, updates)) == Counter(map(update_key, want_updates))
    records = list(kafka_io.read_committed(settings, settings.topic("max_updates")))
    assert all(r.key.decode() == f"{json.loads(r.value)['symbol']}|{json.loads(r.value)['window']}" for r in records)

    # Alerts: exactly the oracle's, none missing, none twice (read_committed: only committed transactions).
    alerts = kafka_io.read_committed_json(settings, "alerts")
    want = expected_alerts(applied_input, settings.spike_threshold_pct, settings.spike_window_ms,
                           overrides={"IDLE": {"levels": [100.0]}})
    assert [a["event_time"] for a in want if a["symbol"] == "IDLE" and a["kind"] == "threshold_up"] == \
           [idle[1]["event_time"], idle_back[0]["event_time"]]
    assert len(want) >= 10, "the sample should contain spikes"
    assert Counter(map(alert_key, alerts)) == Counter(map(alert_key, want))
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

    # Dead letters: every bad message once, with its reason and its original bytes.
    dead = kafka_io.read_committed_json(settings, "dead")
    want_dead = sorted([*BAD.items(), (MISMATCHED, "timestamp_mismatch")])
    assert sorted((base64.b64decode(d["raw_base64"]), d["reason"]) for d in dead) == want_dead

    # Rollups: every bucket of the oracle in ClickHouse, equal in every column, none extra.
    want_rows = [row for r in settings.rollup_resolutions_seconds() for row in expected_rollups(applied_input, r)]
    assert {r["resolution_s"] for r in want_rows} == {1, 60, 3600}
    with Store(settings) as store:
        got_rows = store.query("rollups_for_symbols", symbol_prefix="")
    key = lambda r: (r["symbol"], r["resolution_s"], r["bucket_start"])
    assert sorted(map(key, got_rows)) == sorted(map(key, want_rows))
    for got, exp in zip(sorted(got_rows, key=key), sorted(want_rows, key=key)):
        for column in exp:  # every column, bit for bit
            assert got[column] == exp[column], (key(got), column)

    # The rollups topic itself holds each bucket once (exactly-once sink), not just the deduplicating table.
    topic_rows = kafka_io.read_committed_json(settings, "rollups")
    assert len(topic_rows) == len(want_rows)


def test_commands_report_an_unreachable_broker_clearly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", "topics", "create"], capture_output=True, text=True,
                          env={**os.environ, "STOCKMAX_KAFKA_BOOTSTRAP": "localhost:1",
                               "STOCKMAX_DATA_DIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 1
    assert "no Kafka broker answers at localhost:1" in done.stderr
    assert "Traceback" not in done.stderr
