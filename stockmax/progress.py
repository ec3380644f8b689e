"""What a running job has done so far, read from Kafka, for `stockmax run` to show: a progress bar over the
ticks topic for a bounded run, a status line every few seconds for a live one.

Everything comes from the topics, not from Flink: the job commits its source offsets (consumer group = the
job name) at each completed checkpoint, together with the outputs before them, so "committed" here is what
read_committed readers can see. Alerts, dead letters, late and duplicate ticks are counted exactly, record
by record, since the reader started (they are few); the rate of max updates and rollups is read from
offsets, which include a transaction marker per partition and checkpoint: close, not exact.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple

import orjson
from kafka.errors import KafkaError

from . import kafka_io
from .config import Settings

OFFSET_KINDS = ("max_updates", "rollups")  # many records: counted by offsets
COUNTED_KINDS = ("alerts", "late", "duplicates", "dead")  # few: counted record by record


class Sample(NamedTuple):
    at: float  # time.monotonic()
    ticks_in_topic: int  # records in the ticks topic (every partition's end offset): a tick each, or a batch
    ticks_committed: int  # the job's committed offsets on it
    outputs: dict[str, int]  # per kind: OFFSET_KINDS their topics' committed end offsets, COUNTED_KINDS the
    # committed records since the reader started
    newest_event_time_us: int | None  # the newest event time among the last committed max updates


class JobProgress:
    """Samples of a job's progress from its topics. Its readers belong to no consumer group (a group member
    waits for its coordinator when it closes: for minutes when the broker has just come back); the job's
    committed offsets are asked of the admin API. kafka-python: nothing here outlives a close."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin = kafka_io.admin(settings)
        self._counter = kafka_io._committed_consumer(settings, None, client_id="stockmax-progress")
        self._reader = kafka_io._committed_consumer(settings, None, client_id="stockmax-progress")
        self._ticks = kafka_io._partitions(self._counter, settings.topic("ticks"))
        self._outputs = {kind: kafka_io._partitions(self._counter, settings.topic(kind)) for kind in OFFSET_KINDS}
        self._kinds = {settings.topic(kind): kind for kind in COUNTED_KINDS}
        self._counts = dict.fromkeys(COUNTED_KINDS, 0)
        counted = [tp for kind in COUNTED_KINDS for tp in kafka_io._partitions(self._counter, settings.topic(kind))]
        self._counter.assign(counted)
        for tp, end in self._counter.end_offsets(counted).items():  # count from now on
            self._counter.seek(tp, end)

    def _committed(self) -> int:
        """The job's committed offsets on the ticks topic, summed (its group's coordinator may need a moment
        on a new broker)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                offsets = self._admin.list_group_offsets(self.settings.job_name)
                break
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if offsets and isinstance(next(iter(offsets)), str):  # keyed by group in some kafka-python versions
            offsets = offsets.get(self.settings.job_name) or {}
        return sum(max(0, o.offset) for tp, o in (offsets or {}).items() if tp.topic == self._ticks[0].topic)

    def sample(self) -> Sample:
        committed = self._committed()
        while batches := self._counter.poll(timeout_ms=200, max_records=10_000):
            for tp, records in batches.items():
                self._counts[self._kinds[tp.topic]] += len(records)
        ends = self._counter.end_offsets(self._ticks + [tp for tps in self._outputs.values() for tp in tps])
        return Sample(time.monotonic(), sum(ends[tp] for tp in self._ticks), committed,
                      {**{kind: sum(ends[tp] for tp in tps) for kind, tps in self._outputs.items()}, **self._counts},
                      self._newest_event_time(ends))

    def _newest_event_time(self, ends: dict) -> int | None:
        """The newest event time among the last few committed max updates of each partition."""
        parts = [tp for tp in self._outputs["max_updates"] if ends[tp] > 0]
        if not parts:
            return None
        self._reader.assign(parts)
        for tp in parts:
            self._reader.seek(tp, max(0, ends[tp] - 8))
        newest = None
        for records in self._reader.poll(timeout_ms=500, max_records=8 * len(parts)).values():
            for record in records:
                event_time = orjson.loads(record.value).get("event_time")
                newest = event_time if newest is None else max(newest, event_time)
        return newest

    def close(self) -> None:
        for client in (self._counter, self._reader, self._admin):
            client.close()


def status_line(before: Sample, now: Sample, wall_clock_us: int) -> str:
    """One line of a live run's status, from two samples."""
    seconds = max(1e-6, now.at - before.at)
    rate_in = (now.ticks_in_topic - before.ticks_in_topic) / seconds
    lag = now.ticks_in_topic - now.ticks_committed
    lag_s = f" ({lag / rate_in:.1f} s of input)" if rate_in >= 1 else ""
    outputs = sum(now.outputs[k] - before.outputs[k] for k in ("max_updates", "alerts", "rollups")) / seconds
    return (f"records in {rate_in:,.0f}/s | not yet committed {lag:,}{lag_s} | outputs committed "
            f"~{outputs:,.0f}/s | alerts {now.outputs['alerts']:,} | {_behind(now.newest_event_time_us, wall_clock_us)}"
            f" | dead letters {now.outputs['dead']:,}, late {now.outputs['late']:,}, duplicates "
            f"{now.outputs['duplicates']:,}")


def _behind(event_time_us: int | None, wall_clock_us: int) -> str:
    if event_time_us is None:
        return "event time -"
    seconds = max(0.0, (wall_clock_us - event_time_us) / 1e6)
    text = f"{seconds:.1f} s" if seconds < 3600 else f"{seconds / 3600:,.1f} h"
    return f"event time {text} behind the clock"


class StatusReporter:
    """Says status_line every `every_s` seconds while a live job runs (a thread of its own)."""

    def __init__(self, settings: Settings, say: Callable[[str], None], every_s: float = 5.0) -> None:
        self.settings, self.say, self.every_s = settings, say, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockmax-status", daemon=True)

    def __enter__(self) -> "StatusReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # Not joined: a sample waiting on an unreachable broker must not hold up the job's stop.
        self._stop.set()

    def _run(self) -> None:
        try:
            progress = JobProgress(self.settings)
        except Exception as exc:  # a status line is a courtesy: never a reason for the job to fail
            self.say(f"status: not shown ({str(exc)[:200]})")
            return
        try:
            before = progress.sample()
            while not self._stop.wait(self.every_s):
                now = progress.sample()
                if self._stop.is_set():
                    break
                self.say(status_line(before, now, time.time_ns() // 1000))
                before = now
        except Exception as exc:
            self.say(f"status: stopped ({str(exc)[:200]})")
        finally:
            progress.close()


class BoundedProgress:
    """A progress bar over the ticks a bounded run has to take (those in the topic when it starts), moved by
    the job's committed offsets (at checkpoints)."""

    def __init__(self, settings: Settings, enabled: bool = True) -> None:
        self.settings, self.enabled = settings, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stockmax-progress", daemon=True)

    def __enter__(self) -> "BoundedProgress":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        from tqdm import tqdm

        try:
            progress = JobProgress(self.settings)
        except Exception:
            return
        try:
            start = progress.sample()
            total = start.ticks_in_topic - start.ticks_committed
            with tqdm(total=total, unit="record", desc="ticks records committed", unit_scale=True, mininterval=1) as bar:
                done = 0
                while not self._stop.wait(1.0):
                    now = progress.sample()
                    moved = min(total, now.ticks_committed - start.ticks_committed) - done
                    if moved > 0:
                        bar.update(moved)
                        done += moved
        except Exception:
            pass
        finally:
            progress.close()
