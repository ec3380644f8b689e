"""Loads closed rollups (`rollups` topic) and raw ticks (`tick-batches`, `ticks-late`) into ClickHouse:
ClickHouse's usual way in from Kafka. The raw ticks are the job's: every tick it read, parsed once there.

Reads with read_committed (only rows of completed Flink checkpoints), inserts a batch, then commits the
consumer offsets. A crash between insert and commit re-inserts rows that are already there; the table
folds identical rows (sql/migrations/001_rollups.sql, 002_ticks.sql), so a row is never doubled nor lost. While the store
is down or refuses writes, the topic buffers and the loader retries the same batch with backoff: a
batch is never skipped, and offsets are committed only after its insert.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Callable

import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from .config import Settings, package_data
from .kafka_io import BatchReader
from .operators.records import BATCH_SCHEMA, NOT_A_BATCH, decode_batch
from .operators.tick import Tick
from .store import TICK_SCHEMA, Store, StoreError, StoreLockedError

log = logging.getLogger(__name__)

_JSON_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64()}


def _record_schema(name: str) -> pa.Schema:
    """A topic's JSON records as Arrow reads them, from the record's one definition (schemas/)."""
    schema = json.loads((package_data("schemas") / f"{name}.schema.json").read_text())
    return pa.schema([(field, _JSON_TYPES[next(t for t in ([spec["type"]] if isinstance(spec["type"], str)
                                                           else spec["type"]) if t != "null")])
                      for field, spec in schema["properties"].items()])


ROLLUP_RECORD = _record_schema("rollup")


def record_tables(records, rollups_topic: str, tick_batches_topic: str) -> tuple[pa.Table, pa.Table]:
    """(rollups, raw ticks) of polled records, (topic, value, timestamp ms) of the rollups, tick-batches and
    late topics, as tables for the store, column by column: the job parsed the ticks (its tick-batches are
    Arrow batches of every tick it read), so nothing here is a Python object per tick but a late one. A
    record of tick-batches that is not such a batch was not written by the job: it is logged and skipped."""
    rollups, ticks, late_rows = [], [], []
    for topic, value, _ in records:
        if topic == rollups_topic:
            rollups.append(value)
        elif topic == tick_batches_topic:
            batch = _tick_batch(value)
            if batch is not None:
                n = batch.num_rows
                batch = batch.append_column("applied", pa.repeat(pa.scalar(1, pa.uint8()), n))
                ticks.append(batch.append_column("version", pa.repeat(pa.scalar(0, pa.uint8()), n))
                             .select(TICK_SCHEMA.names).cast(TICK_SCHEMA))
        else:  # a late tick: the job did not apply it; this row replaces its raw one
            late = orjson.loads(value)
            late_rows.append({**{f: late[f] for f in Tick._fields}, "applied": 0, "version": 1})
    ticks.append(pa.Table.from_pylist(late_rows, schema=TICK_SCHEMA))
    rollup_table = pa_json.read_json(
        io.BytesIO(b"\n".join(rollups)), read_options=pa_json.ReadOptions(block_size=1 << 24),
        parse_options=pa_json.ParseOptions(explicit_schema=ROLLUP_RECORD, unexpected_field_behavior="ignore")
    ) if rollups else ROLLUP_RECORD.empty_table()
    return rollup_table, pa.concat_tables(ticks)


def _tick_batch(value: bytes) -> pa.Table | None:
    """A tick-batches record's ticks, or None (logged) when it is not an Arrow batch of ticks."""
    try:
        table = decode_batch(value)
    except NOT_A_BATCH as exc:
        log.error("loader: skipped a record of the tick-batches topic that is not an Arrow batch (%s); only "
                  "the job writes that topic", str(exc)[:200])
        return None
    if not table.schema.equals(BATCH_SCHEMA):
        log.error("loader: skipped a record of the tick-batches topic whose columns are not a tick batch's (%s)",
                  ", ".join(f"{f.name} {f.type}" for f in table.schema)[:300])
        return None
    return table


class StoreLoader:
    def __init__(self, settings: Settings, store: Store, batch_records: int = 10_000, batch_bytes: int = 32 << 20,
                 batch_ms: int = 1000) -> None:
        self.settings = settings
        self.store = store
        # A batch is what comes within batch_ms, up to batch_records records or batch_bytes of them (a record of
        # tick-batches holds thousands of ticks, a rollup one).
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.batch_ms = batch_ms
        self.group_id = f"{settings.job_name}-loader"
        self.loaded = 0  # rollup rows
        self.ticks_loaded = 0
        self.failed_inserts = 0  # batches the store refused (each retried until it took them)
        self._pending: list = []  # records polled, not yet in the store
        self.reader = BatchReader(settings, [settings.topic(kind) for kind in ("rollups", "tick_batches", "late")],
                                  self.group_id)

    def close(self) -> None:
        self.reader.close()

    def _load_batch(self) -> int:
        """Insert the pending batch, or a new one; raises StoreError with the batch kept for the next try."""
        if not self._pending:
            deadline = time.monotonic() + self.batch_ms / 1000
            size = 0
            while len(self._pending) < self.batch_records and size < self.batch_bytes and time.monotonic() < deadline:
                polled = self.reader.poll(min(self.batch_records - len(self._pending), 1000), timeout_s=0.2)
                size += sum(len(value) for _, value, _ in polled)
                self._pending += polled
        rollups, ticks = record_tables(self._pending, self.settings.topic("rollups"),
                                       self.settings.topic("tick_batches"))
        try:
            self.store.insert_ticks(ticks)
            self.store.insert_rollups(rollups)
        except StoreError:
            self.failed_inserts += 1
            raise
        self.reader.commit()  # after the inserts: a crash in between re-inserts, which is harmless
        self._pending = []
        self.loaded += rollups.num_rows
        self.ticks_loaded += ticks.num_rows
        return rollups.num_rows + ticks.num_rows

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
        end = self.reader.end_offsets()
        deadline = time.monotonic() + timeout_s
        before = self.loaded
        while any(self.reader.positions()[tp] < offset for tp, offset in end.items() if offset > 0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the loader did not reach the end of its topics "
                                   f"within {timeout_s:.0f}s")
            self._load_with_backoff()
        return self.loaded - before

    def run(self, stop, after_batch: Callable[[], None] | None = None) -> None:
        """Load continuously until `stop` (a threading or multiprocessing Event) is set, for an unbounded
        job; after_batch is called after each batch."""
        while not stop.is_set():
            try:
                self._load_with_backoff(stop)
            except Exception:  # e.g. the broker away: keep going, the topic holds the rows
                log.exception("loader: reading from Kafka failed; retrying in 5 s")
                stop.wait(5)
            if after_batch:
                after_batch()


class LoaderProcess:
    """A StoreLoader in a process of its own, beside a job in this one (`stockmax run`). On the local
    mini-cluster the job's Python step runs in this process (loopback), and a loader thread here took a
    large share of its interpreter's time (one GIL for both). The process opens the store itself
    (the embedded engine allows one process per directory); a store that cannot be opened raises here, as
    StoreError, before the job starts. It stops when asked (stop()), or when this process is gone."""

    def __init__(self, settings: Settings, ready_timeout_s: float = 120.0) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: this process may hold a JVM and threads
        self._stop = context.Event()
        self._loaded = context.Value("q", 0)
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_loader_process_main, name="stockmax-loader",
                                       args=(settings, self._stop, self._loaded, send, os.getpid()))
        self.process.start()
        send.close()
        try:
            if not receive.poll(ready_timeout_s):
                self.stop()
                raise StoreError(f"the store loader did not start within {ready_timeout_s:.0f} s")
            failure = receive.recv()
        except EOFError:  # it died before it could say
            self.process.join(5)
            raise StoreError(f"the store loader process exited at start (exit code {self.process.exitcode})") \
                from None
        finally:
            receive.close()
        if failure:
            self.process.join(30)
            kind, message = failure
            raise (StoreLockedError if kind == "locked" else StoreError)(message)

    @property
    def loaded(self) -> int:
        """Rollup rows loaded so far."""
        return self._loaded.value

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the batch in hand (its offsets committed after its insert), then exit."""
        self._stop.set()
        self.process.join(timeout_s)
        if self.process.is_alive():  # a batch stuck on an unreachable store: the topic still holds it
            self.process.terminate()
            self.process.join(10)


def loader_unless_another(settings: Settings, say) -> LoaderProcess | None:
    """One loader per embedded store: a LoaderProcess, or None when another loader already holds the store
    (its process answers everyone's history questions, store_service.py; the caller leaves the loading to
    it). A store held by a process that is no loader is StoreLockedError, as before."""
    from .store_service import owner_address

    try:
        return LoaderProcess(settings)
    except StoreLockedError as exc:
        if owner_address(settings, wait_s=15) is None:
            raise
        say(f"{str(exc).split('. ')[0]}, which loads it and answers history questions: this process leaves the "
            f"loading to it (and takes it over if that process stops)")
        return None


def _loader_process_main(settings: Settings, stop, loaded, send, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when the loader stops (after its batch).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def watch_parent() -> None:  # killed parent (no stop() call): stop too, and let go of the store
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                stop.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    try:
        store = Store(settings)
    except StoreError as exc:
        send.send(("locked" if isinstance(exc, StoreLockedError) else "error", str(exc)))
        return
    try:
        store.migrate()
        loader = StoreLoader(settings, store)
    except Exception as exc:
        store.close()
        send.send(("error", f"the store loader could not start: {settings.scrub(str(exc).splitlines()[0][:300])}"))
        return
    from .store_service import QueryService  # (it imports history, which imports this package's store)

    queries = QueryService(store)  # the owner answers other processes' history questions
    send.send(None)
    send.close()
    try:

        def count() -> None:
            loaded.value = loader.loaded

        loader.run(stop, after_batch=count)
    finally:
        queries.close()
        loader.close()
        store.close()
