"""Topics that stockmax creates keep replayed history: time retention is off unless configured; the loader's
tick-batches expire by when the broker took them."""

import time

from kafka.admin import ConfigResource, ConfigResourceType

from stockmax import kafka_io


def _topic_config(settings, topic, key="retention.ms"):
    # A topic just created can be described without its configs until the broker's metadata has it: ask again.
    client = kafka_io.admin(settings)
    deadline = time.monotonic() + 30
    try:
        while True:
            # {resource type: {resource name: {config key: {config data}}}}
            described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                                config_filter="all")
            configs = next(iter(described.values())).get(topic, {})
            if key in configs or time.monotonic() > deadline:
                break
    finally:
        client.close()
    entry = configs[key]
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


def test_topics_keep_records_with_old_event_times(settings):
    # Records carry event time as their timestamp; with Kafka's default 7-day time retention a replay of
    # older ticks is deleted by the broker's retention check before the job reads it.
    created = kafka_io.create_topics(settings)
    assert sorted(created) == sorted(settings.topic(kind) for kind in kafka_io.TOPIC_KINDS)
    for kind in kafka_io.TOPIC_KINDS:
        if kind != "tick_batches":
            assert _topic_config(settings, settings.topic(kind)) == "-1"
    assert kafka_io.create_topics(settings) == []  # idempotent


def test_tick_batches_expire_by_append_time(settings):
    # Only the loader reads them and they hold every tick again: a week after the broker took them, whatever
    # event time a replay stamped them with (an event-time timestamp from 2020 would expire at once).
    kafka_io.create_topics(settings)
    topic = settings.topic("tick_batches")
    assert _topic_config(settings, topic) == str(7 * 86_400_000)
    assert _topic_config(settings, topic, "message.timestamp.type") == "LogAppendTime"
    before_ms = int(time.time() * 1000)
    producer = kafka_io.producer(settings)
    producer.send(topic, b"x", partition=0, timestamp_ms=1_577_836_800_000).get(timeout=30)
    producer.close()
    [record] = kafka_io.read_committed(settings, topic)
    assert record.value == b"x" and record.timestamp_type == 1 and record.timestamp >= before_ms


def test_retention_is_a_setting(settings):
    settings = settings.with_(topic_retention_ms=86_400_000)
    kafka_io.create_topics(settings)
    assert _topic_config(settings, settings.topic("ticks")) == "86400000"
    kept = settings.with_(topic_prefix=settings.topic_prefix + "kept-", topic_tick_batches_retention_ms=-1)
    kafka_io.create_topics(kept)
    assert _topic_config(kept, kept.topic("tick_batches")) == "-1"


def test_readers_check_record_crcs_in_c():
    # kafka-python validates every fetched batch's CRC-32C, in pure Python unless the crc32c package is
    # importable: that was ~30 % of the Python time of a bounded run's loader (crc32c is a dependency).
    import os

    from kafka.record import util
    from kafka.record._crc32c import crc as pure_python_crc

    assert util.crc32c_c is not None
    for size in (0, 1, 7, 4096, 65_537):
        data = os.urandom(size)
        assert util.calc_crc32c(data) == pure_python_crc(data)
