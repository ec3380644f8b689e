"""The job's Kafka tables, declared in Flink SQL: the ticks source and the exactly-once sinks.

Why the table connector under a DataStream job: its source exposes each record's partition and offset
(PyFlink's DataStream KafkaSource only gives values), which dead letters carry, and its sink takes the
record key from a field (the DataStream wrapper in PyFlink cannot). Underneath they are the same
KafkaSource and exactly-once KafkaSink.
"""

from __future__ import annotations

from pyflink.table import StreamTableEnvironment, Table

from stockmax.config import Settings


def kafka_options(settings: Settings, topic: str) -> dict[str, str]:
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
        **kafka_options(settings, ";".join(topics)),
        "key.format": "raw", "key.fields": "k",
        "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{settings.job_name}-{settings.topic_prefix}{name}",
        "properties.transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
        "properties.batch.size": str(settings.kafka_batch_bytes),
        "properties.linger.ms": str(settings.kafka_linger_ms),
        "properties.compression.type": settings.kafka_compression,
    }
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} ({columns}) WITH ({sql_options(options)})")
    statements.add_insert(table, records)


def source_table(t_env: StreamTableEnvironment, settings: Settings, bounded: bool) -> str:
    """The ticks topic as a table: value bytes, partition, offset, and the record timestamp as event time.

    Event time is the Kafka record timestamp (ms), and the WATERMARK is pushed into the Kafka source, which
    makes watermarks per partition: one reader interleaves partitions in large batches, so a watermark
    made after the merge would run ahead of the slower partition and make its ticks late. The parse
    (operators/records.py) checks each tick's own event time against its record timestamp. (Timestamps and watermarks stay in
    the JVM, off the Python path.)"""
    # group-offsets: resume where this job name left off when started without a checkpoint; a restore
    # from a checkpoint or savepoint takes the offsets in it.
    options = {
        **kafka_options(settings, settings.topic("ticks")),
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
            WHEN `event_ts` <= CURRENT_TIMESTAMP + {sql_interval(settings.max_future_skew_ms)}
            THEN `event_ts` - {sql_interval(settings.watermark_bound_ms + 1)}
            ELSE TO_TIMESTAMP_LTZ(0, 3) END
        ) WITH ({sql_options(options)})""")
    return "ticks_source"


def sql_interval(ms: int) -> str:
    """A SQL interval literal of ms milliseconds (up to 99 days)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def sql_literal(text) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def sql_options(options: dict[str, str]) -> str:
    return ", ".join(f"{sql_literal(k)} = {sql_literal(v)}" for k, v in options.items())
