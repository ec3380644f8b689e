"""Garbage mixed into a valid stream: every bad message reaches `ticks-dead` once, with the right reason
and the partition and offset it was read from; the valid ticks' outputs equal the oracle's; and the job,
allowed no restart at all (a record that made it fail would end it), is still running at the end."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import pyarrow as pa
import pytest

from cli_env import cli_env
from running_job import (expected_outputs, isolated, newest_checkpoint, run_until, start_job, wait_for_checkpoints,
                         with_next_ticks)
from stockmax import config, kafka_io, sample
from stockmax.kafka_local import free_port
from stockmax.operators.tick import REASON_CODES
from stockmax.operators.records import encode_batch
from stockmax.replay import tick_record

pytestmark = pytest.mark.e2e

DAY_US = 86_400_000_000


def _json(d: dict) -> bytes:
    return json.dumps(d).encode()


def _bad_messages(row: dict) -> list[tuple[bytes, str, int | None]]:
    """Bad variants of a valid tick: (value, reason code, record timestamp ms or None for the tick's own)."""
    t = dict(row)
    drop = lambda k: {key: v for key, v in t.items() if key != k}
    now_us = time.time_ns() // 1000
    return [
        (b"\xff\xfe" + _json(t), "not_utf8", None),
        (_json(t)[:25], "not_json", None),
        (b"[1, 2, 3]", "not_object", None),
        (_json(drop("price")), "missing_field", None),
        (_json(drop("event_time")), "missing_field", None),
        (_json({**t, "price": str(t["price"])}), "wrong_type", None),
        (_json({**t, "volume": [1]}), "wrong_type", None),
        (_json({**t, "event_time": float(t["event_time"])}), "wrong_type", None),
        (_json({**t, "price": float("nan")}), "price_not_finite", None),
        (_json({**t, "price": float("inf")}), "price_not_finite", None),
        (_json({**t, "price": -float("inf")}), "price_not_finite", None),
        (_json({**t, "price": 0}), "price_not_positive", None),
        (_json({**t, "price": -12.5}), "price_not_positive", None),
        (_json({**t, "price": 3e15}), "price_too_large", None),
        (_json({**t, "volume": -100}), "volume_negative", None),
        (_json({**t, "symbol": ""}), "symbol_empty", None),
        (_json({**t, "symbol": "S" * 40}), "symbol_too_long", None),
        (_json({**t, "symbol": t["symbol"] + "\u0001"}), "symbol_bad_characters", None),
        (_json({**t, "symbol": t["symbol"] + "\n"}), "symbol_bad_characters", None),
        (_json({**t, "event_time": t["event_time"] // 1_000_000}), "event_time_in_seconds", None),
        (_json({**t, "event_time": t["event_time"] // 1000}), "event_time_in_milliseconds", None),
        (_json({**t, "event_time": t["event_time"] * 1000}), "event_time_in_nanoseconds", None),
        # Stamped with its own (future) time, as an event-time producer would: it must not move the
        # watermark, or every later tick of its partition would be late.
        (_json({**t, "event_time": now_us + DAY_US}), "event_time_in_future", (now_us + DAY_US) // 1000),
        (_json({**t, "event_time": 915_148_800_000_000}), "event_time_before_floor", 915_148_800_000),
        (_json({**t, "note": "x" * 100_000}), "message_too_large", None),
        (_json(t), "timestamp_mismatch", t["event_time"] // 1000 + 7),
        # An Arrow batch cut short (the start of a real one); batch rows are tested in test_batches_and_schedule
        (encode_batch(pa.Table.from_pylist([t]))[:60], "not_arrow_batch", None),
    ]


def _scrape(port: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text from the job's endpoint: metric name -> (labels, value) per series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    series: dict[str, list[tuple[dict, float]]] = {}
    for name, labels, value in re.findall(r"^(\w+)(?:\{(.*)\})? (\S+)$", text, re.M):
        series.setdefault(name, []).append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return series


def _job_metrics(port: str) -> dict[tuple[str, str | None], float]:
    """The keyed step's own counters, summed over subtasks: (name, reason or None) -> value."""
    out: dict[tuple[str, str | None], float] = {}
    for name, series in _scrape(port).items():
        short = name.removeprefix("flink_taskmanager_job_task_operator_")
        if short == name:
            continue
        for labels, value in series:  # e.g. flink_taskmanager_job_task_operator_reason_deadLetters{reason="..."}
            key = (short.split("_")[-1], labels.get("reason"))
            out[key] = out.get(key, 0) + value
    return out


def test_bad_ticks_go_to_dead_letters_and_change_no_output(settings, tmp_path):
    # One partition: a watermark dragged into the future by one record would hold for the whole stream.
    s = isolated(settings, tmp_path, "bad", restart_attempts=0, topic_partitions=1,  # a failure would end the job
                 metrics_port=str(free_port()))
    data = sample.generate(symbols=6, duration_s=180, ticks_per_second=5, spikes_per_symbol=3, seed=31,
                           max_delay_ms=sample.delay_within(s.watermark_bound_ms)).to_pylist()
    # Late: copies of the first ticks under new seqs, published once the job's watermark has passed them.
    late = [{**data[i], "seq": 10**9 + i} for i in range(3)]
    expected = {**expected_outputs(s, data), "late": len(late)}
    assert expected["alerts"], "the sample should contain spikes"
    cases = _bad_messages(data[0])
    assert {code for _, code, _ in cases} == set(REASON_CODES) - {"seq_negative", "seq_too_large",
                                                                  "event_time_negative", "volume_not_finite",
                                                                  "volume_too_large", "exchange_too_long"}
    kafka_io.create_topics(s)

    # Every bad message goes in among the valid ticks of its neighbour's symbol (same key, same partition),
    # stamped like that neighbour unless the case says otherwise.
    messages = []  # (key, value, record timestamp ms, reason code or None)
    step = len(data) // (len(cases) + 1)
    for i, row in enumerate(with_next_ticks(data)):
        key, value, timestamp_ms = tick_record(row)
        messages.append((key, value, timestamp_ms, None))
        if i % step == step // 2 and sum(1 for m in messages if m[3]) < len(cases):
            raw, code, stamp = cases[sum(1 for m in messages if m[3])]
            messages.append((key, raw, timestamp_ms if stamp is None else stamp, code))
    assert sum(1 for m in messages if m[3]) == len(cases)
    # The feed pauses after the future-stamped message until the job has taken it: had it moved its
    # partition's watermark, the ticks after the pause would all be late.
    pause = next(i for i, m in enumerate(messages) if m[3] == "event_time_in_future") + 1
    topic = s.topic("ticks")
    want_dead = {}

    def publish(part):
        producer = kafka_io.producer(s)
        sent = [(m, producer.send(topic, key=m[0], value=m[1], timestamp_ms=m[2])) for m in part]
        producer.flush()
        producer.close()
        for (_, raw, _, code), future in sent:
            if code:
                meta = future.get(timeout=30)
                want_dead[(meta.partition, meta.offset)] = (code, raw)

    job = start_job(s)
    status = []  # the live run's status lines (stockmax/progress.py), as it says them
    threading.Thread(target=lambda: status.extend(line for line in job.stdout if line.startswith("records in ")),
                     daemon=True).start()
    try:
        publish(messages[:pause])
        deadline = time.monotonic() + 120
        while len(kafka_io.read_committed_json(s, "dead")) < len(want_dead):
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the first dead letters were not committed"
            time.sleep(0.5)
        # And a watermark made after the future-stamped record has gone through the keyed step: checkpoints
        # complete until one whose barrier was injected more than a watermark interval after that record was
        # read (before the barrier of the checkpoint that committed its dead letter), so behind a periodic
        # watermark made since (barriers and watermarks keep their order on the way).
        later = -(-s.watermark_interval_ms // s.checkpoint_interval_ms) + 1
        wait_for_checkpoints(s, newest_checkpoint(s) + later, job)
        # A committed 1 s rollup after the late ticks' second: the keyed step's watermark has passed them.
        passed = max(t["event_time"] for t in late) // 1_000_000 * 1_000_000 + 1_000_000
        while not any(r["resolution_s"] == 1 and r["bucket_start"] >= passed
                      for r in kafka_io.read_committed_json(s, "rollups")):
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no rollup after the late ticks' time was committed"
            time.sleep(0.5)
        publish([(*tick_record(t), None) for t in late] + messages[pause:])
        # Every dead letter committed, and then said in the status line (every 5 s).
        deadline = time.monotonic() + 120
        while not (status and f"dead letters {len(want_dead):,}," in status[-1]):
            assert job.poll() is None, f"the job ended: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"the status never showed every dead letter: {status[-3:]}"
            time.sleep(0.5)
        # Flink's Prometheus endpoint lists Flink's metrics and the job's own, which count what went in
        # (every tick taken: the counts reach what was published).
        ticks_in = sum(1 for m in messages if m[3] is None) + len(late)
        want = {("deadLetters", code): n for code, n in Counter(code for code, _ in want_dead.values()).items()}
        want.update({("lateTicks", None): len(late), ("ticksIn", None): ticks_in,
                     ("recordsIn", None): len(messages) + len(late)})
        deadline = time.monotonic() + 120
        while True:  # Python metrics reach the JVM at the end of a bundle
            got = {key: value for key, value in _job_metrics(s.metrics_port).items() if key in want}
            if got == want:
                break
            assert time.monotonic() < deadline, {k: (got.get(k), n) for k, n in want.items() if got.get(k) != n}
            time.sleep(0.5)
        names = set(_scrape(s.metrics_port))
        for name in ("flink_jobmanager_job_lastCheckpointDuration", "flink_jobmanager_job_lastCheckpointSize",
                     "flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
                     "flink_taskmanager_job_task_operator_pendingRecords",
                     "flink_taskmanager_job_task_operator_watermarkLagMs"):
            assert name in names, sorted(n for n in names if "operator" in n)
        # Every metric the Grafana dashboard (docker-compose.yml's grafana service) plots is one there is.
        dashboard = (config.PROJECT_ROOT / "monitoring" / "grafana" / "dashboards" / "stockmax.json").read_text()
        plotted = set(re.findall(r"flink_\w+", dashboard))
        # PyFlink exports a counter from its first count on: none of these happened here.
        never_counted = {f"flink_taskmanager_job_task_operator_{name}" for name in ("duplicateTicks", "expiredSymbolStates")}
        assert len(plotted) >= 10 and plotted <= names | never_counted, sorted(plotted - names)
        assert not names & never_counted
        # The valid ticks' outputs are the oracle's, the late ones reported late, while the job keeps running.
        assert run_until(s, expected, job) == expected
    finally:
        if job.poll() is None:
            job.kill()

    got_late = kafka_io.read_committed_json(s, "late")
    assert sorted((t["symbol"], t["seq"]) for t in got_late) == sorted((t["symbol"], t["seq"]) for t in late)
    assert all(t["reason"] == "late" and t["watermark_ms"] >= t["event_time"] // 1000 for t in got_late)

    # Dead letters: each bad message once, with its reason, its bytes and where it was read from.
    dead = kafka_io.read_committed_json(s, "dead")
    got_dead = Counter((d["source_partition"], d["source_offset"]) for d in dead)
    assert set(got_dead) == set(want_dead) and set(got_dead.values()) == {1}
    for d in dead:
        code, raw = want_dead[(d["source_partition"], d["source_offset"])]
        assert (d["reason"], base64.b64decode(d["raw_base64"])) == (code, raw), d["message"]
        assert d["source_topic"] == topic and d["message"]

    # `stockmax dead-letters` shows them: all with --from-beginning --json, a readable line each by default.
    shown = subprocess.run([sys.executable, "-m", "stockmax.cli", "dead-letters", "--from-beginning", "--json"],
                           env=cli_env(s), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert Counter(json.dumps(json.loads(line), sort_keys=True) for line in shown.stdout.splitlines()) == \
           Counter(json.dumps(d, sort_keys=True) for d in dead)
    lines = subprocess.run([sys.executable, "-m", "stockmax.cli", "dead-letters", "--limit", "5"],
                           env=cli_env(s), capture_output=True, text=True, timeout=120).stdout.splitlines()
    records = sorted(kafka_io.read_committed(s, s.topic("dead")), key=lambda r: (r.timestamp, r.partition, r.offset))
    newest = [json.loads(r.value) for r in records[-5:]]  # newest by the dead-letter record's own timestamp
    assert len(lines) == 5
    for line, d in zip(lines, newest):
        assert f"partition {d['source_partition']} offset {d['source_offset']}" in line and d["reason"] in line
