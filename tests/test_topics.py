"""Topics that stockmax creates keep replayed history: time retention is off unless configured."""

from kafka.admin import ConfigResource, ConfigResourceType

from stockmax import kafka_io


def _retention(settings, topic):
    client = kafka_io.admin(settings)
    try:
        # {resource type: {resource name: {config key: {config data}}}}
        described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                            config_filter="all")
    finally:
        client.close()
    entry = next(iter(described.values()))[topic]["retention.ms"]
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


def test_topics_keep_records_with_old_event_times(settings):
    # Records carry event time as their timestamp; with Kafka's default 7-day time retention a replay of
    # older ticks is deleted by the broker's retention check before the job reads it.
    created = kafka_io.create_topics(settings)
    assert sorted(created) == sorted(settings.topic(kind) for kind in kafka_io.TOPIC_KINDS)
    for kind in kafka_io.TOPIC_KINDS:
        assert _retention(settings, settings.topic(kind)) == "-1"
    assert kafka_io.create_topics(settings) == []  # idempotent


def test_retention_is_a_setting(settings):
    settings = settings.with_(topic_retention_ms=86_400_000)
    kafka_io.create_topics(settings)
    assert _retention(settings, settings.topic("ticks")) == "86400000"


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
