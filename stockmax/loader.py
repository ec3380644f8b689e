"""Loads closed rollups from the `rollups` topic into ClickHouse: ClickHouse's usual way in from Kafka.

Reads with read_committed (only rows of completed Flink checkpoints), inserts a batch, then commits the
consumer offsets. A crash between insert and commit re-inserts rows that are already there; the table
folds identical rows (sql/migrations/001_rollups.sql), so a row is never doubled nor lost. While the store
is down the topic buffers and the loader retries with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from .config import Settings
from .kafka_io import committed_reader
from .store import Store

log = logging.getLogger(__name__)


class RollupLoader:
    def __init__(self, settings: Settings, store: Store, batch_rows: int = 10_000, batch_ms: int = 1000) -> None:
        self.settings = settings
        self.store = store
        self.batch_rows = batch_rows
        self.batch_ms = batch_ms
        self.group_id = f"{settings.job_name}-rollup-loader"
        self.loaded = 0
        self.consumer, self.partitions = committed_reader(settings, settings.topic("rollups"), self.group_id)

    def close(self) -> None:
        self.consumer.close()

    def _load_batch(self) -> int:
        rows, deadline = [], time.monotonic() + self.batch_ms / 1000
        while len(rows) < self.batch_rows and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200, max_records=self.batch_rows - len(rows)).values():
                rows.extend(json.loads(r.value) for r in records)
        if rows:
            self.store.insert_rollups(rows)
        self.consumer.commit()  # after the insert: a crash in between re-inserts, which is harmless
        self.loaded += len(rows)
        return len(rows)

    def drain(self, timeout_s: float = 300.0) -> int:
        """Load everything committed up to the topic's end now; returns rows loaded."""
        end = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout_s
        before = self.loaded
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the rollup loader did not reach the end of {self.settings.topic('rollups')} "
                                   f"within {timeout_s:.0f}s")
            self._load_batch()
        return self.loaded - before

    def run(self, stop: threading.Event) -> None:
        """Load continuously until `stop` is set (for an unbounded job)."""
        while not stop.is_set():
            try:
                self._load_batch()
            except Exception:  # keep loading: the topic holds the rows until the store takes them
                log.exception("rollup loader: batch failed; retrying in 5 s")
                stop.wait(5)
