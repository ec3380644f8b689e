"""Kafka from Python: topics, the replay producer and read_committed readers (kafka-python), and the store
loader's reader (confluent-kafka: librdkafka, for its volume)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter
from typing import Iterator

import confluent_kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from .config import Settings

log = logging.getLogger(__name__)

TOPIC_KINDS = ("ticks", "alerts", "max_updates", "rollups", "late", "duplicates", "dead", "tick_batches")


class KafkaUnavailable(RuntimeError):
    pass


def _unavailable(settings: Settings, exc: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"no Kafka broker answers at {settings.kafka_bootstrap} ({type(exc).__name__}). Start the local one "
        f"with `make kafka-up`, or set STOCKMAX_KAFKA_BOOTSTRAP to your broker")


def ensure_reachable(settings: Settings, timeout_s: float = 3.0) -> None:
    """Fail at once, clearly, when no bootstrap address accepts a connection (the clients would wait 30 s)."""
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError):
            continue
    raise _unavailable(settings, ConnectionRefusedError("connection refused"))


def _connect(settings: Settings, client_class, **options):
    """A kafka-python client, or at once a clear KafkaUnavailable when no broker answers."""
    ensure_reachable(settings)
    try:
        return client_class(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_python_options(), **options)
    except KafkaError as exc:
        if settings.kafka_security_protocol.startswith("SASL"):
            # The port answered (ensure_reachable) but no client session came up: kafka-python reports a
            # refused login as a bootstrap timeout, so name the likely cause.
            raise KafkaUnavailable(
                f"the Kafka broker at {settings.kafka_bootstrap} answers but refused the credentials of user "
                f"{settings.kafka_sasl_username!r} ({settings.kafka_security_protocol}, "
                f"{settings.kafka_sasl_mechanism}) or the protocol ({type(exc).__name__}); check "
                f"STOCKMAX_KAFKA_SASL_USERNAME, STOCKMAX_KAFKA_SASL_PASSWORD and STOCKMAX_KAFKA_SECURITY_PROTOCOL") from None
        raise _unavailable(settings, exc) from None


def admin(settings: Settings) -> KafkaAdminClient:
    return _connect(settings, KafkaAdminClient, client_id="stockmax-admin", request_timeout_ms=15000)


def create_topics(settings: Settings) -> list[str]:
    """Create stockmax's topics where missing (idempotent). Returns the ones created now."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(settings.topic(kind), num_partitions=settings.topic_partitions, replication_factor=1,
                        topic_configs=topic_configs(settings, kind))
               for kind in TOPIC_KINDS if settings.topic(kind) not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # created meanwhile by someone else: what we wanted
        return [t.name for t in new]
    finally:
        client.close()


def topic_configs(settings: Settings, kind: str) -> dict[str, str]:
    """The topic configs `create_topics` gives a kind of topic."""
    if kind == "tick_batches":
        return {"retention.ms": str(settings.topic_tick_batches_retention_ms), "message.timestamp.type": "LogAppendTime"}
    return {"retention.ms": str(settings.topic_retention_ms)}


def require_topics(settings: Settings, kinds=TOPIC_KINDS) -> None:
    """Fail clearly before a job starts when the broker is away or a topic is missing."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
    finally:
        client.close()
    missing = [settings.topic(kind) for kind in kinds if settings.topic(kind) not in existing]
    if missing:
        raise KafkaUnavailable(f"topic(s) {', '.join(missing)} do not exist at {settings.kafka_bootstrap}; "
                               f"create them with `stockmax topics create`")


def producer(settings: Settings, **overrides) -> KafkaProducer:
    options = dict(acks="all", linger_ms=20, batch_size=512 * 1024, max_request_size=4 * 1024 * 1024,
                   client_id="stockmax-replay")
    return _connect(settings, KafkaProducer, **{**options, **overrides})


def _committed_consumer(settings: Settings, group_id: str | None, **overrides) -> KafkaConsumer:
    options = dict(group_id=group_id,
                   isolation_level="read_committed",  # only what Flink's transactions committed
                   enable_auto_commit=False, auto_offset_reset="earliest", client_id="stockmax-reader",
                   consumer_timeout_ms=1000)
    return _connect(settings, KafkaConsumer, **{**options, **overrides})


def _partitions(consumer: KafkaConsumer, topic: str, wait_s: float = 10.0) -> list[TopicPartition]:
    deadline = time.monotonic() + wait_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"topic {topic!r} does not exist; create it with `stockmax topics create`")
        time.sleep(0.2)


class BatchReader:
    """A read_committed reader of whole topics for the store loader, resuming from its group's committed
    offsets; poll() returns (topic, value, timestamp ms) of records, commit() commits what it returned.

    In librdkafka rather than kafka-python: the loader reads about as many records as ticks come in, and
    kafka-python unpacks every record in Python, on the cores the live job runs on."""

    def __init__(self, settings: Settings, topics: list[str], group_id: str, wait_s: float = 10.0) -> None:
        ensure_reachable(settings)
        self._consumer = confluent_kafka.Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": group_id, "client.id": "stockmax-loader",
            "isolation.level": "read_committed",  # only what Flink's transactions committed
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "max.partition.fetch.bytes": 16 << 20, "fetch.max.bytes": 64 << 20,  # fewer round trips on backlogs
            **settings.kafka_librdkafka_options()}, logger=log)
        try:
            self.partitions = [confluent_kafka.TopicPartition(topic, p)
                               for topic in topics for p in self._partition_ids(topic, wait_s)]
            # Where each partition resumes: the group's committed offset, else (nothing committed) its beginning.
            committed = _retrying(lambda: self._consumer.committed(self.partitions, timeout=15))
            self._start = {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else
                           _retrying(lambda: self._consumer.get_watermark_offsets(tp, timeout=15))[0]
                           for tp in committed}
            self._consumer.assign([confluent_kafka.TopicPartition(topic, partition, offset)
                                   for (topic, partition), offset in self._start.items()])
        except confluent_kafka.KafkaException as exc:
            self._consumer.close()
            raise KafkaUnavailable(f"the loader's Kafka reader could not start at {settings.kafka_bootstrap}: "
                                   f"{settings.scrub(exc.args[0].str())}") from None

    def _partition_ids(self, topic: str, wait_s: float) -> list[int]:
        deadline = time.monotonic() + wait_s
        while True:
            found = self._consumer.list_topics(topic, timeout=wait_s).topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"topic {topic!r} does not exist; create it with `stockmax topics create`")
            time.sleep(0.2)

    def poll(self, max_records: int, timeout_s: float) -> list[tuple[str, bytes, int]]:
        records = []
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            if message.error():  # an event, not a record (the client retries on its own)
                log.warning("loader: Kafka: %s", message.error())
                continue
            records.append((message.topic(), message.value(), message.timestamp()[1]))
        return records

    def commit(self) -> None:
        try:
            _retrying(lambda: self._consumer.commit(asynchronous=False))
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError._NO_OFFSET:  # nothing read since the last commit
                raise

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """Each partition's end now; read_committed: its last stable offset."""
        return {(tp.topic, tp.partition):
                _retrying(lambda: self._consumer.get_watermark_offsets(tp, timeout=15, cached=False))[1]
                for tp in self.partitions}

    def positions(self) -> dict[tuple[str, int], int]:
        """The offset each partition is read up to (past transaction markers)."""
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else self._start[(tp.topic, tp.partition)]
                for tp in self._consumer.position(self.partitions)}

    def close(self) -> None:
        self._consumer.close()


_COORDINATOR_NOT_READY = {confluent_kafka.KafkaError.NOT_COORDINATOR, confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE,
                          confluent_kafka.KafkaError.COORDINATOR_LOAD_IN_PROGRESS, confluent_kafka.KafkaError._WAIT_COORD}


def _retrying(call, timeout_s: float = 30.0):
    """call(), again while librdkafka says the error is retriable (a new broker's group coordinator, say,
    answers NOT_COORDINATOR until its offsets topic is ready; kafka-python retries such errors itself)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in _COORDINATOR_NOT_READY) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_committed(settings: Settings, topic: str, timeout_s: float = 60.0) -> Iterator:
    """Every committed record of a topic from the beginning up to its end now (the last stable offset)."""
    consumer = _committed_consumer(settings, group_id=None)
    try:
        parts = _partitions(consumer, topic)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)  # with read_committed: the last stable offset
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets within {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=500).values():
                yield from records
    finally:
        consumer.close()


def read_committed_json(settings: Settings, kind: str, timeout_s: float = 60.0) -> list[dict]:
    return [json.loads(r.value) for r in read_committed(settings, settings.topic(kind), timeout_s)]


def committed_reader(settings: Settings, topics: list[str], group_id: str) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A read_committed consumer of whole topics that resumes from the group's committed offsets."""
    consumer = _committed_consumer(settings, group_id=group_id, max_poll_records=5000)
    parts = [tp for topic in topics for tp in _partitions(consumer, topic)]
    consumer.assign(parts)
    return consumer, parts


def browse(settings: Settings, kind: str, last: int | None = 20, follow: bool = False,
           poll_s: float = 0.5) -> Iterator[dict]:
    """Committed records of one of stockmax's topics as JSON objects, for the commands that show them.

    last=N: the newest N records (by record timestamp, across partitions); last=None: from the beginning.
    Then, with follow, every newly committed record as it comes, until interrupted."""
    topic = settings.topic(kind)
    consumer = _committed_consumer(settings, group_id=None, consumer_timeout_ms=int(poll_s * 1000))
    try:
        parts = _partitions(consumer, topic)
        consumer.assign(parts)
        begin, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        # Transaction markers take offsets too, so a partition's newest N records lie further back than N
        # offsets: look back twice as far until each partition gave N or its beginning is reached.
        reach = last or 0
        while True:
            backlog, newer = [], []
            for tp in parts:
                consumer.seek(tp, begin[tp] if last is None else max(begin[tp], end[tp] - reach))
            while any(consumer.position(tp) < end[tp] for tp in parts):
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        (backlog if r.offset < end[TopicPartition(r.topic, r.partition)] else newer).append(r)
            per_partition = Counter((r.topic, r.partition) for r in backlog)
            if last is None or all(per_partition[(tp.topic, tp.partition)] >= last or end[tp] - reach <= begin[tp]
                                   for tp in parts):
                break
            reach *= 2
        backlog.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        shown = backlog if last is None else backlog[-last:] if last else []
        for record in shown + (newer if follow else []):
            yield json.loads(record.value)
        while follow:
            for records in consumer.poll(timeout_ms=int(poll_s * 1000)).values():
                for record in records:
                    yield json.loads(record.value)
    finally:
        consumer.close()
