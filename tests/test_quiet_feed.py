"""A live feed that goes quiet: ticks stamped with the wall clock, then silence. Every output of the last
ticks is committed without any later tick (Settings.quiet_feed_lag_ms; GroupRecords moves the watermark)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from running_job import (CONVERGE_S, expected_outputs, isolated, kafka_outputs, newest_checkpoint, run_until, start_job,
                         wait_until)
from stockmax import kafka_io, sample
from stockmax.progress import JobProgress
from stockmax.replay import tick_record

pytestmark = pytest.mark.e2e


def test_a_live_feed_that_goes_quiet_gets_every_output_without_a_later_tick(settings, tmp_path):
    s = isolated(settings, tmp_path, "quiet", windows="1s,10s", rollup_resolutions="1s", dedup_horizon_ms=5000,
                 source_idleness_ms=1000, watermark_bound_ms=500, restart_attempts=0)
    assert s.quiet_feed_lag_ms > 0  # on by default
    kafka_io.create_topics(s)
    job = start_job(s, "--no-load", "--no-progress")
    try:
        deadline = time.monotonic() + 180
        while newest_checkpoint(s) < 0:  # running, and nothing read yet: no watermark to move
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        # 10 s of a live feed, its last tick stamped now, published now: then nothing more.
        start = datetime.fromtimestamp(time.time() - 10.5, tz=timezone.utc)
        data = sample.generate(symbols=4, duration_s=10, ticks_per_second=20, spikes_per_symbol=2, seed=5,
                               start=start).to_pylist()
        expected = expected_outputs(s, data)
        assert expected["alerts"] and max(t["event_time"] for t in data) <= time.time() * 1e6
        producer = kafka_io.producer(s)
        for tick in data:
            key, value, timestamp_ms = tick_record(tick)
            producer.send(s.topic("ticks"), key=key, value=value, timestamp_ms=timestamp_ms)
        producer.flush()
        producer.close()
        # Wait until the job has read and checkpointed every tick (its committed source offsets reach the
        # topic's end: every tick went through the Python step before that checkpoint's barrier). How long
        # that takes is the machine's business; from then on only the rule can release the rest.
        progress = JobProgress(s)
        try:
            wait_until(lambda: (now := progress.sample()).ticks_committed >= now.ticks_in_topic,
                       "every tick read and checkpointed (the job's committed offsets at the topic's end)", CONVERGE_S, job)
        finally:
            progress.close()
        read_at = time.monotonic()
        # Due: the idleness timeout, the bound, a check (at most every second), two checkpoints to commit;
        # and room for a loaded 2-core machine. Without the rule nothing after the last watermark (the last
        # half second of ticks, their open buckets) would ever come.
        due_s = (s.source_idleness_ms + s.watermark_bound_ms + 1000 + 2 * s.checkpoint_interval_ms) / 1000 + 10
        sizes = {k: sum(v.values()) for k, v in expected.items() if not isinstance(v, int)}
        while not all(sum(kafka_outputs(s)[k].values()) >= n for k, n in sizes.items()):
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() - read_at < due_s, \
                f"not every output within {due_s:.1f} s of the last tick read: { {k: sum(v.values()) for k, v in kafka_outputs(s).items() if k in sizes} } of {sizes}"
            time.sleep(0.2)
    except BaseException:
        if job.poll() is None:
            job.kill()
        raise
    assert run_until(s, expected, job) == expected
