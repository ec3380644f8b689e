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
from oracle import alert_key, apply_order, expected_alerts, expected_rollups, split_duplicates, update_key
from pure_run import run_processor
from stockmax import kafka_io, sample
from stockmax.operators.durations import format_duration
from stockmax.operators.tick import Tick
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


def full_update(update: dict) -> tuple:
    return update_key(update) + (round(update["moving_average"], 9),)


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
    # The late ticks below are late only if a watermark past them reaches the keyed step before they do.
    # Watermarks every 50 ms and Python bundles of 100 records (a bundle holds watermarks back until it
    # ends) put many between the data and them: with the defaults (1 s, 10,000 records), a run that read
    # all ~6,000 records within its first bundle took them before any watermark (seen 1 run in 4).
    settings = settings.with_(symbol_rules={"IDLE": {"levels": [100.0]}}, watermark_interval_ms=50,
                              python_bundle_size=100)
    generated = sample.generate(symbols=10, duration_s=600, ticks_per_second=5, spikes_per_symbol=4,
                                duplicate_share=0.005, seed=11).to_pylist()
    start = min(t["event_time"] for t in generated)
    # IDLE ticks at the start and returns after more than the longest window (1 h) + the bound: it starts
    # fresh, so its price level fires again. Its return comes last: it moves event time an hour on.
    idle = [{"symbol": "IDLE", "price": p, "volume": 1.0, "exchange": "XNAS", "seq": i, "event_time": start + i * 1000}
            for i, p in enumerate([99.0, 101.0, 102.0])]
    idle_back = [{"symbol": "IDLE", "price": 103.0, "volume": 1.0, "exchange": "XNAS", "seq": 3,
                  "event_time": start + 3_700_000_000}]
    # Late: ticks of the data's first second, published after all ten minutes of it.
    late = [{**generated[i], "seq": 10**9 + i} for i in range(3)]
    ticks = idle + generated + late + idle_back
    tick_file = tmp_path / "ticks.csv"
    pacsv.write_csv(pa.Table.from_pylist(ticks), tick_file)
    applied_input = idle + generated + idle_back  # what the job applies: everything but the late ticks

    stockmax(settings, "topics", "create")
    # One JSON record per tick, as a live feed sends them (batches: test_history, test_faults). The late
    # ticks must reach the job after a watermark has passed them: in a few large batches, all of the input
    # may be read before the first periodic watermark.
    stockmax(settings, "replay", str(tick_file), "--no-progress")
    producer = kafka_io.producer(settings)
    for raw in BAD:  # malformed ticks mixed into the stream: they must not stop the job
        producer.send(settings.topic("ticks"), raw, key=b"AAPL")
    producer.send(settings.topic("ticks"), MISMATCHED, key=b"AAPL", timestamp_ms=1767623400000 + 5)
    producer.flush()
    producer.close()
    stockmax(settings, "run", "--bounded")

    # Late: exactly the ticks published after the watermark had passed them; the rest of the file keeps
    # its disorder within the watermark bound.
    got_late = kafka_io.read_committed_json(settings, "late")
    assert sorted((t["symbol"], t["seq"]) for t in got_late) == sorted((t["symbol"], t["seq"]) for t in late)
    assert all(t["reason"] == "late" and t["watermark_ms"] >= t["event_time"] // 1000 for t in got_late)

    # Duplicates: every repeated (symbol, exchange, seq) is reported once per extra copy, never applied.
    kept, repeats = split_duplicates(applied_input)
    assert len(repeats) >= 50, "the sample should contain duplicates"
    duplicates = kafka_io.read_committed_json(settings, "duplicates")
    assert sorted((d["symbol"], d["exchange"], d["seq"]) for d in duplicates) == \
           sorted((d["symbol"], d["exchange"], d["seq"]) for d in repeats)

    # Max updates: values equal pandas' time-based rolling max/min (an independent oracle), and every
    # record equals what the pure operator gives on the same input (times and moving average included).
    updates = kafka_io.read_committed_json(settings, "max_updates")
    assert Counter(map(update_values, updates)) == Counter(pandas_max_updates(kept, settings.rules().windows_us))
    pure = run_processor([Tick(**t) for t in applied_input], settings.rules())
    assert Counter(map(full_update, updates)) == Counter(map(full_update, pure["max_updates"]))
    assert Counter(map(alert_key, kafka_io.read_committed_json(settings, "alerts"))) == \
           Counter(map(alert_key, pure["alerts"]))  # the job's alerts are the pure operator's too
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
        for column in ("open", "high", "high_time", "low", "low_time", "close", "count", "resolution_s"):
            assert got[column] == exp[column], (key(got), column)
        assert got["volume"] == pytest.approx(exp["volume"])
        assert got["vwap"] == pytest.approx(exp["vwap"])

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
