"""The stockmax job: ticks (Kafka) -> parse -> event time -> per symbol -> alerts and rollups (Kafka).

    ticks ──KafkaSource──▶ ParseTicks ──▶ watermarks ──key_by(symbol)──▶ SymbolFunction ──▶ alerts (EO)
                               │ dead letters ─▶ ticks-dead (EO)             ├─ rollups ─▶ rollups (EO)
                                                                             └─ late ────▶ ticks-late (EO)

Every Kafka output is written by Flink's KafkaSink with DeliveryGuarantee.EXACTLY_ONCE: records become
visible to read_committed readers when the checkpoint that covers them completes. Rollups reach
ClickHouse through the `rollups` topic and the loader (stockmax/loader.py), which inserts idempotently.

The functions here are thin adapters: the rules live in stockmax.operators (no Flink import there).

Run locally through `stockmax run` (mini-cluster), or submit this file to a cluster:
    flink run -py jobs/pipeline.py -j <flink-sql-connector-kafka jar> [--bounded]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import (KeyedProcessFunction, OutputTag, ProcessFunction,
                                StreamExecutionEnvironment)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (KafkaOffsetResetStrategy, KafkaOffsetsInitializer,
                                                 KafkaRecordSerializationSchema, KafkaSink, KafkaSource)
from pyflink.datastream.state import ValueStateDescriptor

from stockmax import config as stockmax_config
from stockmax.config import Settings
from stockmax.operators.symbol import SymbolProcessor, frontier_from_watermark_ms
from stockmax.operators.tick import Rejection, check_record_timestamp, parse_tick

DEAD = OutputTag("dead", Types.STRING())
LATE = OutputTag("late", Types.STRING())
ROLLUPS = OutputTag("rollups", Types.STRING())

# The source decodes bytes as ISO-8859-1: every byte maps to one character, so the Python side gets the
# original bytes back losslessly (and can tell bad UTF-8 apart for the dead-letter topic).
_LOSSLESS_CHARSET = "ISO-8859-1"


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class ParseTicks(ProcessFunction):
    """JSON bytes -> Tick; anything unusable goes to the dead-letter output with its reason."""

    def __init__(self, source_topic: str) -> None:
        self.source_topic = source_topic

    def process_element(self, value: str, ctx):
        raw = value.encode(_LOSSLESS_CHARSET)
        parsed = parse_tick(raw)
        if not isinstance(parsed, Rejection):
            parsed = check_record_timestamp(parsed, ctx.timestamp()) or parsed
        if isinstance(parsed, Rejection):
            yield DEAD, _dumps({
                "reason": parsed.code, "message": parsed.message, "source_topic": self.source_topic,
                "raw_base64": base64.b64encode(raw).decode("ascii"),
                "raw_text": raw[:1024].decode("utf-8", "replace"),
                "rejected_at": int(time.time() * 1_000_000),
            })
        else:
            yield parsed


class SymbolFunction(KeyedProcessFunction):
    """Keyed by symbol: buffers ticks until the watermark passes them, then applies them in order."""

    def __init__(self, spike_threshold_pct: float, spike_window_ms: int, rollup_resolution_s: int) -> None:
        self.rules = (spike_threshold_pct, spike_window_ms, rollup_resolution_s)
        self.state = None

    def open(self, runtime_context) -> None:
        # One pickled value per symbol: simple and exact; the performance issue revisits the layout.
        self.state = runtime_context.get_state(ValueStateDescriptor("symbol", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, tick, ctx):
        processor = self.state.value() or SymbolProcessor(*self.rules)
        frontier = frontier_from_watermark_ms(ctx.timer_service().current_watermark())
        if not processor.accept(tick, frontier):
            yield LATE, _dumps({**tick._asdict(), "reason": "late",
                                "watermark_ms": ctx.timer_service().current_watermark()})
            return
        timers = ctx.timer_service()
        # Fires once the watermark guarantees every tick up to this one has arrived (Flink keeps one
        # timer per key and time, so ticks within one ms share it) ...
        timers.register_event_time_timer(tick.event_time // 1000)
        # ... and once the tick's rollup bucket can be closed.
        timers.register_event_time_timer(processor.rollups.bucket_end(tick.event_time) // 1000 - 1)
        self.state.update(processor)

    def on_timer(self, timestamp: int, ctx):
        processor = self.state.value()
        if processor is None:
            return
        watermark = max(timestamp, ctx.timer_service().current_watermark())
        alerts, rollups = processor.advance(frontier_from_watermark_ms(watermark))
        self.state.update(processor)
        for alert in alerts:
            yield _dumps(alert)
        for row in rollups:
            yield ROLLUPS, _dumps(row)


def exactly_once_sink(settings: Settings, topic: str) -> KafkaSink:
    return (KafkaSink.builder()
            .set_bootstrap_servers(settings.kafka_bootstrap)
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(topic)
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            # Unique per job and output: Flink aborts lingering transactions with this prefix on start.
            .set_transactional_id_prefix(f"{settings.job_name}-{topic}")
            .set_property("transaction.timeout.ms", str(settings.kafka_transaction_timeout_ms))
            .build())


def build(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> None:
    """Add the stockmax pipeline to an environment."""
    source = (KafkaSource.builder()
              .set_bootstrap_servers(settings.kafka_bootstrap)
              .set_topics(settings.topic("ticks"))
              .set_group_id(settings.job_name)
              .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
              .set_value_only_deserializer(SimpleStringSchema(_LOSSLESS_CHARSET))
              .set_property("isolation.level", "read_committed"))
    if bounded:
        # Stop at the offsets that are the end of each partition when the job starts.
        source = source.set_bounded(KafkaOffsetsInitializer.latest())
    # Event time is the Kafka record timestamp (ms), and watermarks are made in the source per partition:
    # one reader interleaves partitions in large batches, so a watermark made after the merge would run
    # ahead of the slower partition and make its ticks late. ParseTicks checks each tick's own event time
    # against its record timestamp. (This also keeps timestamping in the JVM, off the Python path.)
    watermarks = (WatermarkStrategy
                  .for_bounded_out_of_orderness(Duration.of_millis(settings.watermark_bound_ms))
                  .with_idleness(Duration.of_millis(settings.source_idleness_ms)))
    raw = env.from_source(source.build(), watermarks, "ticks")

    parsed = raw.process(ParseTicks(settings.topic("ticks"))).name("parse ticks")
    alerts = (parsed.key_by(lambda tick: tick.symbol, key_type=Types.STRING())
              .process(SymbolFunction(settings.spike_threshold_pct, settings.spike_window_ms,
                                      settings.rollup_resolution_s), output_type=Types.STRING())
              .name("sliding max, spikes, rollups"))

    alerts.sink_to(exactly_once_sink(settings, settings.topic("alerts"))).name("alerts")
    alerts.get_side_output(ROLLUPS).sink_to(exactly_once_sink(settings, settings.topic("rollups"))).name("rollups")
    alerts.get_side_output(LATE).sink_to(exactly_once_sink(settings, settings.topic("late"))).name("late ticks")
    parsed.get_side_output(DEAD).sink_to(exactly_once_sink(settings, settings.topic("dead"))).name("dead letters")


def local_configuration(settings: Settings) -> Configuration:
    """The mini-cluster's settings; on a real cluster flink-conf/config.yaml holds the same ones."""
    jars = sorted(settings.flink_jars_dir.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise FileNotFoundError(f"the Flink Kafka connector jar is not in {settings.flink_jars_dir}: "
                                f"run `make setup` (tools/fetch-jars.sh)")
    conf = Configuration()
    for key, value in {
        "pipeline.jars": ";".join(jar.resolve().as_uri() for jar in jars),
        "python.executable": sys.executable,  # the worker must run this venv's Python, not PATH's
        "python.client.executable": sys.executable,
        "parallelism.default": str(settings.parallelism),
        "python.fn-execution.bundle.size": str(settings.python_bundle_size),
        "python.fn-execution.bundle.time": str(settings.python_bundle_time_ms),
        "execution.checkpointing.interval": f"{settings.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": (settings.data_dir / "checkpoints").resolve().as_uri(),
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "10",
        "restart-strategy.fixed-delay.delay": "2 s",
        "rest.bind-address": "127.0.0.1",
    }.items():
        conf.set_string(key, value)
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
