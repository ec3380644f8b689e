"""The job's committed outputs as an in-memory view for `stockmax serve`: the newest max update of every
(symbol, window), the newest alerts, the newest price bar of every symbol, each as an event to push.

Rebuilt at start from the topics themselves (read_committed, from their beginning, as far as retention
keeps them), then kept current as the job commits; so it survives a restart of `stockmax serve` and a Kafka
outage (the reader waits and goes on from where it was). A view is never ahead of what the job committed.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

import confluent_kafka
import orjson

from .config import Settings
from .kafka_io import KafkaUnavailable, ensure_reachable

log = logging.getLogger(__name__)

# The kinds of events the stream pushes, and the topic each comes from.
EVENT_TOPICS = {"max_change": "max_updates", "alert": "alerts", "price_update": "rollups"}


class LiveView:
    """What the committed outputs say now. apply() takes one record and returns the event it makes."""

    def __init__(self, alerts_kept: int, price_resolution_s: int) -> None:
        self.maxima: dict[str, dict[str, dict]] = {}  # symbol -> window -> newest max update
        self.valid_at: dict[str, int] = {}  # symbol -> the latest event time its max updates speak for
        self.prices: dict[str, dict] = {}  # symbol -> newest closed bar at the finest resolution
        self.alerts: collections.deque = collections.deque(maxlen=alerts_kept)
        self.price_resolution_s = price_resolution_s
        self.records = 0

    def apply(self, kind: str, value: dict) -> dict | None:
        self.records += 1
        if kind == "max_updates":
            symbol = value["symbol"]
            self.maxima.setdefault(symbol, {})[value["window"]] = value
            # Every window is evaluated at every applied tick and an update is written only on a change: so
            # each window's newest value holds at least up to the newest update of any window.
            if value["event_time"] > self.valid_at.get(symbol, -1 << 63):
                self.valid_at[symbol] = value["event_time"]
            return {"type": "max_change", **value}
        if kind == "alerts":
            self.alerts.append(value)
            return {"type": "alert", **value}
        if kind == "rollups" and value["resolution_s"] == self.price_resolution_s:
            previous = self.prices.get(value["symbol"])
            if previous is None or value["bucket_start"] >= previous["bucket_start"]:
                self.prices[value["symbol"]] = value
            return {"type": "price_update", **value}
        return None

    def live_max(self, symbol: str, window: str) -> dict | None:
        update = self.maxima.get(symbol, {}).get(window)
        if update is None:
            return None
        return {**update, "valid_at": self.valid_at[symbol]}

    def knows(self, symbol: str) -> bool:
        return symbol in self.maxima or symbol in self.prices

    def recent_alerts(self, symbol: str | None, since_us: int | None, limit: int) -> list[dict]:
        """The newest `limit` by event time, newest last (partitions are read interleaved: arrival order
        across symbols means nothing)."""
        chosen = [a for a in self.alerts if (symbol is None or a["symbol"] == symbol)
                  and (since_us is None or a["event_time"] >= since_us)]
        chosen.sort(key=alert_order)
        return chosen[-limit:] if limit else []


def alert_order(alert: dict) -> tuple:
    return alert["event_time"], alert["symbol"], alert["seq"]


class OutputReader:
    """Reads max-updates, alerts and rollups (read_committed) into a LiveView on a thread of its own, and
    hands each batch of events to `publish` (called on that thread)."""

    def __init__(self, settings: Settings, view: LiveView, publish: Callable[[list[dict]], None]) -> None:
        ensure_reachable(settings)
        self.settings, self.view, self.publish = settings, view, publish
        self.lock = threading.Lock()  # held while the view changes (one record); readers take it too
        self.kafka_ok = True
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._kinds = {settings.topic(kind): kind for kind in ("max_updates", "alerts", "rollups")}
        self._consumer = confluent_kafka.Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.job_name}-serve",
            "client.id": "stockmax-serve", "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "error_cb": self._on_error,
            "fetch.wait.max.ms": 50,  # a fetch the broker holds back delays what the stream pushes
            **settings.kafka_librdkafka_options()}, logger=log)
        try:
            partitions = []
            for topic in self._kinds:
                found = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
                if found is None or found.error is not None or not found.partitions:
                    raise KafkaUnavailable(f"topic {topic!r} does not exist; create it with `stockmax topics create`")
                partitions += [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                               for p in sorted(found.partitions)]
            # Caught up once every partition is read up to where it ended when the view started.
            self._start_ends = {(tp.topic, tp.partition): self._consumer.get_watermark_offsets(tp, timeout=10)[1]
                                for tp in partitions}
            self._consumer.assign(partitions)
        except confluent_kafka.KafkaException as exc:
            self._consumer.close()
            raise KafkaUnavailable(f"the view's Kafka reader could not start at {settings.kafka_bootstrap}: "
                                   f"{settings.scrub(exc.args[0].str())}") from None
        self._thread = threading.Thread(target=self._run, name="output-reader", daemon=True)

    def start(self) -> "OutputReader":
        self._thread.start()
        return self

    def _on_error(self, error) -> None:
        if error.code() in (confluent_kafka.KafkaError._ALL_BROKERS_DOWN, confluent_kafka.KafkaError._TRANSPORT):
            self.kafka_ok = False
        log.warning("serve: Kafka: %s", error)

    def _run(self) -> None:
        kinds, view = self._kinds, self.view
        while not self._stop.is_set():
            # Wait for the first record only, then take what else is there: consume() alone would wait its
            # whole timeout for a full batch, which the stream's push delay would pay.
            first = self._consumer.poll(0.2)
            if first is None and not self.kafka_ok:
                self._check_broker()
            messages = [] if first is None else [first, *self._consumer.consume(num_messages=5000, timeout=0)]
            events = []
            for message in messages:
                if message.error():
                    continue
                self.kafka_ok = True
                value = orjson.loads(message.value())
                with self.lock:  # per record: a question waits microseconds, not a batch
                    event = view.apply(kinds[message.topic()], value)
                if event is not None:
                    events.append(event)
            if events:
                self.publish(events)
            if not self._caught_up.is_set() and self._reached_start_ends():
                self._caught_up.set()

    def _check_broker(self) -> None:
        """After an outage: librdkafka says when brokers go down, not when they are back, and a quiet topic
        brings no record to say so; a metadata request that is answered does."""
        try:
            self._consumer.list_topics(timeout=1)
        except confluent_kafka.KafkaException:
            return
        self.kafka_ok = True

    def _reached_start_ends(self) -> bool:
        positions = self._consumer.position([confluent_kafka.TopicPartition(t, p) for t, p in self._start_ends])
        return all(tp.offset >= self._start_ends[(tp.topic, tp.partition)] or
                   (tp.offset < 0 and self._start_ends[(tp.topic, tp.partition)] == 0) for tp in positions)

    @property
    def caught_up(self) -> bool:
        """The view holds everything committed before it started."""
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self._caught_up.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()
