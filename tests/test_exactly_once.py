"""Exactly once, proven the way Flink itself is tested: with failures in the middle of the stream.

`stockmax run` (unbounded, as in production) fails three times on purpose (STOCKMAX_FAIL_AT_TICKS), and
its process is killed once (SIGKILL of the whole process group, Python and JVM, as a crashed machine
would). Started again, it resumes from the latest retained checkpoint. Its committed outputs must converge
to exactly the oracle's (nothing missing, nothing twice), which a run with no failures gives too
(test_end_to_end and the other tests here).

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

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from cli_env import cli_env
from running_job import (CommittedCounts, group_alive, in_profile, input_and_expected, isolated, kafka_outputs,
                         newest_checkpoint, rollup_values, run_until, start_job, wait_for_checkpoints)
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
    kafka_io.create_topics(failing)
    replay(failing, tick_file, progress=False)

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

    # ClickHouse: the loader resumes from its committed offsets; every row once, equal to the oracle.
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", "load", "--once"], env=cli_env(failing),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with Store(failing) as store:
        rows = store.query("rollups_for_symbols", symbol_prefix="")
    assert Counter(map(rollup_values, rows)) == expected["rollups"]


def stop_with_savepoint(job: subprocess.Popen) -> str:
    """SIGTERM, as an operator stops the job for an upgrade; the savepoint it says it left."""
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("stopped with savepoint")]
    assert lines, out
    savepoint = lines[0].rsplit("--from-savepoint ", 1)[1]
    assert (Path(savepoint) / "_metadata").is_file()
    return savepoint


def resume(s, savepoint: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stockmax.cli", "run", "--from-savepoint", savepoint],
                            env=cli_env(s), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_stop_with_savepoint_rescale_and_resume(settings, tmp_path):
    """The upgrade path, and a change of parallelism on it: stopped with a savepoint at parallelism 1,
    resumed at 2, stopped again, resumed at 1, while the feed keeps flowing. Every symbol's windows, dedup
    memory and open rollup buckets carry over (the keys are the partitions' keys, which do not depend on the
    parallelism): the outputs equal the oracle's exactly, and ticks sent again after each restart are
    duplicates (remembered across it), not late ticks and not applied."""
    tick_file, next_file, expected = input_and_expected(settings, tmp_path)
    s = isolated(settings, tmp_path, "upgrade", parallelism=1)
    kafka_io.create_topics(s)
    rows = pacsv.read_csv(tick_file)
    third = rows.num_rows // 3
    parts = []
    for i, (begin, end) in enumerate(((0, third), (third, 2 * third), (2 * third, rows.num_rows))):
        # After a restart, the feed first sends the 20 ticks before it again (a feed handler reconnecting).
        again = rows.slice(begin - 20, 20) if begin else rows.slice(0, 0)
        parts.append(tmp_path / f"part-{i}.csv")
        pacsv.write_csv(pa.concat_tables([again, rows.slice(begin, end - begin)]).combine_chunks(), parts[-1])
    replay(s, parts[0], progress=False)
    total = sum(expected["max_updates"].values())

    job = start_job(s)
    for part, parallelism in ((parts[1], 2), (parts[2], 1)):
        deadline = time.monotonic() + 300
        with CommittedCounts(s, ("max_updates",)) as counts:
            committed = counts.poll()["max_updates"]
            while not counts.poll()["max_updates"] > committed:
                assert job.poll() is None, f"the job stopped: {job.stderr.read()[-3000:]}"
                assert time.monotonic() < deadline, "no output was committed"
                time.sleep(0.2)
        wait_for_checkpoints(s, newest_checkpoint(s) + 2, job)  # a little further into the stream
        log = next((s.data_dir / "logs").glob("flink-*.log")).read_text(errors="replace")  # this attempt's
        assert ("sliding max/min" in log and f"({s.parallelism}/{s.parallelism})" in log
                and (s.parallelism == 2) == ("(2/2)" in log)), "the keyed step runs at the asked parallelism"
        savepoint = stop_with_savepoint(job)
        assert sum(kafka_outputs(s)["max_updates"].values()) < total  # it really stopped mid-stream
        replay(s, part, progress=False)
        s = s.with_(parallelism=parallelism)
        job = resume(s, savepoint)
    replay(s, next_file, progress=False)
    assert run_until(s, expected, job) == expected
    assert len(kafka_io.read_committed_json(s, "duplicates")) == 40


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
