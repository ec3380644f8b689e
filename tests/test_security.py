"""Credentials: the whole pipeline against a broker that requires SASL authentication, with the password
from the environment; the outputs are the oracle's, and the password appears in no output and no log."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from cli_env import cli_env
from oracle import alert_key, expected_alerts
from running_job import isolated
from stockmax import kafka_io, sample
from stockmax.kafka_local import LocalKafka, free_port

pytestmark = pytest.mark.e2e


def _files_written_since(folder: Path, since: float):
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= since]


def test_sasl_broker_end_to_end_and_the_password_is_never_shown(settings, tmp_path):
    password = f'pa"ss\\{uuid.uuid4().hex}'  # a quote and a backslash: escaped on the way into JAAS
    broker = LocalKafka(tmp_path / "kafka", settings.kafka_jars_dir, port=free_port(),
                        sasl_users={"stockmax": password})
    started = time.time()
    broker.start()
    try:
        s = isolated(settings, tmp_path, "sasl", kafka_bootstrap=broker.bootstrap,
                     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="stockmax",
                     kafka_sasl_password=password)
        data = sample.generate(symbols=4, duration_s=120, ticks_per_second=5, spikes_per_symbol=3, seed=51,
                               max_delay_ms=sample.delay_within(s.watermark_bound_ms)).to_pylist()
        tick_file = tmp_path / "ticks.csv"
        pacsv.write_csv(pa.Table.from_pylist(data), tick_file)

        shown = ""
        for args in (["config"], ["topics", "create"], ["replay", str(tick_file), "--no-progress"],
                     ["run", "--bounded", "--no-load"], ["dead-letters"], ["load", "--once"]):
            done = subprocess.run([sys.executable, "-m", "stockmax.cli", "-v", *args], env=cli_env(s),
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"stockmax {' '.join(args)}:\n{done.stderr[-3000:]}"
            shown += done.stdout + done.stderr
        # The loader's own Kafka client (librdkafka) logged in too: every committed rollup is in the store.
        rollups = kafka_io.read_committed_json(s, "rollups")
        assert rollups and f"loaded {len(rollups)} rollup rows and {len(data)} raw ticks" in done.stdout, done.stdout

        want = expected_alerts(data, s.spike_threshold_pct, s.spike_window_ms)
        assert want
        assert Counter(map(alert_key, kafka_io.read_committed_json(s, "alerts"))) == Counter(map(alert_key, want))

        # A wrong password is a clear error, and is not shown either.
        wrong = s.with_(kafka_sasl_password="not-" + password)
        done = subprocess.run([sys.executable, "-m", "stockmax.cli", "topics", "create"], env=cli_env(wrong),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "refused the credentials of user 'stockmax'" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr  # one line: what failed and what to check
        assert "Traceback" not in done.stderr
        shown += done.stdout + done.stderr

        assert password not in shown
        import pyflink

        logs = _files_written_since(Path(pyflink.__file__).parent / "log", started)
        logs += _files_written_since(s.data_dir, started)
        logs += [p for p in _files_written_since(broker.data_dir, started) if p.name != "server.properties"]
        assert any(p.name.startswith("flink-") for p in logs), "the job's log should be among the files read"
        leaks = [str(p) for p in logs if password.encode() in p.read_bytes()]
        assert not leaks, f"the password is written in {leaks}"
        # The broker's own configuration holds its users' passwords: readable by its owner only.
        assert (broker.data_dir / "server.properties").stat().st_mode & 0o077 == 0
    finally:
        broker.stop()
