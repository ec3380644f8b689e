"""An unbounded `stockmax run` as a test drives it: started as its own process group, its committed
outputs read back until they reach the oracle's sizes, then stopped with a savepoint (SIGINT)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from cli_env import cli_env
from oracle import alert_key, expected_alerts, expected_max_updates, expected_rollups, update_key
from stockmax import config, kafka_io, sample

CONVERGE_S = 240


def start_job(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stockmax.cli", "run", *args], env=cli_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process of the group exists."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def rollup_values(r: dict) -> tuple:
    """Every field of a rollup row, compared exactly."""
    return (r["symbol"], r["resolution_s"], r["bucket_start"], r["open"], r["high"], r["high_time"], r["low"],
            r["low_time"], r["close"], r["count"], r["volume"], r["vwap"])


def kafka_outputs(settings) -> dict:
    return {
        "alerts": Counter(map(alert_key, kafka_io.read_committed_json(settings, "alerts"))),
        "max_updates": Counter(map(update_key, kafka_io.read_committed_json(settings, "max_updates"))),
        "rollups": Counter(map(rollup_values, kafka_io.read_committed_json(settings, "rollups"))),
        "late": len(kafka_io.read_committed_json(settings, "late")),
    }


class CommittedCounts:
    """How many records of each kind the job has committed so far, read as they come by one read_committed
    consumer: a poll reads what is new, not every output again (which, once a second, took a core's worth of
    the time the job had). What the outputs are is read afresh from the topics (kafka_outputs)."""

    def __init__(self, settings, kinds=("alerts", "max_updates", "rollups")):
        self.kind_of = {settings.topic(kind): kind for kind in kinds}
        self.consumer, _ = kafka_io.committed_reader(settings, list(self.kind_of), group_id=None)
        self.counts = dict.fromkeys(kinds, 0)

    def poll(self) -> dict[str, int]:
        while batch := self.consumer.poll(timeout_ms=100):
            for part, records in batch.items():
                self.counts[self.kind_of[part.topic]] += len(records)
        return dict(self.counts)

    def __enter__(self) -> "CommittedCounts":
        return self

    def __exit__(self, *exc) -> None:
        self.consumer.close()


def run_until(settings, expected: dict, job: subprocess.Popen) -> dict:
    """Wait until the committed outputs reach the expected sizes, then stop the job (SIGINT). On failure the
    job's process group is killed: a failed test leaves nothing running."""
    sizes = {k: sum(v.values()) for k, v in expected.items() if isinstance(v, Counter)}
    deadline = time.monotonic() + CONVERGE_S
    try:
        with CommittedCounts(settings, tuple(sizes)) as counts:
            while True:
                assert job.poll() is None, f"the job stopped: {job.stderr.read()[-3000:]}"
                got = counts.poll()
                if all(got[k] >= n for k, n in sizes.items()):
                    break
                assert time.monotonic() < deadline, f"outputs did not converge: {got} of {sizes}"
                time.sleep(0.5)
        # Two more checkpoints complete: anything still to come (a record twice, say) would be committed by then.
        wait_for_checkpoints(settings, newest_checkpoint(settings) + 2, job)
    except BaseException as failure:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        if isinstance(failure, AssertionError):
            raise AssertionError(f"{failure}\n--- the job's stderr, last lines:\n{job.stderr.read()[-3000:]}"
                                 f"\n--- {flink_log_problems(settings)}") from None
        raise
    got = kafka_outputs(settings)
    job.send_signal(signal.SIGINT)  # stops the job with a savepoint
    job.wait(timeout=120)
    return got


def newest_checkpoint(settings) -> int:
    """The id of the newest completed checkpoint the job has retained (-1: none yet)."""
    return max((int(m.parent.name.removeprefix("chk-")) for m in settings.checkpoint_dir.glob("*/chk-*/_metadata")),
               default=-1)


def wait_for_checkpoints(settings, checkpoint_id: int, job: subprocess.Popen, timeout_s: float = 120) -> None:
    wait_until(lambda: newest_checkpoint(settings) >= checkpoint_id, f"checkpoint {checkpoint_id}", timeout_s, job)


def wait_until(condition, what: str, timeout_s: float, *processes) -> None:
    """Poll a condition (a real outcome, not a delay) until it holds, failing with what was awaited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for process in processes:
            assert process.poll() is None, \
                f"{process.args[3]} stopped while waiting for {what}: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.2)


def flink_log_problems(settings, lines: int = 40) -> str:
    """The last warnings and errors of the job's Flink log (it is kept in the data dir, which pytest keeps)."""
    logs = sorted((settings.data_dir / "logs").glob("flink-*.log"))
    if not logs:
        return f"no Flink log in {settings.data_dir / 'logs'}"
    problems = [line[:400] for line in logs[-1].read_text(errors="replace").splitlines()
                if " WARN " in line or " ERROR " in line]
    return f"{logs[-1]}, last warnings and errors:\n" + "\n".join(problems[-lines:])


def in_profile(settings, profile: str):
    """The settings with a profile's defaults (config.PROFILES), as `STOCKMAX_PROFILE` gives them."""
    return settings.with_(**config.PROFILES[profile], profile=profile)


def isolated(settings, tmp_path, name: str, **changes):
    run = uuid.uuid4().hex[:6]
    return settings.with_(**{"data_dir": tmp_path / name, "topic_prefix": f"{name}-{run}-", "job_name": f"{name}-{run}",
                             "checkpoint_interval_ms": min(500, settings.checkpoint_interval_ms), **changes})


def next_ticks(data: list[dict]) -> list[dict]:
    """Every symbol's next tick two hours after `data` (every partition moves on, as a live feed's would):
    an unbounded job that reads them releases all of `data`, and none of them."""
    later = max(t["event_time"] for t in data) + 2 * 3_600_000_000
    symbols = sorted({t["symbol"] for t in data})
    return [{"symbol": sym, "price": 1.0, "volume": 0.0, "exchange": "X", "seq": 10**9, "event_time": later + i}
            for i, sym in enumerate(symbols)]


def with_next_ticks(data: list[dict]) -> list[dict]:
    return data + next_ticks(data)


def expected_outputs(settings, data: list[dict]) -> dict:
    """The oracle's outputs for `data` (the ticks before with_next_ticks added its own)."""
    rules = settings.rules()
    return {
        "alerts": Counter(map(alert_key, expected_alerts(data, settings.spike_threshold_pct, settings.spike_window_ms))),
        "max_updates": Counter(map(update_key, expected_max_updates(
            data, tuple(w // 1000 for w in rules.windows_us), settings.spike_window_ms, settings.watermark_bound_ms,
            settings.moving_average_ticks))),
        "rollups": Counter(rollup_values(r) for res in rules.rollup_resolutions_s for r in expected_rollups(data, res)),
        "late": 0,
    }


def input_and_expected(settings, tmp_path):
    """A sample as two tick files, its ticks and then next_ticks (the feed moving on), and the oracle's
    outputs. The brute-force oracle takes ~1 min over this sample: tests whose settings give the same sample
    and outputs share them."""
    key = _oracle_inputs(settings)
    if key not in _SAMPLES_AND_ORACLES:
        # Out of order by less than the watermark bound: no tick is late whatever the timing.
        data = sample.generate(symbols=10, duration_s=600, ticks_per_second=5, spikes_per_symbol=4, seed=21,
                               max_delay_ms=min(1500, sample.delay_within(settings.watermark_bound_ms))).to_pylist()
        _SAMPLES_AND_ORACLES[key] = data, expected_outputs(settings, data)
    data, expected = _SAMPLES_AND_ORACLES[key]
    tick_file, next_file = tmp_path / "ticks.csv", tmp_path / "next-ticks.csv"
    pacsv.write_csv(pa.Table.from_pylist(data), tick_file)
    pacsv.write_csv(pa.Table.from_pylist(next_ticks(data)), next_file)
    assert expected["alerts"], "the sample should contain spikes"
    return tick_file, next_file, copy.deepcopy(expected)


_SAMPLES_AND_ORACLES: dict[tuple, tuple[list[dict], dict]] = {}


def _oracle_inputs(settings) -> tuple:
    """Every setting that input_and_expected's sample or expected_outputs reads."""
    rules = settings.rules()
    return (settings.watermark_bound_ms, settings.spike_threshold_pct, settings.spike_window_ms,
            settings.moving_average_ticks, rules.windows_us, rules.rollup_resolutions_s)
