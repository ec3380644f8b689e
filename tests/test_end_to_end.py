"""The whole pipeline as a user runs it: replay a tick file into the real broker, run the job bounded on
the Flink mini-cluster, then read the alerts back with read_committed and the rollups from ClickHouse
(embedded engine), and compare both with the oracle computed from the same file."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections import Counter

import pytest

from oracle import alert_key, expected_alerts, expected_rollups
from stockmax import kafka_io, sample
from stockmax.replay import read_tick_file
from stockmax.store import Store

pytestmark = pytest.mark.e2e

BAD = {  # raw message -> the reason code it must reach the dead-letter topic with
    b"definitely not json": "not_json",
    b'{"symbol": "AAPL", "price": -1, "event_time": 1767623400000000}': "invalid_value",
    b'{"symbol": "AAPL", "event_time": 1767623400000000}': "missing_field",
    b'{"symbol": "AAPL", "price": "1.5", "event_time": 1767623400000000}': "wrong_type",
    b"\xc3\x28\xff": "not_utf8",
}


def stockmax(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ,
           "STOCKMAX_DATA_DIR": str(settings.data_dir), "STOCKMAX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "STOCKMAX_TOPIC_PREFIX": settings.topic_prefix, "STOCKMAX_JOB_NAME": settings.job_name,
           "STOCKMAX_PARALLELISM": str(settings.parallelism)}
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"stockmax {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


MISMATCHED = b'{"symbol": "AAPL", "price": 10.0, "event_time": 1767623400000000}'  # record stamped otherwise


def test_replay_run_bounded_read_back(settings, tmp_path):
    # Parallelism 1 over 2 partitions: one reader interleaves the partitions in large batches, which only
    # per-partition watermarks in the source survive without marking ticks late.
    assert settings.parallelism == 1 and settings.topic_partitions == 2
    tick_file = sample.write(sample.generate(symbols=10, duration_s=600, ticks_per_second=5, spikes_per_symbol=4,
                                             seed=11), tmp_path / "ticks.csv")
    ticks = read_tick_file(tick_file).to_pylist()

    stockmax(settings, "topics", "create")
    stockmax(settings, "replay", str(tick_file), "--no-progress")
    producer = kafka_io.producer(settings)
    for raw in BAD:  # malformed ticks mixed into the stream: they must not stop the job
        producer.send(settings.topic("ticks"), raw, key=b"AAPL")
    producer.send(settings.topic("ticks"), MISMATCHED, key=b"AAPL", timestamp_ms=1767623400000 + 5)
    producer.flush()
    producer.close()
    stockmax(settings, "run", "--bounded")

    # No tick of this file is late (its disorder stays within the watermark bound).
    late = kafka_io.read_committed_json(settings, "late")
    assert len(late) == 0, f"{len(late)} ticks judged late, e.g. {late[:2]}"

    # Alerts: exactly the oracle's, none missing, none twice (read_committed: only committed transactions).
    alerts = kafka_io.read_committed_json(settings, "alerts")
    want = expected_alerts(ticks, settings.spike_threshold_pct, settings.spike_window_ms)
    assert len(want) >= 10, "the sample should contain spikes"
    assert Counter(map(alert_key, alerts)) == Counter(map(alert_key, want))
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

    # Dead letters: every bad message once, with its reason and its original bytes.
    dead = kafka_io.read_committed_json(settings, "dead")
    want_dead = sorted([*BAD.items(), (MISMATCHED, "timestamp_mismatch")])
    assert sorted((base64.b64decode(d["raw_base64"]), d["reason"]) for d in dead) == want_dead

    # Rollups: every bucket of the oracle in ClickHouse, equal in every column, none extra.
    want_rows = expected_rollups(ticks, settings.rollup_resolution_s)
    with Store(settings) as store:
        got_rows = store.query("rollups_for_symbols", symbol_prefix="")
    key = lambda r: (r["symbol"], r["bucket_start"])
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
