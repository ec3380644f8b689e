"""`stockmax submit`, `savepoint` and `cancel` against a real standalone Flink cluster (a JobManager and two
TaskManagers started from the apache-flink wheel's own scripts, configured from flink-conf/config.yaml):
the job runs with stockmax's settings at parallelism 2 over 4 partitions, one TaskManager is killed mid-run
and the job fails over to the other, its committed outputs equal the oracle's, and `stockmax load` fills
ClickHouse from them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from cli_env import cli_env
from running_job import CommittedCounts, expected_outputs, isolated, kafka_outputs, rollup_values, with_next_ticks
from stockmax import config, kafka_io, sample
from stockmax.cluster import _rest, flink_command, job_status
from stockmax.kafka_local import free_port, port_answers
from stockmax.replay import replay
from stockmax.store import Store

pytestmark = pytest.mark.e2e


TASKMANAGERS = 2


@contextlib.contextmanager
def standalone_flink(folder: Path):
    """A JobManager and TASKMANAGERS TaskManagers (2 slots each) on loopback, with the project's cluster
    configuration (ports, memory and paths made local; a lost TaskManager noticed within seconds). Yields the
    REST address."""
    conf_dir, log_dir = folder / "conf", folder / "log"
    shutil.copytree(flink_command().parent.parent / "conf", conf_dir)
    log_dir.mkdir()
    conf = yaml.safe_load((config.PROJECT_ROOT / "flink-conf" / "config.yaml").read_text())
    rest_port = free_port()
    conf["jobmanager"].update({"bind-host": "localhost", "rpc": {"address": "localhost", "port": free_port()},
                               "memory": {"process": {"size": "1024m"}}})
    conf["taskmanager"].update({"bind-host": "localhost", "host": "localhost", "numberOfTaskSlots": 2,
                                "memory": {"process": {"size": "1280m"}}})
    # A subtask on each TaskManager (not both in the first one's slots); a killed one noticed in seconds.
    conf["taskmanager"]["load-balance"] = {"mode": "SLOTS"}
    conf["heartbeat"] = {"interval": 1000, "timeout": 6000}
    conf["rest"] = {"address": "localhost", "bind-address": "localhost", "port": rest_port}
    conf["execution"]["checkpointing"].update({"dir": (folder / "checkpoints").as_uri(),
                                               "savepoint-dir": (folder / "savepoints").as_uri()})
    conf["python"]["executable"] = conf["python"]["client"]["executable"] = sys.executable
    metrics_port = free_port()  # the JobManager's; the TaskManager takes the next free one of the range
    conf["metrics"]["reporter"]["prom"]["port"] = f"{metrics_port}-{metrics_port + 20}"
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "FLINK_CONF_DIR": str(conf_dir), "FLINK_LOG_DIR": str(log_dir), "FLINK_PID_DIR": str(folder)}
    env = {k: v for k, v in env.items() if not k.startswith("PYFLINK_")}
    scripts = flink_command().parent
    try:
        for script in ("jobmanager.sh", *["taskmanager.sh"] * TASKMANAGERS):
            subprocess.run([str(scripts / script), "start"], env=env, check=True, capture_output=True, timeout=120)
        deadline = time.monotonic() + 120
        while not port_answers("127.0.0.1", rest_port):
            assert time.monotonic() < deadline, f"the JobManager did not start; see {log_dir}"
            time.sleep(0.5)
        yield f"localhost:{rest_port}"
    finally:
        subprocess.run([str(scripts / "taskmanager.sh"), "stop-all"], env=env, capture_output=True, timeout=120)
        subprocess.run([str(scripts / "jobmanager.sh"), "stop"], env=env, capture_output=True, timeout=120)


def stockmax(settings, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stockmax {' '.join(args)}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


def completed_checkpoints(settings, job_id: str) -> int:
    return _rest(settings, "GET", f"/jobs/{job_id}/checkpoints")["counts"]["completed"]


def taskmanagers_of(settings, job_id: str) -> set[str]:
    """The TaskManagers the job's keyed step runs on now."""
    vertices = _rest(settings, "GET", f"/jobs/{job_id}")["vertices"]
    keyed = next(v for v in vertices if "sliding max/min" in v["name"])
    answer = _rest(settings, "GET", f"/jobs/{job_id}/vertices/{keyed['id']}/taskmanagers")
    print("taskmanagers:", [(tm["taskmanager-id"], tm["status"]) for tm in answer["taskmanagers"]])  # shown on failure
    return {tm["taskmanager-id"] for tm in answer["taskmanagers"] if tm["status"] == "RUNNING"}


def test_two_taskmanagers_one_killed_mid_run_then_savepoint_and_cancel(settings, tmp_path):
    """Submitted with settings other than the defaults, the job runs with them (read back from the cluster's
    REST API) at parallelism 2 over 4 partitions, a subtask on each of two TaskManagers. One TaskManager is
    SIGKILLed mid-run: the job restarts from its last checkpoint on the other's slots, and its committed
    outputs equal the oracle's, every one exactly once."""
    data = sample.generate(symbols=8, duration_s=180, ticks_per_second=4, spikes_per_symbol=3, seed=71,
                           max_delay_ms=sample.delay_within(settings.watermark_bound_ms)).to_pylist()
    first_file, rest_file = tmp_path / "first.csv", tmp_path / "rest.csv"
    everything = with_next_ticks(data)
    pacsv.write_csv(pa.Table.from_pylist(everything[:len(data) // 2]), first_file)
    pacsv.write_csv(pa.Table.from_pylist(everything[len(data) // 2:]), rest_file)
    with standalone_flink(tmp_path / "flink") as rest:
        s = isolated(settings, tmp_path, "cluster", flink_rest_address=rest, cluster_python=sys.executable,
                     parallelism=2, topic_partitions=4, checkpoint_interval_ms=700, restart_attempts=7,
                     watermark_interval_ms=500, python_bundle_size=4000, python_bundle_time_ms=700)
        expected = expected_outputs(s, data)
        # Before its topics exist, a submit says so, and submits nothing.
        done = subprocess.run([sys.executable, "-m", "stockmax.cli", "submit"], env=cli_env(s), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1 and "do not exist" in done.stderr and "stockmax topics create" in done.stderr
        assert "Traceback" not in done.stderr and _rest(s, "GET", "/jobs/overview")["jobs"] == []
        kafka_io.create_topics(s)
        replay(s, first_file, progress=False)

        job_id = stockmax(s, "submit").stdout.strip()
        assert len(job_id) == 32, job_id
        # What the cluster says the job runs with: the settings, not the cluster's defaults (parallelism 1,
        # no checkpoints, no restarts).
        job_config = _rest(s, "GET", f"/jobs/{job_id}/config")["execution-config"]
        assert job_config["job-parallelism"] == 2 and job_config["object-reuse-mode"] is True, job_config
        assert job_config["restart-strategy"].startswith("Restart with exponential delay"), job_config
        checkpoints = _rest(s, "GET", f"/jobs/{job_id}/checkpoints/config")
        assert (checkpoints["mode"], checkpoints["interval"]) == ("exactly_once", 700), checkpoints
        assert checkpoints["externalization"] == {"enabled": True, "delete_on_cancellation": False}, checkpoints
        assert [vertex["parallelism"] for vertex in _rest(s, "GET", f"/jobs/{job_id}")["vertices"]] == [2, 2]
        deadline = time.monotonic() + 300

        def wait_for(condition, what: str) -> None:
            while not condition():
                assert job_status(s, job_id) in ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING"), job_status(s, job_id)
                assert time.monotonic() < deadline, f"{what} did not happen"
                time.sleep(0.5)

        wait_for(lambda: len(taskmanagers_of(s, job_id)) == 2, "a subtask running on each TaskManager")
        with CommittedCounts(s, ("max_updates",)) as counts:
            wait_for(lambda: counts.poll()["max_updates"] > 0 and completed_checkpoints(s, job_id) > 0,
                     "the first outputs committed")
        # Mid-run: one TaskManager killed (its process, without warning), then the rest of the input.
        pids = [int(p) for p in (tmp_path / "flink").glob("flink-*-taskexecutor.pid").__next__().read_text().split()]
        assert len(pids) == TASKMANAGERS, pids
        os.kill(pids[-1], signal.SIGKILL)
        replay(s, rest_file, progress=False)
        wait_for(lambda: len(taskmanagers_of(s, job_id)) == 1 and job_status(s, job_id) == "RUNNING",
                 "the job running again on the remaining TaskManager")
        sizes = {k: sum(v.values()) for k, v in expected.items() if isinstance(v, Counter)}
        with CommittedCounts(s, tuple(sizes)) as counts:
            wait_for(lambda: all(counts.poll()[k] >= n for k, n in sizes.items()), "the cluster job's outputs converging")
        # Two more checkpoints complete: anything still to come (a record twice, say) would be committed by then.
        last = completed_checkpoints(s, job_id)
        wait_for(lambda: completed_checkpoints(s, job_id) >= last + 2, "two more checkpoints")
        assert kafka_outputs(s) == expected
        assert job_status(s, job_id) == "RUNNING"
        assert _rest(s, "GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"], \
            "the TaskManager's loss should be in the job's exception history"

        location = stockmax(s, "savepoint", job_id).stdout.strip()
        assert (Path(location.removeprefix("file:")) / "_metadata").is_file(), location
        assert stockmax(s, "cancel", job_id).stdout.strip() == f"job {job_id}: CANCELED"

    # The loader fills ClickHouse from what the cluster job committed.
    stockmax(s, "load", "--once")
    with Store(s) as store:
        assert Counter(map(rollup_values, store.query("rollups_for_symbols", symbol_prefix=""))) == expected["rollups"]


def test_cluster_commands_say_clearly_when_no_cluster_answers(settings, tmp_path):
    s = settings.with_(data_dir=tmp_path / "d", flink_rest_address=f"localhost:{free_port()}")
    for args in (["submit"], ["cancel", "0" * 32], ["savepoint", "0" * 32]):
        done = subprocess.run([sys.executable, "-m", "stockmax.cli", *args], env=cli_env(s), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "no Flink cluster answers at" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
