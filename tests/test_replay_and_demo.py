"""`stockmax replay` pacing and record stamping, and `stockmax demo` (what `make run` runs) against the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cli_env import cli_env
from oracle import expected_alerts, expected_rollups
from stockmax import kafka_io, sample
from stockmax.demo import BAD_TICKS, demo
from stockmax.operators.records import decode_record
from stockmax.operators.tick import Tick
from stockmax.replay import read_tick_file, replay


def test_replay_stamps_records_with_event_time_and_keys_by_symbol(settings, tmp_path):
    path = sample.write(sample.generate(symbols=3, duration_s=20, ticks_per_second=3, seed=3), tmp_path / "t.parquet")
    file_ticks = [Tick(**row) for row in read_tick_file(path).to_pylist()]
    kafka_io.create_topics(settings)
    n = replay(settings, path, progress=False, batch_ticks=1)
    records = list(kafka_io.read_committed(settings, settings.topic("ticks")))
    assert len(records) == n == len(file_ticks)
    for record in records:
        tick = json.loads(record.value)
        assert record.timestamp == tick["event_time"] // 1000
        assert record.key == tick["symbol"].encode()
    partition_of = {}
    for record in records:
        partition_of.setdefault(record.key.decode(), set()).add(record.partition)
    assert all(len(p) == 1 for p in partition_of.values())  # a symbol's ticks stay in one partition, in order
    assert [Tick(**json.loads(r.value)) for r in sorted(records, key=lambda r: (r.partition, r.offset))] == \
           sorted(file_ticks, key=lambda t: (next(iter(partition_of[t.symbol])), file_ticks.index(t)))

    # As Arrow batches (the default): the same ticks, each in its symbol's partition in file order, each
    # batch stamped with its newest event time.
    batched = settings.with_(topic_prefix=settings.topic_prefix + "b-")
    kafka_io.create_topics(batched)
    assert replay(batched, path, progress=False, batch_ticks=7) == n
    records = list(kafka_io.read_committed(batched, batched.topic("ticks")))
    got = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        ticks, refused = decode_record(record.value, record.timestamp)
        assert refused == [] and 1 <= len(ticks) <= 7
        assert record.timestamp == max(t.event_time for t in ticks) // 1000
        for tick in ticks:
            assert partition_of[tick.symbol] == {record.partition}
            got.setdefault(record.partition, []).append(tick)
    for partition, ticks in got.items():
        assert ticks == [t for t in file_ticks if partition_of[t.symbol] == {partition}]
    assert sum(map(len, got.values())) == n


def test_replay_speed_follows_recorded_time(settings, tmp_path):
    path = tmp_path / "t.csv"
    # 2 s of recorded time at 4x: at least 0.5 s of wall time (a lower bound only; never an upper one).
    path.write_text("symbol,price,event_time\nA,1,1767623400000000\nA,2,1767623401000000\nA,3,1767623402000000\n")
    kafka_io.create_topics(settings)
    started = time.monotonic()
    replay(settings, path, speed=4.0, progress=False)
    assert time.monotonic() - started >= 0.5


def test_paced_replay_refuses_batches_with_one_clear_line(settings, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("symbol,price,event_time\nA,1,1767623400000000\n")
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", "replay", str(path), "--speed", "2",
                           "--batch-ticks", "1000"], env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "use one or the other" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.e2e
def test_demo_summary_matches_the_oracle(settings):
    lines = []
    summary = demo(settings, say=lines.append)
    ticks = read_tick_file(settings.data_dir / "demo" / "sample-ticks.csv").to_pylist()
    assert summary["ticks_valid"] == len(ticks)
    assert summary["dead_letters"] == len(BAD_TICKS)
    assert summary["late_ticks"] == 0
    assert summary["alerts_committed"] == len(expected_alerts(ticks, settings.spike_threshold_pct,
                                                              settings.spike_window_ms))
    assert summary["rollup_rows_in_clickhouse"] == len(expected_rollups(ticks, 60))
    by_symbol = {}
    for tick in ticks:
        by_symbol[tick["symbol"]] = max(by_symbol.get(tick["symbol"], 0), tick["price"])
    for row in summary["highest"]:
        assert row["max_price"] == by_symbol[row["symbol"]]
    assert "stockmax run summary" in lines


def test_stockmax_sample_keeps_its_ticks_within_the_watermark_bound_and_refuses_a_bad_delay(settings, tmp_path):
    # A user's sample must lose no tick to lateness under whatever bound the settings give.
    settings = settings.with_(watermark_bound_ms=400)
    path = tmp_path / "s.parquet"
    made = subprocess.run([sys.executable, "-m", "stockmax.cli", "sample", str(path), "--symbols", "5",
                           "--duration", "120", "--rate", "10"], env=cli_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    rows = read_tick_file(path).to_pylist()
    assert made.stdout.strip() == f"wrote {len(rows)} ticks to {path}"
    latest, behind = -1, []
    for row in rows:  # how far each tick comes after a later one, in arrival order
        behind.append(max(0, latest - row["event_time"]))
        latest = max(latest, row["event_time"])
    assert 0 < max(behind) <= 300_000
    refused = subprocess.run([sys.executable, "-m", "stockmax.cli", "sample", str(tmp_path / "t.csv"),
                              "--max-delay-ms", "0"], env=cli_env(settings), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2
    assert "--max-delay-ms: must be at least 1, not 0" in refused.stderr
    assert not (tmp_path / "t.csv").exists()
