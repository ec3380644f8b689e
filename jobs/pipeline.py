"""The stockmax job, as a dataflow: ticks (Kafka) -> group -> parse -> per symbol -> outputs (Kafka).

    ticks ─Kafka source─▶ GroupRecords ─key by partition─▶ SymbolFunction ─split─▶ max-updates  key symbol|window
     event time = record   (JVM: a partition's records   (parse JSON ticks or  ├─▶ alerts       key symbol
     timestamp, watermarks  as one element, keyed there)  Arrow batches;       ├─▶ rollups      key symbol
     per partition                                        MapState symbol →    ├─▶ ticks-late   key symbol
                                                          SymbolProcessor, one ├─▶ ticks-duplicate key symbol
                                                          timer per key)       ├─▶ tick-batches key partition
                                                                               │   (every tick read, as Arrow
                                                                               │   batches: raw ticks, loader)
                                                                               └─▶ ticks-dead (reason, partition,
                                                                                    offset[, batch row])

Every output is written exactly once: Flink's KafkaSink with transactions committed at checkpoints, so
records become visible to read_committed readers when the checkpoint that covers them completes. The six
topics on the right share one sink (one transaction per checkpoint for all of them; each record names its
topic), the dead letters have their own (jobs/kafka_tables.py declares the source and the sinks). Rollups
and raw ticks reach ClickHouse through the `rollups` and `tick-batches` topics and the loader
(stockmax/loader.py). GroupRecords and the split
of the Python step's outputs into records (operators/wire.py, the format) are Java (jvm/), built by
`make setup`.

The functions here are thin adapters: the rules live in stockmax.operators (no Flink import there).

Run locally through `stockmax run` (mini-cluster), or on a cluster through `stockmax submit`, which runs
    flink run -py jobs/pipeline.py -j <flink-sql-connector-kafka jar> [--bounded]
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, KeyedProcessFunction, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from stockmax import config as stockmax_config
from stockmax.config import FUNCTIONS_JAR, Settings
from stockmax.failures import FailureInjector
from stockmax.flink_env import configuration, job_options
from stockmax.jobs.kafka_tables import add_kafka_sink, source_table, sql_literal
from stockmax.jobs.keys import MAX_PARALLELISM, partition_keys
from stockmax.operators.columnar import advance_symbols
from stockmax.operators.records import dead_letter, decode_group, group_ticks, tick_batch_records
from stockmax.operators.stored import KeySymbols, StoredSymbolProcessor
from stockmax.operators.symbol import Rules, SymbolProcessor, frontier_from_watermark_ms, watermark_ms_for_frontier
from stockmax.operators.tick import REASON_CODES, Tick, TickLimits
from stockmax.operators.wire import OUTPUT_KINDS, encode_outputs, output_line, split_outputs_shapes

# Every output record is (key, value): both text, the value a JSON object.
RECORD = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
DEAD = OutputTag("dead", RECORD)
# A partition's records as GroupRecords emits them, after their key: (partition, records).
GROUP = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
OUTPUTS = Types.ROW_NAMED(list(OUTPUT_KINDS), [Types.PRIMITIVE_ARRAY(Types.BYTE())] * len(OUTPUT_KINDS))
# jvm/src/main/java/dev/stockmax/flink/SplitOutputs.java and GroupRecords.java, in the jar FUNCTIONS_JAR.
SPLIT_OUTPUTS_CLASS = "dev.stockmax.flink.SplitOutputs"
GROUP_RECORDS_CLASS = "dev.stockmax.flink.GroupRecords"
# The partition field of GroupRecords' store mark, sent to every key before each checkpoint barrier.
STORE_MARK = -1
# A store mark's payload when it carries the watermark sent before it (a big-endian long); otherwise an empty group.
MARK_WATERMARK_BYTES = 8
# The worker holds every symbol's state as objects; a full collection walks all of them, and with the default
# thresholds it ran every few thousand allocations (~10 % of the time). The state has no reference cycles.
WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def _record(key: str | None, value: dict) -> Row:
    # orjson: the same compact JSON as json.dumps, ~10x faster (it was a quarter of the job's Python time).
    # Every number here is finite: the parser refuses non-finite prices and volumes.
    return Row(key, orjson.dumps(value).decode())


class SymbolFunction(KeyedProcessFunction):
    """Keyed by the ticks topic's partition (a symbol's ticks all share one): a partition's records, grouped
    and keyed in the JVM (GroupRecords: Row(partition, records)), parsed into ticks (JSON ticks, one per
    record, or Arrow batches of them), and a SymbolProcessor per symbol in a MapState, applying its ticks in
    event-time order as the watermark passes them. Anything unusable goes to the dead-letter output with its
    reason, its original bytes and where it was read from.

    Why parsing happens here, not in a step of its own: every Python step is a crossing each way and a
    bundle that the watermark and the checkpoint barrier wait for; one step pays that once.

    Why symbols are kept in memory and written at store marks: PyFlink pickles each state entry written in a
    bundle when the bundle ends, and bundles end at every watermark step; a symbol written on each change
    was pickled several times a second. GroupRecords sends each key a store mark before every checkpoint
    barrier, and what changed is written then (operators/stored.py, KeySymbols: a journal of the key's
    changes and a share of the changed symbols whole): once per checkpoint (and timers that PyFlink fires
    between the marks and the barrier write theirs at once: see `marked`).

    Why not keyed by symbol: PyFlink commits each key's dirty state with a round trip at every bundle's end
    (~0.7 ms), and a timer per tick or per symbol makes bundles end often; with thousands of symbols that,
    not the work, set the pace. Keyed by partition, a bundle commits a handful of keys, a MapState entry is
    pickled once per bundle however often its symbol ticks, and one timer per key (at the earliest symbol's
    due point, DueSchedule) replaces a timer per tick."""

    def __init__(self, rules: Rules, source_topic: str, limits: TickLimits,
                 failures: FailureInjector | None = None, rewrite_rounds: int = 1) -> None:
        self.rules = rules
        self.rewrite_rounds = rewrite_rounds  # KeySymbols: each changed symbol written whole within this many stores
        self.source_topic = source_topic
        self.limits = limits
        self.failures = failures
        self.processors = None
        self.schedule = None
        self.armed: dict[int, int] = {}

    def open(self, runtime_context) -> None:
        gc.set_threshold(*WORKER_GC_THRESHOLDS)
        # key -> the earliest timer this attempt has set and not yet seen fire. Deliberately not in Flink
        # state: PyFlink 2.0 hands a Python timer registration to the task's mailbox, which runs it after
        # the pre-checkpoint flush, so a checkpoint can hold the state a bundle wrote but not the timers it
        # set. After a restore each key sets its timer again on its first call (GroupRecords makes sure
        # every partition key gets one: an empty group to each key, first thing in an attempt).
        self.armed = {}
        # key -> its symbols as objects, read from state at the key's first call in this attempt
        self.keys: dict[int, KeySymbols] = {}
        # Keys whose last element was a store mark. A watermark that came while a bundle was open is held by
        # PyFlink until the bundle ends, and the checkpoint's own bundle end (after the marks, before the
        # barrier) releases it: timers that fire then change state after the mark, so they write it at once.
        self.marked: set[int] = set()
        # Processors as the pickles KeySymbols.store makes: the same bytes, and the same JVM serializer, as
        # the PICKLED_BYTE_ARRAY this held before, so checkpoints of either restore into the other.
        self.processors = runtime_context.get_map_state(
            MapStateDescriptor("symbols", Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())))
        # The duplicate filters' sealed chunks, each written once (operators/stored.py).
        self.dedup_chunks = runtime_context.get_map_state(
            MapStateDescriptor("dedup-chunks", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        # What changed the symbols since their processors were last written, one entry per store (KeySymbols).
        self.journal = runtime_context.get_map_state(
            MapStateDescriptor("journal", Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())))
        self.schedule = runtime_context.get_state(ValueStateDescriptor("schedule", Types.PICKLED_BYTE_ARRAY()))
        self.acted_watermark = runtime_context.get_state(ValueStateDescriptor("watermark", Types.LONG()))
        metrics = runtime_context.get_metrics_group()
        # One counter per reason (metric group reason=<code>), registered up front as PyFlink requires.
        self.dead_letters = {code: metrics.add_group("reason", code).counter("deadLetters") for code in REASON_CODES}
        self.records_in = metrics.counter("recordsIn")
        self.ticks_in = metrics.counter("ticksIn")
        # How far event time is behind the wall clock, as of the last call (-1 before the first watermark):
        # for a live feed its latency floor, for a replay of history how far back it is.
        self.watermark_ms = None
        metrics.gauge("watermarkLagMs", self._watermark_lag_ms)
        self.late_ticks = metrics.counter("lateTicks")
        self.duplicate_ticks = metrics.counter("duplicateTicks")
        self.expired_symbols = metrics.counter("expiredSymbolStates")
        self.states_written = metrics.counter("symbolStatesWritten")

    def process_element(self, grouped: Row, ctx):
        partition = grouped[0]
        key = ctx.get_current_key()
        if partition == STORE_MARK:  # a checkpoint barrier follows: write what changed since the last one
            self.marked.add(key)
            outputs = self._advance_at_mark(key, grouped[1], ctx)
            self._store(key)
            if outputs is not None:
                yield from (Row(*texts) for texts in encode_outputs(outputs))
            return
        self.marked.discard(key)
        symbols = self._symbols(key)
        records = decode_group(grouped[1])
        if records.values:
            self.records_in.inc(len(records.values))
        ticks, refused, pieces = group_ticks(records, self.limits)
        if ticks:
            self.ticks_in.inc(len(ticks))
        if refused:
            rejected_at = int(time.time() * 1_000_000)
            for index, item in refused:
                self.dead_letters[item.rejection.code].inc()
                key, value = dead_letter(item, self.source_topic, partition, records.offsets[index],
                                         records.timestamps_ms[index], rejected_at)
                yield DEAD, _record(key, value)
        watermark = self.watermark_ms = symbols.act_at(ctx.timer_service().current_watermark())
        frontier = frontier_from_watermark_ms(watermark)
        outputs = {kind: [] for kind in OUTPUT_KINDS}
        # Every tick read, late and repeated ones too, for the store's raw ticks (the loader): parsed once, here.
        outputs["tick_batches"] = tick_batch_records(str(partition).encode(), pieces)
        touched: dict[str, SymbolProcessor] = {}
        for tick in ticks:
            if self.failures:
                self.failures.tick()
            symbol = tick[0]
            processor = touched.get(symbol)
            if processor is None:
                processor = symbols.get(symbol) or StoredSymbolProcessor(self.rules.for_symbol(symbol))
                touched[symbol] = processor
            rejected = processor.accept(tick, frontier)
            if not rejected:
                symbols.accepted(tick)
            else:
                (self.late_ticks if rejected == "late" else self.duplicate_ticks).inc()
                outputs["late" if rejected == "late" else "duplicates"].append(output_line(
                    symbol.encode(), {**Tick._make(tick)._asdict(), "reason": rejected, "watermark_ms": watermark}))
        schedule = symbols.schedule
        for symbol, processor in touched.items():
            due = processor.due_after_accepting(schedule.due(symbol))
            if due is None:  # only refused ticks: nothing to keep
                continue
            symbols.put(symbol, processor)
            schedule.set(symbol, due)
        self._arm(key, symbols, ctx)
        yield from (Row(*texts) for texts in encode_outputs(outputs))

    def on_timer(self, timestamp: int, ctx):
        key = ctx.get_current_key()
        if timestamp >= self.armed.get(key, timestamp + 1):  # the armed timer (not an older one) fired
            del self.armed[key]
        outputs = self._advance_key(key, timestamp, ctx)
        if outputs is None:
            return
        if key in self.marked:
            self._store(key)
        yield from (Row(*texts) for texts in encode_outputs(outputs))

    def _advance_at_mark(self, key: int, payload: bytes, ctx) -> dict[str, list] | None:
        """A store mark that carries the watermark sent before it (GroupRecords, one subtask): the due symbols
        advanced to it now, as the timer would when the checkpoint's bundle end releases that watermark, so
        that the checkpoint waits for one bundle and a symbol is written once. None: nothing to do."""
        if len(payload) != MARK_WATERMARK_BYTES:
            return None
        return self._advance_key(key, int.from_bytes(payload, "big", signed=True), ctx)

    def _advance_key(self, key: int, at_ms: int, ctx) -> dict[str, list] | None:
        """The key's symbols due at watermark at_ms (or Flink's, if higher) advanced to it, and its timer set
        again; their outputs by kind. None: the key holds no symbol."""
        symbols = self._symbols(key)
        if not len(symbols.schedule):
            return None
        self.watermark_ms = symbols.act_at(max(at_ms, ctx.timer_service().current_watermark()))
        outputs = self._advance(symbols, frontier_from_watermark_ms(self.watermark_ms))
        self._arm(key, symbols, ctx)
        return outputs

    def _advance(self, symbols: KeySymbols, frontier: int) -> dict[str, list]:
        """Every symbol of the key due at the frontier, advanced to it at once, column-wise (what each one's
        advance would give); its outputs by kind."""
        schedule = symbols.schedule
        names = schedule.pop_due(frontier)
        symbols.advanced(frontier, names)
        due = [(symbol, symbols.get(symbol)) for symbol in names]
        outputs = {**advance_symbols(due, frontier)._asdict(), "late": [], "duplicates": [], "tick_batches": []}
        for symbol, processor in due:
            symbols.take_chunk_changes(symbol, processor)
            if processor.expired(frontier):
                # Nothing kept can change an output any more: memory follows the active symbols.
                symbols.remove(symbol)
                self.expired_symbols.inc()
            else:
                symbols.put(symbol, processor)
                schedule.set(symbol, processor.next_due())
        return outputs

    def _store(self, key: int) -> None:
        symbols = self.keys.get(key)
        if symbols is not None:
            self.states_written.inc(symbols.store(self.processors, self.dedup_chunks, self.schedule,
                                                  self.acted_watermark, self.journal))

    def _watermark_lag_ms(self) -> int:
        if self.watermark_ms is None or self.watermark_ms < 0:
            return -1
        return max(0, int(time.time() * 1000) - self.watermark_ms)

    def _symbols(self, key: int) -> KeySymbols:
        """The key's symbols; at its first call in this attempt, as the last checkpoint stored them."""
        symbols = self.keys.get(key)
        if symbols is None:
            symbols = self.keys[key] = KeySymbols.load(
                self.processors.items(), self.dedup_chunks, self.schedule.value(), self.acted_watermark.value(),
                self.journal.items(), self.rules, self.rewrite_rounds)
        return symbols

    def _arm(self, key: int, symbols: KeySymbols, ctx) -> None:
        """One timer per key, at the earliest due symbol (Flink fires it once the watermark gets there)."""
        earliest = symbols.schedule.earliest()
        if earliest is None:
            return
        at = watermark_ms_for_frontier(earliest)
        if at < self.armed.get(key, at + 1):
            ctx.timer_service().register_event_time_timer(at)
            self.armed[key] = at


def group_records(raw: DataStream, settings: Settings) -> KeyedStream:
    """The source's records, a partition's gathered into one element in the JVM (GroupRecords says how event
    time and checkpoints stay exact), keyed there by its partition's key (partition_keys; a partition beyond
    them, a topic grown under the job, shares one of them: harmless, the key then holds both partitions'
    symbols): one crossing into Python per group instead of per record, and no Python step before the keyed
    one. Before each checkpoint barrier it sends every key a store mark (SymbolFunction writes its state
    then). It also moves a quiet live feed's watermark (Settings.quiet_feed_lag_ms)."""
    gateway = get_gateway()
    keys = partition_keys(settings.topic_partitions)
    j_keys = gateway.new_array(gateway.jvm.int, len(keys))
    for partition, key in enumerate(keys):
        j_keys[partition] = key
    group_class = getattr(gateway.jvm, GROUP_RECORDS_CLASS)
    operator = group_class(j_keys, settings.group_max_records, settings.group_max_bytes,
                           settings.quiet_after_ms, settings.watermark_interval_ms, settings.watermark_bound_ms,
                           settings.max_future_skew_ms, settings.quiet_feed_lag_ms)
    grouped = raw._j_data_stream.transform("group records per partition", group_class.outputType(), operator) \
        .uid("group-records")
    # What DataStream.key_by builds after its own Python key step: Row(key, element) keyed on the key by
    # Flink's KeyByKeySelector, which the keyed Python operator reads as its key and element.
    return KeyedStream(grouped.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([Types.INT()]).get_java_type_info()),
                       GROUP, DataStream(grouped))


def build(env: StreamExecutionEnvironment, settings: Settings, bounded: bool, discard_outputs: bool = False) -> None:
    """Add the stockmax pipeline to an environment. discard_outputs: every output goes to a blackhole
    (bench/throughput.py measures the job without its sinks)."""
    # Shipped with the job (locally and to a cluster), and loaded here for the planner.
    env.add_jars(settings.flink_jar(FUNCTIONS_JAR).resolve().as_uri())
    t_env = StreamTableEnvironment.create(env)
    t_env.create_java_temporary_function("split_outputs", SPLIT_OUTPUTS_CLASS)
    # The rowtime column stays in the projection: without it, records would carry no timestamp while
    # watermarks still flowed, and every tick would look late.
    raw = t_env.to_data_stream(t_env.from_path(source_table(t_env, settings, bounded)))
    # Stable uids: a restarted job maps its checkpointed state (keyed state, the sinks' transactions) back
    # onto these operators.
    failures = None
    if settings.failure_points():
        failures = FailureInjector(settings.failure_points(), str(settings.data_dir / "injected-failures"))
    outputs = (group_records(raw, settings)
               .process(SymbolFunction(settings.rules(), settings.topic("ticks"), settings.tick_limits(), failures,
                                       stockmax_config.rewrite_rounds(settings)), output_type=OUTPUTS)
               .name("sliding max/min, rules, rollups").uid("symbol-state")
               .set_max_parallelism(MAX_PARALLELISM))
    t_env.create_temporary_view("outputs", t_env.from_data_stream(outputs))

    statements = t_env.create_statement_set()
    # All six kinds through one sink, each record to its kind's topic: one transactional producer instead
    # of six, so one transaction per checkpoint to start and commit, not six (and a checkpoint makes
    # alerts and the max updates behind them visible together). One call splits all six texts (see
    # SplitOutputs for why), so the sink runs in the keyed step's task.
    topics = [settings.topic(kind) for kind in OUTPUT_KINDS]
    records = t_env.sql_query(
        f"SELECT r.topic, r.k, r.v FROM outputs, LATERAL TABLE(split_outputs({sql_literal(';'.join(topics))}, "
        f"{sql_literal(split_outputs_shapes())}, "
        f"{', '.join(f'outputs.{kind}' for kind in OUTPUT_KINDS)})) AS r(topic, k, v)")
    add_kafka_sink(t_env, statements, settings, "outputs", topics, records, "BYTES", discard_outputs)
    add_kafka_sink(t_env, statements, settings, "dead", [settings.topic("dead")],
                   t_env.from_data_stream(outputs.get_side_output(DEAD)), "STRING", discard_outputs)
    statements.attach_as_datastream()


def main(argv: list[str] | None = None) -> None:
    """Entry point for `flink run -py jobs/pipeline.py` (what `stockmax submit` runs): the job with this
    machine's stockmax settings as its Flink options (flink_env.job_options), on top of the cluster's."""
    parser = argparse.ArgumentParser(description="stockmax job (settings from stockmax.toml / STOCKMAX_*)")
    parser.add_argument("--bounded", action="store_true", help="stop at the end of what is in the topic now")
    args = parser.parse_args(argv)
    settings = stockmax_config.load()
    env = StreamExecutionEnvironment.get_execution_environment(configuration(job_options(settings)))
    build(env, settings, bounded=args.bounded)
    env.execute(settings.job_name)


if __name__ == "__main__":
    main()
