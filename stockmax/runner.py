"""Runs the job on the local Flink mini-cluster, with the rollup loader beside it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from . import kafka_io
from .config import Settings
from .loader import RollupLoader
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    rollups_loaded: int


def _environment(settings: Settings):
    # Imported here: starting PyFlink starts a JVM, which only the commands that run the job should pay.
    from pyflink.datastream import StreamExecutionEnvironment

    from .jobs.pipeline import build, local_configuration

    env = StreamExecutionEnvironment.get_execution_environment(local_configuration(settings))
    return env, build


def run(settings: Settings, bounded: bool) -> RunResult:
    """bounded: process every tick in the topic now, commit all outputs, load all rollups, return.
    Otherwise run until interrupted, loading rollups continuously."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kafka_io.require_topics(settings)  # before the JVM starts: a clear error, not a failing job
    with Store(settings) as store:
        store.migrate()
        env, build = _environment(settings)
        build(env, settings, bounded=bounded)
        loader = RollupLoader(settings, store)
        try:
            if bounded:
                # The job's last checkpoint, taken when its input ends, commits every output transaction.
                env.execute(settings.job_name)
                loader.drain()
                return RunResult(rollups_loaded=loader.loaded)
            stop = threading.Event()
            thread = threading.Thread(target=loader.run, args=(stop,), name="rollup-loader", daemon=True)
            thread.start()
            try:
                env.execute(settings.job_name)
            finally:
                stop.set()
                thread.join(timeout=30)
            return RunResult(rollups_loaded=loader.loaded)
        finally:
            loader.close()
