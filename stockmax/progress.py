"""What a running job has done so far, read from Kafka, for `stockmax run` to show: a progress bar over the
ticks topic for a bounded run, a status line every few seconds for a live one.

Everything comes from the topics, not from Flink: the job commits its source offsets (consumer group = the
job name) at each completed checkpoint, together with the outputs before them, so "committed" here is what
read_committed readers can see. Output topics are counted by offsets, which include a transaction marker
per partition and checkpoint: counts of records are close, not exact.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple

import confluent_kafka
import orjson

from . import kafka_io
from .config import Settings

OUTPUT_KINDS = ("max_updates", "alerts", "rollups", "late", "duplicates", "dead")


class Sample(NamedTuple):
    at: float  # time.monotonic()
    ticks_in_topic: int  # records in the ticks topic (every partition's end offset): a tick each, or a batch
    ticks_committed: int  # the job's committed offsets on it
    outputs: dict[str, int]  # per kind, the committed end offsets of its topic
    newest_event_time_us: int | None  # the newest event time among the last committed max updates


class JobProgress:
    """Samples of a job's progress from its topics (one reader; it never joins the job's group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = confluent_kafka.Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.job_name,
            "client.id": "stockmax-progress", "isolation.level": "read_committed", "enable.auto.commit": False,
            **settings.kafka_librdkafka_options()})
        self._ticks = self._partitions(settings.topic("ticks"))
        self._outputs = {kind: self._partitions(settings.topic(kind)) for kind in OUTPUT_KINDS}

    def _partitions(self, topic: str) -> list[confluent_kafka.TopicPartition]:
        found = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        ids = sorted(found.partitions) if found is not None and found.partitions else []
        return [confluent_kafka.TopicPartition(topic, p) for p in ids]

    def _end(self, tp) -> int:
        return kafka_io._retrying(lambda: self._consumer.get_watermark_offsets(tp, timeout=5, cached=False))[1]

    def sample(self) -> Sample:
        committed = kafka_io._retrying(lambda: self._consumer.committed(self._ticks, timeout=5))
        return Sample(time.monotonic(), sum(map(self._end, self._ticks)), sum(max(0, tp.offset) for tp in committed),
                      {kind: sum(map(self._end, tps)) for kind, tps in self._outputs.items()},
                      self._newest_event_time())

    def _newest_event_time(self) -> int | None:
        """The newest event time among the last few committed max updates of each partition."""
        starts = []
        for tp in self._outputs["max_updates"]:
            end = self._end(tp)
            if end > 0:
                starts.append(confluent_kafka.TopicPartition(tp.topic, tp.partition, max(0, end - 8)))
        if not starts:
            return None
        self._consumer.assign(starts)
        newest = None
        try:
            for message in self._consumer.consume(num_messages=8 * len(starts), timeout=0.5):
                if message.error() is None:
                    event_time = orjson.loads(message.value()).get("event_time")
                    newest = event_time if newest is None else max(newest, event_time)
        finally:
            self._consumer.unassign()
        return newest

    def close(self) -> None:
        self._consumer.close()


def status_line(before: Sample, now: Sample, wall_clock_us: int) -> str:
    """One line of a live run's status, from two samples."""
    seconds = max(1e-6, now.at - before.at)
    rate_in = (now.ticks_in_topic - before.ticks_in_topic) / seconds
    lag = now.ticks_in_topic - now.ticks_committed
    lag_s = f" ({lag / rate_in:.1f} s of input)" if rate_in >= 1 else ""
    outputs = sum(now.outputs[k] - before.outputs[k] for k in ("max_updates", "alerts", "rollups")) / seconds
    behind = ("event time -" if now.newest_event_time_us is None
              else f"event time {max(0.0, (wall_clock_us - now.newest_event_time_us) / 1e6):.1f} s behind the clock")
    return (f"records in {rate_in:,.0f}/s | not yet committed {lag:,}{lag_s} | outputs committed "
            f"{outputs:,.0f}/s | alerts {now.outputs['alerts']:,} | {behind} | dead letters "
            f"{now.outputs['dead']:,}, late {now.outputs['late']:,}, duplicates {now.outputs['duplicates']:,}")


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
