"""The stockmax job: ticks (Kafka) -> parse -> per symbol -> alerts, max updates, rollups (Kafka).

    ticks ──Kafka source──▶ ParseTicks ──key_by(partition)──▶ SymbolFunction ──split──▶ max-updates  key symbol|window
      event time = record      │   (a JSON tick or an        (MapState symbol →      ├──▶ alerts       key symbol
      timestamp, watermarks    │    Arrow batch per record)   SymbolProcessor,       ├──▶ rollups      key symbol
      per partition            │                              one timer per key;     ├──▶ ticks-late   key symbol
                               │                              a row of texts         └──▶ ticks-duplicate key symbol
                               │                              per call)
                               └─▶ ticks-dead (reason, partition, offset[, batch row])

Every output is written exactly once: Flink's KafkaSink with transactions committed at checkpoints, so
records become visible to read_committed readers when the checkpoint that covers them completes. The
five topics on the right share one sink (one transaction per checkpoint for all of them; each record
names its topic), the dead letters have their own. The sinks are declared through Flink's Kafka table
connector only because it can take the record key from a field (the DataStream wrapper in PyFlink
cannot); underneath it is the same exactly-once KafkaSink. The
source is the table connector's too, because it exposes each record's partition and offset (PyFlink's
DataStream KafkaSource only gives values), which dead letters carry; underneath it is the KafkaSource.
Rollups reach ClickHouse through the `rollups` topic and the loader (stockmax/loader.py). The split of
the Python step's outputs into records is a Java table function (jvm/, SplitOutputs), built by `make setup`.

The functions here are thin adapters: the rules live in stockmax.operators (no Flink import there).

Run locally through `stockmax run` (mini-cluster), or submit this file to a cluster:
    flink run -py jobs/pipeline.py -j <flink-sql-connector-kafka jar> [--bounded]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import shlex
import sys
import time
from pathlib import Path

import orjson
from pyflink.common import Configuration, Row, Types
from pyflink.datastream import DataStream, KeyedProcessFunction, OutputTag, ProcessFunction, StreamExecutionEnvironment
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink import java_gateway
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment, Table

from stockmax import class_archive
from stockmax import config as stockmax_config
from stockmax.config import FUNCTIONS_JAR, KAFKA_CONNECTOR_JAR, LOCAL_JVM_CLASS_ARCHIVE_DIR, Settings
from stockmax.operators.columnar import ROW_KINDS, ColumnBlock, advance_symbols, block_columns, output_line
from stockmax.operators.records import dead_letter, decode_group, pack_fields, pack_group, unpack_tick_fields
from stockmax.operators.schedule import DueSchedule
from stockmax.operators.symbol import Rules, SymbolProcessor, frontier_from_watermark_ms, watermark_ms_for_frontier
from stockmax.operators.tick import REASON_CODES, Tick, TickLimits

# Every output record is (key, value): both text, the value a JSON object.
RECORD = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
DEAD = OutputTag("dead", RECORD)
# The keyed function's outputs of one call, per kind one UTF-8 text: for max updates and rollups a JSON array
# of rows (each an array of the fields in ROW_KINDS, in order, as one orjson call writes them) and column blocks
# (operators.columnar.ColumnBlock: an array of the fields' columns), for the other kinds "key<TAB>JSON value"
# lines. One element crosses from Python to the JVM per call, as bytes, which PyFlink passes on at no cost per
# record (arrays of rows cost ~0.8 µs per record to encode, plus building the rows; a STRING is decoded on the
# JVM side by Flink's own per-character loop); SPLIT_OUTPUTS cuts them into (topic, key, value) records again,
# in the JVM, still as bytes: a row (or a block's row) becomes the JSON object of its fields (each value's text
# as orjson wrote it), keyed by its first fields joined with '|'. Neither part of a line can hold a tab or a
# line break: keys are symbols (the schema's pattern) and window names, and JSON escapes both inside strings.
OUTPUT_KINDS = ("max_updates", "alerts", "rollups", "late", "duplicates")
OUTPUTS = Types.ROW_NAMED(list(OUTPUT_KINDS), [Types.PRIMITIVE_ARRAY(Types.BYTE())] * len(OUTPUT_KINDS))
# jvm/src/main/java/dev/stockmax/flink/SplitOutputs.java and GroupRecords.java, in the jar FUNCTIONS_JAR.
SPLIT_OUTPUTS_CLASS = "dev.stockmax.flink.SplitOutputs"
GROUP_RECORDS_CLASS = "dev.stockmax.flink.GroupRecords"
# The worker holds every symbol's state as objects; a full collection walks all of them, and with the default
# thresholds it ran every few thousand allocations (~10 % of the time). The state has no reference cycles.
WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def _record(key: str | None, value: dict) -> Row:
    # orjson: the same compact JSON as json.dumps, ~10x faster (it was a quarter of the job's Python time).
    # Every number here is finite: the parser refuses non-finite prices and volumes.
    return Row(key, orjson.dumps(value).decode())


NO_TICKS = pack_fields([])
# Key groups of the keyed step: Flink's default up to parallelism 85, set explicitly so that the keys that
# partition_keys picks stay where they were picked for.
MAX_PARALLELISM = 128


def partition_keys(partitions: int, max_parallelism: int = MAX_PARALLELISM) -> tuple[int, ...]:
    """The keyed step's key for each ticks partition, picked so that with as many subtasks as partitions,
    partition p's key lands on subtask p (with fewer subtasks, each gets an even share of whole ranges).
    Flink hashes a key to a key group and gives each subtask a range of key groups; keys 0..n-1 land where
    the hash puts them: at parallelism 2, keys 0 and 1 both land on subtask 1, and one subtask would do all
    the work. Where a key lands is asked of Flink's own assignment, in the JVM."""
    assign = get_gateway().jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    subtasks = min(partitions, max_parallelism)
    keys: list[int] = []
    for partition in range(partitions):
        # The partition's own number first: the key it had before keys were picked, where that one lands
        # right (state in older checkpoints is under it).
        keys.append(next(key for key in itertools.chain([partition], itertools.count()) if key not in keys
                         and assign(key, max_parallelism, subtasks) == partition % subtasks))
    return tuple(keys)


class ParseTicks(ProcessFunction):
    """A partition's records, grouped in the JVM (GROUP_RECORDS: Row(partition, records)) -> (its partition's
    key, its ticks as pack_group makes them), an element per run of ticks: JSON ticks (one per record) or
    Arrow batches of them. Anything unusable goes to the dead-letter output with its reason, its original
    bytes and where it was read from. keys: partition_keys(); a partition beyond them (a topic grown under
    the job) is keyed by its number, which may share a key with another partition: harmless, the key then
    holds both partitions' symbols."""

    def __init__(self, source_topic: str, limits: TickLimits, keys: tuple[int, ...]) -> None:
        self.source_topic = source_topic
        self.limits = limits
        self.keys = keys
        self.dead_letters = None
        self.wake_keys = False

    def open(self, runtime_context) -> None:
        # One counter per reason (metric group reason=<code>), registered up front as PyFlink requires.
        group = runtime_context.get_metrics_group()
        self.dead_letters = {code: group.add_group("reason", code).counter("deadLetters") for code in REASON_CODES}
        self.records_in = group.counter("recordsIn")
        self.wake_keys = True

    def process_element(self, grouped: Row, ctx):
        if self.wake_keys:
            # Once per attempt, an empty batch to every partition key: a restored key sets its timer again
            # on its first call (SymbolFunction.open says why), and a partition whose input all came before
            # the checkpoint would otherwise never make that call, its buffered ticks held forever.
            self.wake_keys = False
            for key in self.keys:
                yield key, NO_TICKS
        partition = grouped[0]
        records = decode_group(grouped[1])
        self.records_in.inc(len(records.values))
        packed, refused = pack_group(records, self.limits)
        if refused:
            rejected_at = int(time.time() * 1_000_000)
            for index, item in refused:
                self.dead_letters[item.rejection.code].inc()
                key, value = dead_letter(item, self.source_topic, partition, records.offsets[index],
                                         records.timestamps_ms[index], rejected_at)
                yield DEAD, _record(key, value)
        key = self.keys[partition] if partition < len(self.keys) else partition
        for item in packed:
            yield key, item


class InjectedFailure(RuntimeError):
    """Raised on purpose (STOCKMAX_FAIL_AT_TICKS) to prove that the job recovers exactly once."""


class FailureInjector:
    """Fails once at each configured tick count of an attempt. A marker file per point remembers that it
    fired: Flink state would be restored to before the failure and make it fire again, forever."""

    def __init__(self, points: tuple[int, ...], marker_dir: str) -> None:
        self.points = set(points)
        self.marker_dir = marker_dir
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks in self.points:
            marker = os.path.join(self.marker_dir, f"failed-at-{self.ticks}")
            if not os.path.exists(marker):
                os.makedirs(self.marker_dir, exist_ok=True)
                open(marker, "w").close()
                raise InjectedFailure(f"injected failure at tick {self.ticks} (STOCKMAX_FAIL_AT_TICKS)")


class SymbolFunction(KeyedProcessFunction):
    """Keyed by the ticks topic's partition (a symbol's ticks all share one): a SymbolProcessor per symbol
    in a MapState, applied in event-time order as the watermark passes its ticks.

    Why not keyed by symbol: PyFlink commits each key's dirty state with a round trip at every bundle's end
    (~0.7 ms), and a timer per tick or per symbol makes bundles end often; with thousands of symbols that,
    not the work, set the pace. Keyed by partition, a bundle commits a handful of keys, a MapState entry is
    pickled once per bundle however often its symbol ticks, and one timer per key (at the earliest symbol's
    due point, DueSchedule) replaces a timer per tick."""

    def __init__(self, rules: Rules, failures: FailureInjector | None = None) -> None:
        self.rules = rules
        self.failures = failures
        self.processors = None
        self.schedule = None
        self.armed: dict[int, int] = {}

    def open(self, runtime_context) -> None:
        gc.set_threshold(*WORKER_GC_THRESHOLDS)
        # key -> the earliest timer this attempt has set and not yet seen fire. Deliberately not in Flink
        # state: PyFlink 2.0 hands a Python timer registration to the task's mailbox, which runs it after
        # the pre-checkpoint flush, so a checkpoint can hold the state a bundle wrote but not the timers it
        # set. After a restore each key sets its timer again on its first call (ParseTicks makes sure
        # every partition key gets one).
        self.armed = {}
        self.processors = runtime_context.get_map_state(
            MapStateDescriptor("symbols", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.schedule = runtime_context.get_state(ValueStateDescriptor("schedule", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group()
        self.late_ticks = metrics.counter("lateTicks")
        self.duplicate_ticks = metrics.counter("duplicateTicks")
        self.expired_symbols = metrics.counter("expiredSymbolStates")

    def process_element(self, batch, ctx):
        key, packed = batch
        ticks = unpack_tick_fields(packed)
        watermark = ctx.timer_service().current_watermark()
        frontier = frontier_from_watermark_ms(watermark)
        outputs = {kind: [] for kind in OUTPUT_KINDS}
        touched: dict[str, SymbolProcessor] = {}
        for tick in ticks:
            if self.failures:
                self.failures.tick()
            symbol = tick[0]
            processor = touched.get(symbol)
            if processor is None:
                processor = self.processors.get(symbol) or SymbolProcessor(self.rules.for_symbol(symbol))
                touched[symbol] = processor
            rejected = processor.accept(tick, frontier)
            if rejected:
                (self.late_ticks if rejected == "late" else self.duplicate_ticks).inc()
                outputs["late" if rejected == "late" else "duplicates"].append(output_line(
                    symbol.encode(), {**Tick._make(tick)._asdict(), "reason": rejected, "watermark_ms": watermark}))
        schedule = self.schedule.value() or DueSchedule()
        for symbol, processor in touched.items():
            due = processor.due_after_accepting(schedule.due(symbol))
            if due is None:  # only refused ticks: nothing to keep
                continue
            self.processors.put(symbol, processor)
            schedule.set(symbol, due)
        self._arm(key, schedule, ctx)
        yield from _emit(outputs)

    def on_timer(self, timestamp: int, ctx):
        key = ctx.get_current_key()
        if timestamp >= self.armed.get(key, timestamp + 1):  # the armed timer (not an older one) fired
            del self.armed[key]
        schedule = self.schedule.value()
        if schedule is None:
            return
        frontier = frontier_from_watermark_ms(max(timestamp, ctx.timer_service().current_watermark()))
        due = [(symbol, self.processors.get(symbol)) for symbol in schedule.pop_due(frontier)]
        # Every due symbol at once, column-wise (what each one's advance would give).
        outputs = {**advance_symbols(due, frontier)._asdict(), "late": [], "duplicates": []}
        for symbol, processor in due:
            if processor.expired(frontier):
                # Nothing kept can change an output any more: memory follows the active symbols.
                self.processors.remove(symbol)
                self.expired_symbols.inc()
            else:
                self.processors.put(symbol, processor)
                schedule.set(symbol, processor.next_due())
        self._arm(key, schedule, ctx)
        yield from _emit(outputs)

    def _arm(self, key: int, schedule: DueSchedule, ctx) -> None:
        """One timer per key, at the earliest due symbol (Flink fires it once the watermark gets there)."""
        earliest = schedule.earliest()
        if earliest is None:
            self.schedule.clear()
            return
        at = watermark_ms_for_frontier(earliest)
        if at < self.armed.get(key, at + 1):
            ctx.timer_service().register_event_time_timer(at)
            self.armed[key] = at
        self.schedule.update(schedule)


OUTPUTS_PER_ROW = 2000  # a watermark jump may release thousands of ticks at once: keep each row small


def _emit(outputs: dict[str, list]):
    """The outputs as rows of texts (UTF-8), at most OUTPUTS_PER_ROW records per text: the records of ROW_KINDS
    (rows and column blocks) as one JSON array, lines joined."""
    chunks = {kind: _chunks(records, OUTPUTS_PER_ROW) for kind, records in outputs.items()}
    for row in itertools.zip_longest(*(chunks[kind] for kind in OUTPUT_KINDS), fillvalue=[]):
        yield Row(*(_text(kind, records) for kind, records in zip(OUTPUT_KINDS, row)))


def _chunks(records: list, size: int) -> list[list]:
    """records in lists of at most `size` records each; a list of column blocks (max updates) is cut by the
    records the blocks hold, a block across two lists split in two."""
    if not records or not isinstance(records[0], ColumnBlock):
        return [records[start:start + size] for start in range(0, len(records), size)]
    chunks, chunk, room = [], [], size
    for block in records:
        start = 0
        while start < block.n:
            part = block if start == 0 and block.n <= room else block.slice(start, start + room)
            chunk.append(part)
            start += part.n
            room -= part.n
            if room == 0:
                chunks.append(chunk)
                chunk, room = [], size
    return chunks + [chunk] if chunk else chunks


def _text(kind: str, records: list) -> bytes:
    if kind in ROW_KINDS:
        return orjson.dumps(records, default=block_columns, option=orjson.OPT_SERIALIZE_NUMPY) if records else b""
    return b"\n".join(records)


def split_outputs_shapes() -> str:
    """SplitOutputs' shapes argument: per kind, '' for lines or 'KEY_FIELDS:field,field,...' for rows."""
    return ";".join(f"{ROW_KINDS[kind][0]}:{','.join(ROW_KINDS[kind][1])}" if kind in ROW_KINDS else ""
                    for kind in OUTPUT_KINDS)


def _kafka_options(settings: Settings, topic: str) -> dict[str, str]:
    """What every Kafka table of the job has: the topic, the brokers, the security settings."""
    return {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": settings.kafka_bootstrap,
            **settings.kafka_java_properties()}


def add_kafka_sink(t_env: StreamTableEnvironment, statements, settings: Settings, name: str, topics: list[str],
                   records: Table, field_type: str, discard: bool = False) -> None:
    """An exactly-once Kafka output taking the record key from field k and the value from field v, both of
    field_type (STRING or BYTES: the raw format writes either as is, a STRING as UTF-8). With several topics,
    records come with a first field, topic, naming the one each goes to.
    discard: a blackhole instead (the benchmark's job without its output cost)."""
    table = f"sink_{name}"
    topic_column = "" if len(topics) == 1 else "topic STRING, " if discard else "topic STRING METADATA, "
    columns = f"{topic_column}k {field_type}, v {field_type}"
    if discard:
        t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} ({columns}) WITH ('connector' = 'blackhole')")
        statements.add_insert(table, records)
        return
    options = {
        **_kafka_options(settings, ";".join(topics)),
        "key.format": "raw", "key.fields": "k",
        "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{settings.job_name}-{settings.topic_prefix}{name}",
        "properties.transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
        "properties.batch.size": str(settings.kafka_batch_bytes),
        "properties.linger.ms": str(settings.kafka_linger_ms),
        "properties.compression.type": settings.kafka_compression,
    }
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} ({columns}) WITH ({_sql_options(options)})")
    statements.add_insert(table, records)


def _source_table(t_env: StreamTableEnvironment, settings: Settings, bounded: bool) -> str:
    """The ticks topic as a table: value bytes, partition, offset, and the record timestamp as event time.

    Event time is the Kafka record timestamp (ms), and the WATERMARK is pushed into the Kafka source, which
    makes watermarks per partition: one reader interleaves partitions in large batches, so a watermark
    made after the merge would run ahead of the slower partition and make its ticks late. ParseTicks
    checks each tick's own event time against its record timestamp. (Timestamps and watermarks stay in
    the JVM, off the Python path.)"""
    # group-offsets: resume where this job name left off when started without a checkpoint; a restore
    # from a checkpoint or savepoint takes the offsets in it.
    options = {
        **_kafka_options(settings, settings.topic("ticks")),
        "properties.group.id": settings.job_name,
        "properties.isolation.level": "read_committed",
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "group-offsets",
        "value.format": "raw",
        # a partition silent this long stops holding back the watermark
        "scan.watermark.idle-timeout": f"{settings.source_idleness_ms} ms",
    }
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"  # the end of each partition when the job starts
    # The watermark is the maximum of the expression below. DataStream's bounded out-of-orderness (what the
    # operators' frontier assumes) emits max - bound - 1; a SQL expression emits itself: hence bound + 1 ms.
    # A record stamped further ahead than the parser allows (max_future_skew_ms) goes to the dead letters;
    # it must not drag its partition's watermark into the future and make every later tick late, so it
    # counts as the epoch.
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE ticks_source (
          `value` BYTES,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `event_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
          WATERMARK FOR `event_ts` AS CASE
            WHEN `event_ts` <= CURRENT_TIMESTAMP + {_sql_interval(settings.max_future_skew_ms)}
            THEN `event_ts` - {_sql_interval(settings.watermark_bound_ms + 1)}
            ELSE TO_TIMESTAMP_LTZ(0, 3) END
        ) WITH ({_sql_options(options)})""")
    return "ticks_source"


def _sql_interval(ms: int) -> str:
    """A SQL interval literal of ms milliseconds (up to 99 days)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def _sql_literal(text) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _sql_options(options: dict[str, str]) -> str:
    return ", ".join(f"{_sql_literal(k)} = {_sql_literal(v)}" for k, v in options.items())


def group_records(raw: DataStream, settings: Settings) -> DataStream:
    """The source's records, a partition's gathered into one element in the JVM (GroupRecords says how event
    time and checkpoints stay exact): one crossing into Python per group instead of per record."""
    group_class = getattr(get_gateway().jvm, GROUP_RECORDS_CLASS)
    operator = group_class(settings.group_max_records, settings.group_max_bytes)
    return DataStream(raw._j_data_stream.transform("group records per partition", group_class.outputType(), operator)
                      .uid("group-records"))


def build(env: StreamExecutionEnvironment, settings: Settings, bounded: bool, discard_outputs: bool = False) -> None:
    """Add the stockmax pipeline to an environment. discard_outputs: every output goes to a blackhole
    (bench/throughput.py measures the job without its sinks)."""
    # Shipped with the job (locally and to a cluster), and loaded here for the planner.
    env.add_jars(settings.flink_jar(FUNCTIONS_JAR).resolve().as_uri())
    t_env = StreamTableEnvironment.create(env)
    t_env.create_java_temporary_function("split_outputs", SPLIT_OUTPUTS_CLASS)
    # The rowtime column stays in the projection: without it, records would carry no timestamp while
    # watermarks still flowed, and every tick would look late.
    raw = t_env.to_data_stream(t_env.from_path(_source_table(t_env, settings, bounded)))
    # Stable uids: a restarted job maps its checkpointed state (keyed state, the sinks' transactions) back
    # onto these operators.
    grouped = group_records(raw, settings)
    parsed = (grouped.process(ParseTicks(settings.topic("ticks"), settings.tick_limits(),
                                         partition_keys(settings.topic_partitions)))
              .name("parse ticks").uid("parse-ticks"))
    failures = None
    if settings.failure_points():
        failures = FailureInjector(settings.failure_points(), str(settings.data_dir / "injected-failures"))
    outputs = (parsed.key_by(lambda batch: batch[0], key_type=Types.INT())
               .process(SymbolFunction(settings.rules(), failures), output_type=OUTPUTS)
               .name("sliding max/min, rules, rollups").uid("symbol-state")
               .set_max_parallelism(MAX_PARALLELISM))
    t_env.create_temporary_view("outputs", t_env.from_data_stream(outputs))

    statements = t_env.create_statement_set()
    # All five kinds through one sink, each record to its kind's topic: one transactional producer instead
    # of five, so one transaction per checkpoint to start and commit, not five (and a checkpoint makes
    # alerts and the max updates behind them visible together). One call splits all five texts (see
    # SplitOutputs for why), so the sink runs in the keyed step's task.
    topics = [settings.topic(kind) for kind in OUTPUT_KINDS]
    records = t_env.sql_query(
        f"SELECT r.topic, r.k, r.v FROM outputs, LATERAL TABLE(split_outputs({_sql_literal(';'.join(topics))}, "
        f"{_sql_literal(split_outputs_shapes())}, "
        f"{', '.join(f'outputs.{kind}' for kind in OUTPUT_KINDS)})) AS r(topic, k, v)")
    add_kafka_sink(t_env, statements, settings, "outputs", topics, records, "BYTES", discard_outputs)
    add_kafka_sink(t_env, statements, settings, "dead", [settings.topic("dead")],
                   t_env.from_data_stream(parsed.get_side_output(DEAD)), "STRING", discard_outputs)
    statements.attach_as_datastream()


def restart_strategy(settings: Settings) -> dict[str, str]:
    if settings.restart_attempts == 0:
        return {"restart-strategy.type": "none"}
    return {
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "60 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(settings.restart_attempts),
    }


@contextlib.contextmanager
def _jvm_start_environment(**values: str):
    """Environment variables that PyFlink reads when it starts its JVM, at the first Configuration() of the
    process (no effect later). The user's own values win. They are set only around that start: left set,
    they would pass on to processes this one starts later (another job, with its own data dir)."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def python_boot_launcher(settings: Settings) -> Path:
    """What the local JVM runs as `python.executable` in loopback mode: jobs/loopback_boot.py instead of
    PyFlink's beam_boot (the same request to this process's worker pool, without beam_boot's ~1 s import
    of Apache Beam on the job's start-up), and this venv's interpreter for anything else."""
    python = shlex.quote(sys.executable)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    launcher = settings.data_dir / "python-boot.sh"
    launcher.write_text(f"""#!/bin/sh
# Written by stockmax (jobs/pipeline.py, python_boot_launcher) for the local mini-cluster.
if [ "$1" = "-m" ] && [ "$2" = "pyflink.fn_execution.beam.beam_boot" ] && [ -n "$PYTHON_LOOPBACK_SERVER_ADDRESS" ]; then
  shift 2
  exec {python} -m stockmax.jobs.loopback_boot "$@"
fi
exec {python} "$@"
""")
    launcher.chmod(0o755)
    return launcher


def local_configuration(settings: Settings, restore_from: str | None = None) -> Configuration:
    """The mini-cluster's settings; on a real cluster flink-conf/config.yaml holds the same ones.
    restore_from: a retained checkpoint or savepoint to start from."""
    connector = settings.flink_jar(KAFKA_CONNECTOR_JAR)
    # Read by PyFlink when the environment is made (StreamExecutionEnvironment._open): a worker process per
    # Python step, or, unset, PyFlink's local default, threads of this process (settings.python_workers says
    # why). Left unset for loopback: the variable outlives this call, and "loopback" inherited by a later
    # `flink run` against a cluster would make PyFlink refuse that job.
    if settings.python_workers == "process":
        os.environ["_python_worker_execution_mode"] = "process"
        python = sys.executable
    else:
        os.environ.pop("_python_worker_execution_mode", None)
        python = str(python_boot_launcher(settings).resolve())
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The heap and the garbage collector (Settings.local_jvm_options); and the mini-cluster's log with the
    # job's data, not in the venv's pyflink/log, where every run on the machine overwrote the one before.
    jvm_options = settings.local_jvm_options()
    if settings.local_jvm_class_archive and "JVM_ARGS" not in os.environ and java_gateway._gateway is None:
        # This call starts the JVM: it maps the classes an earlier job loaded (stockmax/class_archive.py).
        jvm_options += " " + class_archive.options(LOCAL_JVM_CLASS_ARCHIVE_DIR)
    with _jvm_start_environment(JVM_ARGS=jvm_options, FLINK_LOG_DIR=str(log_dir.resolve())):
        conf = Configuration()
    for key, value in {
        "pipeline.jars": connector.resolve().as_uri(),
        "python.executable": python,  # the worker must run this venv's Python, not PATH's
        "python.client.executable": sys.executable,
        "parallelism.default": str(settings.parallelism),
        # Operators chained in the JVM hand records on without a defensive copy (the keyed step's rows go
        # through the split to the sink in one task; nothing here keeps a record after passing it on).
        "pipeline.object-reuse": "true",
        "python.fn-execution.bundle.size": str(settings.python_bundle_size),
        "python.fn-execution.bundle.time": str(settings.python_bundle_time_ms),
        "pipeline.auto-watermark-interval": f"{settings.watermark_interval_ms} ms",
        # Every symbol of a partition stays in the worker's state cache (as objects, not pickles): reads
        # never wait on the JVM, and writes go out once per bundle.
        "python.map-state.read-cache-size": "1000000",
        "python.map-state.write-cache-size": "1000000",
        "execution.checkpointing.interval": f"{settings.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": settings.checkpoint_dir.resolve().as_uri(),
        # Kept when the job is cancelled or its process dies, so that `stockmax run` can resume from it.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        **restart_strategy(settings),
        "rest.bind-address": "127.0.0.1",
    }.items():
        conf.set_string(key, value)
    if restore_from:
        conf.set_string("execution.state-recovery.path", restore_from)
    return conf


def main(argv: list[str] | None = None) -> None:
    """Entry point for `flink run -py jobs/pipeline.py`; the cluster's configuration applies."""
    parser = argparse.ArgumentParser(description="stockmax job (settings from stockmax.toml / STOCKMAX_*)")
    parser.add_argument("--bounded", action="store_true", help="stop at the end of what is in the topic now")
    args = parser.parse_args(argv)
    settings = stockmax_config.load()
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    build(env, settings, bounded=args.bounded)
    env.execute(settings.job_name)


if __name__ == "__main__":
    main()
