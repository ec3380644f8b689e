"""A live feed that goes quiet: ticks stamped by the wall clock (here a feed handler's clock 3 s behind the
job's), then silence. Every output of the last ticks is committed without any later tick (the quiet-feed
rule: Settings.quiet_after_ms; GroupRecords moves the watermark), and the ticks that come after the pause,
as far behind the clock as the ones before, are not late."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from running_job import CommittedCounts, expected_outputs, isolated, newest_checkpoint, run_until, start_job
from stockmax import kafka_io, sample
from stockmax.replay import tick_record

pytestmark = pytest.mark.e2e

FEED_BEHIND_S = 3.0  # the feed handler stamps its ticks this far behind the job's clock: more than the bound


def publish(s, ticks: list[dict]) -> None:
    producer = kafka_io.producer(s)
    for tick in ticks:
        key, value, timestamp_ms = tick_record(tick)
        producer.send(s.topic("ticks"), key=key, value=value, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def test_a_live_feed_that_goes_quiet_gets_every_output_without_a_later_tick(settings, tmp_path):
    # A bound of 1 s: the ticks after the pause may come up to that much later than the ones before did
    # (Kafka's and the machine's jitter), and are then still on time.
    # One partition: the record stamped ahead below shares it with every tick (the rule follows the laggiest
    # partition, so a second partition's ticks would hide what that record does to its own).
    s = isolated(settings, tmp_path, "quiet", windows="1s,10s", rollup_resolutions="1s", dedup_horizon_ms=5000,
                 watermark_bound_ms=1000, quiet_after_ms=1000, restart_attempts=0, topic_partitions=1)
    assert s.quiet_feed_lag_ms > FEED_BEHIND_S * 1000  # on by default, for a feed this far behind
    kafka_io.create_topics(s)
    job = start_job(s, "--no-load", "--no-progress")
    try:
        deadline = time.monotonic() + 180
        while newest_checkpoint(s) < 0:  # running, and nothing read yet: no watermark to move
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        # 10 s of a feed, its newest tick stamped 3 s ago, all published now: then nothing more.
        start = datetime.fromtimestamp(time.time() - FEED_BEHIND_S - 10, tz=timezone.utc)
        first = sample.generate(symbols=4, duration_s=10, ticks_per_second=20, spikes_per_symbol=2, seed=5, start=start,
                                max_delay_ms=sample.delay_within(s.watermark_bound_ms)).to_pylist()
        expected = expected_outputs(s, first)
        assert expected["alerts"] and expected["rollups"]
        # And a record stamped an hour ahead (a feed handler's broken clock): refused (a dead letter), it must
        # not drag the quiet feed's event time an hour ahead and make every later tick late.
        ahead = {**first[-1], "seq": 2_000_000, "event_time": int((time.time() + 3600) * 1e6)}
        assert ahead["event_time"] > (time.time() * 1000 + s.max_future_skew_ms) * 1000
        publish(s, first + [ahead])
        published_at = time.monotonic()
        # Due after the last publish: the rule's own time, after the last 1 s rollup bucket's end; and room for
        # a loaded 2-core machine. Without the rule nothing after the last watermark (the last second of
        # ticks, their buckets) would ever come.
        due_s = (1000 + s.quiet_flush_ms()) / 1000 + 10
        sizes = {k: sum(v.values()) for k, v in expected.items() if not isinstance(v, int)}
        with CommittedCounts(s, tuple(sizes)) as counts:
            while not all(n >= sizes[k] for k, n in counts.poll().items()):
                assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
                assert time.monotonic() - published_at < due_s, \
                    f"not every output within {due_s:.1f} s of the last tick published: {counts.poll()} of {sizes}"
                time.sleep(0.2)
        # After the pause the feed goes on, its ticks as far behind the clock as before (within a tenth of a
        # second, published at once): the watermark moved on as those ticks would have, so none is late.
        # (Moved to the clock itself, every one of them would be.)
        start = datetime.fromtimestamp(time.time() - FEED_BEHIND_S - 0.1, tz=timezone.utc)
        then = [{**tick, "seq": tick["seq"] + 1_000_000}  # not repeats of the first ticks' (symbol, exchange, seq)
                for tick in sample.generate(symbols=4, duration_s=0.1, ticks_per_second=50, spikes_per_symbol=0, seed=6,
                                            start=start, out_of_order_share=0).to_pylist()]
        assert then and min(t["event_time"] for t in then) > max(t["event_time"] for t in first)
        publish(s, then)
        expected = expected_outputs(s, first + then)
    except BaseException:
        if job.poll() is None:
            job.kill()
        raise
    assert run_until(s, expected, job) == expected
    assert [d["reason"] for d in kafka_io.read_committed_json(s, "dead")] == ["event_time_in_future"]
