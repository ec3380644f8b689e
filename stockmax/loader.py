"""Loads closed rollups (`rollups` topic) and raw ticks (`ticks`, `ticks-late`) into ClickHouse: ClickHouse's
usual way in from Kafka.

Reads with read_committed (only rows of completed Flink checkpoints), inserts a batch, then commits the
consumer offsets. A crash between insert and commit re-inserts rows that are already there; the table
folds identical rows (sql/migrations/001_rollups.sql, 002_ticks.sql), so a row is never doubled nor lost. While the store
is down or refuses writes, the topic buffers and the loader retries the same batch with backoff: a
batch is never skipped, and offsets are committed only after its insert.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson

from .config import Settings
from .kafka_io import committed_reader
from .operators.records import decode_record
from .operators.tick import Tick
from .store import Store, StoreError

log = logging.getLogger(__name__)


class StoreLoader:
    def __init__(self, settings: Settings, store: Store, batch_rows: int = 10_000, batch_ms: int = 1000) -> None:
        self.settings = settings
        self.store = store
        self.batch_rows = batch_rows
        self.batch_ms = batch_ms
        self.group_id = f"{settings.job_name}-loader"
        self.limits = settings.tick_limits()
        self.loaded = 0  # rollup rows
        self.ticks_loaded = 0
        self.failed_inserts = 0  # batches the store refused (each retried until it took them)
        self._pending: list = []  # records polled, not yet in the store
        self.consumer, self.partitions = committed_reader(
            settings, [settings.topic(kind) for kind in ("rollups", "ticks", "late")], self.group_id)

    def _rows(self, records) -> tuple[list[dict], list[dict]]:
        """(rollup rows, raw tick rows) of polled records."""
        rollups, ticks = [], []
        rollups_topic, ticks_topic = self.settings.topic("rollups"), self.settings.topic("ticks")
        for r in records:
            if r.topic == rollups_topic:
                rollups.append(orjson.loads(r.value))
            elif r.topic == ticks_topic:
                # one tick or a batch; what the job refused is not a tick here either
                for tick in decode_record(r.value, r.timestamp, self.limits)[0]:
                    ticks.append(dict(zip(Tick._fields, tick), applied=1, version=0))
            else:  # a late tick: the job did not apply it; this row replaces its raw one
                late = orjson.loads(r.value)
                ticks.append({**{f: late[f] for f in Tick._fields}, "applied": 0, "version": 1})
        return rollups, ticks

    def close(self) -> None:
        self.consumer.close()

    def _load_batch(self) -> int:
        """Insert the pending batch, or a new one; raises StoreError with the batch kept for the next try."""
        if not self._pending:
            deadline = time.monotonic() + self.batch_ms / 1000
            while len(self._pending) < self.batch_rows and time.monotonic() < deadline:
                for records in self.consumer.poll(timeout_ms=200,
                                                  max_records=self.batch_rows - len(self._pending)).values():
                    self._pending.extend(records)
        rollups, ticks = self._rows(self._pending)
        try:
            self.store.insert_ticks(ticks)
            self.store.insert_rollups(rollups)
        except StoreError:
            self.failed_inserts += 1
            raise
        self.consumer.commit()  # after the inserts: a crash in between re-inserts, which is harmless
        self._pending = []
        self.loaded += len(rollups)
        self.ticks_loaded += len(ticks)
        return len(rollups) + len(ticks)

    def _load_with_backoff(self, stop: threading.Event | None = None) -> int:
        """One batch, retried while the store refuses it: 0.5 s, doubling up to 30 s."""
        delay = 0.5
        while True:
            try:
                loaded = self._load_batch()
                if delay > 0.5:
                    log.warning("loader: the store takes rows again")
                return loaded
            except StoreError as exc:
                log.warning("loader: %d records wait for the store (%s); retrying in %.1f s",
                            len(self._pending), str(exc).splitlines()[0][:300], delay)
                if (stop or threading.Event()).wait(delay):  # stop set meanwhile: the batch stays pending
                    return 0
                delay = min(delay * 2, 30.0)

    def drain(self, timeout_s: float = 300.0) -> int:
        """Load everything committed up to the topic's end now; returns rows loaded."""
        end = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout_s
        before = self.loaded
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the loader did not reach the end of its topics "
                                   f"within {timeout_s:.0f}s")
            self._load_with_backoff()
        return self.loaded - before

    def run(self, stop: threading.Event) -> None:
        """Load continuously until `stop` is set (for an unbounded job)."""
        while not stop.is_set():
            try:
                self._load_with_backoff(stop)
            except Exception:  # e.g. the broker away: keep going, the topic holds the rows
                log.exception("loader: reading from Kafka failed; retrying in 5 s")
                stop.wait(5)
