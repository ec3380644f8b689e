"""Shared fixtures: a real Kafka broker for the session, and isolated settings per test."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/oracle.py

from stockmax import config  # noqa: E402
from stockmax.kafka_local import LocalKafka, free_port  # noqa: E402


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # no socket, no permission, no engine: all mean "no Docker here"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """STOCKMAX_KAFKA_BOOTSTRAP if set; else Kafka in a container when a Docker engine answers;
    else the project's own broker from Kafka's jars on a free port, stopped after the session."""
    given = os.environ.get("STOCKMAX_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    settings = config.load(env={})
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), settings.kafka_jars_dir, port=free_port())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(tmp_path, kafka_bootstrap):
    """Settings of one test: its own data dir (embedded ClickHouse), topics and transactional ids."""
    run = uuid.uuid4().hex[:8]
    return config.load(env={}).with_(data_dir=tmp_path / "data", kafka_bootstrap=kafka_bootstrap,
                                     topic_prefix=f"t{run}-", job_name=f"test-{run}")


@pytest.fixture
def store_settings(tmp_path):
    """Settings for store-only tests (no broker)."""
    return config.load(env={}).with_(data_dir=tmp_path / "data")
