"""Outages in the middle of a run: the Kafka broker stops and comes back; the store refuses writes for a
while. Either way the job and the loader carry on by themselves, and the outputs end equal to the
oracle's: nothing missing, nothing twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import clickhouse_connect
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from running_job import (expected_outputs, in_profile, isolated, rollup_values, run_until, start_job, wait_until,
                         with_next_ticks)
from stockmax import kafka_io, sample
from stockmax.kafka_local import LocalKafka, free_port
from stockmax.loader import StoreLoader
from stockmax.replay import replay
from stockmax.store import Store

pytestmark = pytest.mark.e2e


def _halves(tmp_path, seed: int, watermark_bound_ms: int):
    """A sample as two tick files (the feed before and after the outage) and the oracle's outputs; out of
    order by less than the watermark bound, so that no tick is late whatever the timing."""
    data = sample.generate(symbols=6, duration_s=300, ticks_per_second=5, spikes_per_symbol=3, seed=seed,
                           max_delay_ms=min(1500, sample.delay_within(watermark_bound_ms))).to_pylist()
    rows = with_next_ticks(data)
    half = len(rows) // 2
    files = tmp_path / f"first-{seed}.csv", tmp_path / f"second-{seed}.csv"
    pacsv.write_csv(pa.Table.from_pylist(rows[:half]), files[0])
    pacsv.write_csv(pa.Table.from_pylist(rows[half:]), files[1])
    return data, files


@pytest.mark.parametrize("profile", ["balanced", "low-latency"])
def test_broker_stops_and_restarts_mid_run(settings, tmp_path, profile):
    broker = LocalKafka(tmp_path / "kafka", settings.kafka_jars_dir, port=free_port())
    broker.start()
    try:
        s = isolated(in_profile(settings, profile), tmp_path, "broker",
                     kafka_bootstrap=broker.bootstrap)
        data, (first, second) = _halves(tmp_path, seed=41, watermark_bound_ms=s.watermark_bound_ms)
        expected = expected_outputs(s, data)
        kafka_io.create_topics(s)
        replay(s, first, progress=False, batch_ticks=1000)
        job = start_job(s)
        try:
            wait_until(lambda: kafka_io.read_committed_json(s, "max_updates"), "the first outputs", 180, job)
            assert broker.stop()  # mid-run: the job loses its source and its sinks
            # The outage: checkpoints fail meanwhile and the job retries (it rode out 15 s the same way, no
            # restart either, in 2.5x the test's time).
            time.sleep(8)
            assert job.poll() is None, "the job must ride out the outage"
            broker.start()
            replay(s, second, progress=False, batch_ticks=1000)
            assert run_until(s, expected, job) == expected
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, job.stderr.read()[-3000:]
    finally:
        broker.stop()


def test_store_refuses_writes_mid_run_and_loses_nothing(settings, tmp_path):
    s = isolated(settings, tmp_path, "store")
    data, (first, second) = _halves(tmp_path, seed=43, watermark_bound_ms=s.watermark_bound_ms)
    expected = expected_outputs(s, data)
    kafka_io.create_topics(s)
    replay(s, first, progress=False, batch_ticks=1000)
    job = start_job(s, "--no-load")  # the job runs apart; the loader runs here, beside the test's outage
    store = Store(s)
    store.migrate()
    loader = StoreLoader(s, store, batch_ms=200)
    stop = threading.Event()
    thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
    thread.start()
    # A second connection to the same store plays the operator: it stops merges and lowers the table's
    # part limit, so ClickHouse refuses every insert with TOO_MANY_PARTS, as an overloaded server does.
    operator = clickhouse_connect.get_client(dsn=s.store_dsn)
    table = f"`{s.clickhouse_database}`.rollups"
    try:
        wait_until(lambda: loader.loaded > 0, "the first rollups in ClickHouse", 180, job)
        operator.command(f"SYSTEM STOP MERGES {table}")
        operator.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 1")
        loaded_before = loader.loaded
        replay(s, second, progress=False, batch_ticks=1000)
        wait_until(lambda: loader.failed_inserts >= 3, "inserts to be refused", 180, job)
        assert loader.loaded == loaded_before, "the store was refusing writes"
        operator.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 3000")
        operator.command(f"SYSTEM START MERGES {table}")
        assert run_until(s, expected, job) == expected  # the job's own outputs were never affected
        rows = sum(expected["rollups"].values())
        wait_until(lambda: loader.loaded >= rows, f"the loader to catch up to {rows} rows", 120)
    finally:
        stop.set()
        thread.join(timeout=60)
        if job.poll() is None:
            job.kill()
        loader.close()
        operator.close()
    rows = store.query("rollups_for_symbols", symbol_prefix="")
    store.close()
    assert Counter(map(rollup_values, rows)) == expected["rollups"]  # every row once, none missing
