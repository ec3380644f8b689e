"""Exactly once, proven the way Flink itself is tested: with failures in the middle of the stream.

`stockmax run` (unbounded, as in production) fails three times on purpose (STOCKMAX_FAIL_AT_TICKS), and
its process is killed once (SIGKILL of the whole process group, Python and JVM, as a crashed machine
would). Started again, it resumes from the latest retained checkpoint. Its committed outputs must converge
to exactly the oracle's (nothing missing, nothing twice) and equal those of a run with no failures.

The feed then moves on, as a live one would: every symbol's next tick two hours later, which takes event
time past every bucket on every partition, so that an unbounded job releases all of the data before those
ticks. They arrive while the killed job is down: Flink does not checkpoint watermarks, so a job restored
after its whole input was read would hold its buffered ticks until newer ones came.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from cli_env import cli_env
from running_job import (group_alive, in_profile, input_and_expected, isolated, kafka_outputs, newest_checkpoint, rollup_values,
                         run_until, start_job, wait_for_checkpoints)
from stockmax import kafka_io
from stockmax.replay import replay
from stockmax.runner import latest_resume_point
from stockmax.store import Store

pytestmark = pytest.mark.e2e

FAILURE_POINTS = (2000, 5000, 8000)


@pytest.mark.parametrize("profile", ["balanced", "low-latency"])
def test_three_failures_and_a_kill_change_no_output(settings, tmp_path, profile):
    settings = in_profile(settings, profile)
    tick_file, next_file, expected = input_and_expected(settings, tmp_path)
    failing = isolated(settings, tmp_path, "failing", fail_at_ticks=",".join(map(str, FAILURE_POINTS)))
    clean = isolated(settings, tmp_path, "clean")
    for s in (failing, clean):
        kafka_io.create_topics(s)
        replay(s, tick_file, progress=False)
    replay(clean, next_file, progress=False)

    # Run 1 fails on purpose at the first two points, then dies by SIGKILL after a later checkpoint.
    markers = failing.data_dir / "injected-failures"
    job = start_job(failing)
    try:
        deadline = time.monotonic() + 300
        while not (markers / f"failed-at-{FAILURE_POINTS[1]}").exists():
            assert job.poll() is None, f"the job ended before its second failure: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the second injected failure never happened"
            time.sleep(0.1)
        failed_at = (markers / f"failed-at-{FAILURE_POINTS[1]}").stat().st_mtime_ns
        while True:  # a checkpoint completed after the second failure: the kill loses progress, not only time
            checkpoint = latest_resume_point(failing)
            if checkpoint is not None and (checkpoint / "_metadata").stat().st_mtime_ns > failed_at:
                break
            assert time.monotonic() < deadline, "no checkpoint completed after the second failure"
            time.sleep(0.05)
        assert job.poll() is None, "the job must still be running when it is killed"
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    gone_by = time.monotonic() + 30  # nothing of the killed group survives, the JVM included
    while group_alive(job.pid):
        assert time.monotonic() < gone_by, "a process of the killed job is still alive"
        time.sleep(0.2)

    # Run 2: the feed has moved on meanwhile; the same command resumes from the latest retained checkpoint.
    replay(failing, next_file, progress=False)
    resumed = start_job(failing)
    got = run_until(failing, expected, resumed)
    assert "resuming from" in resumed.stdout.read()
    assert sorted(p.name for p in markers.iterdir()) == sorted(f"failed-at-{p}" for p in FAILURE_POINTS), \
        "every injected failure happened"
    assert got == expected

    # The same input with no failures gives the same outputs.
    assert run_until(clean, expected, start_job(clean)) == got

    # ClickHouse: the loader resumes from its committed offsets; every row once, equal to the oracle.
    for s in (failing, clean):
        done = subprocess.run([sys.executable, "-m", "stockmax.cli", "load", "--once"], env=cli_env(s),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        with Store(s) as store:
            rows = store.query("rollups_for_symbols", symbol_prefix="")
        assert Counter(map(rollup_values, rows)) == expected["rollups"]


def test_stop_with_savepoint_and_resume_for_an_upgrade(settings, tmp_path):
    tick_file, next_file, expected = input_and_expected(settings, tmp_path)
    s = isolated(settings, tmp_path, "upgrade")
    kafka_io.create_topics(s)
    # The feed keeps flowing while the job is down for its upgrade: half the ticks before, half after.
    rows = pacsv.read_csv(tick_file)
    half = rows.num_rows // 2
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    pacsv.write_csv(rows.slice(0, half), first)
    pacsv.write_csv(rows.slice(half), second)
    replay(s, first, progress=False)
    total = sum(expected["max_updates"].values())

    job = start_job(s)
    deadline = time.monotonic() + 300
    while not len(kafka_io.read_committed_json(s, "max_updates")) > 0:
        assert job.poll() is None, f"the job stopped: {job.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no output was committed"
        time.sleep(0.2)
    wait_for_checkpoints(s, newest_checkpoint(s) + 2, job)  # a little further into the stream
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("stopped with savepoint")]
    assert lines, out
    savepoint = lines[0].rsplit("--from-savepoint ", 1)[1]
    assert (Path(savepoint) / "_metadata").is_file()
    assert sum(kafka_outputs(s)["max_updates"].values()) < total  # it really stopped mid-stream
    replay(s, second, progress=False)
    replay(s, next_file, progress=False)

    # The new version starts from the savepoint and ends with exactly the oracle's outputs.
    resumed = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "run", "--from-savepoint", savepoint],
                               env=cli_env(s), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert run_until(s, expected, resumed) == expected


def test_a_bounded_run_refuses_to_resume_with_a_clear_error(settings, tmp_path):
    s = settings.with_(data_dir=tmp_path / "d")
    kafka_io.create_topics(s)
    fake = s.checkpoint_dir / "job" / "chk-1"
    fake.mkdir(parents=True)
    (fake / "_metadata").write_bytes(b"x")
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", "run", "--bounded"], env=cli_env(s),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot resume" in done.stderr and "FLINK-31006" in done.stderr and "Traceback" not in done.stderr
