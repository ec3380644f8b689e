"""Runs the job on the local Flink mini-cluster, with the rollup loader beside it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from . import kafka_io
from .config import Settings
from .loader import RollupLoader
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    rollups_loaded: int


class ResumeError(RuntimeError):
    pass


def _environment(settings: Settings, restore_from: Path | None, bounded: bool):
    """A mini-cluster environment with the pipeline built in, restoring from a checkpoint or savepoint."""
    # Imported here: starting PyFlink starts a JVM, which only the commands that run the job should pay.
    from pyflink.datastream import StreamExecutionEnvironment

    from .jobs.pipeline import build, local_configuration

    conf = local_configuration(settings, restore_from.resolve().as_uri() if restore_from else None)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    build(env, settings, bounded=bounded)
    return env


def latest_resume_point(settings: Settings) -> Path | None:
    """The newest completed checkpoint or savepoint this job name left (a crash, a kill, a bounded run's
    final savepoint), if any."""
    completed = [m.parent for root in (settings.checkpoint_dir, settings.savepoint_dir)
                 for m in root.glob("*/_metadata")] + [m.parent for m in settings.checkpoint_dir.glob("*/chk-*/_metadata")]
    return max(completed, key=lambda p: p.stat().st_mtime_ns) if completed else None


def run(settings: Settings, bounded: bool, restore_from: str | Path | None = None, fresh: bool = False,
        say=log.info) -> RunResult:
    """bounded: process every tick in the topic now, commit all outputs, load all rollups, return.
    Otherwise run until interrupted, loading rollups continuously.

    The job resumes from `restore_from` (a savepoint or checkpoint) if given, else from the latest
    checkpoint or savepoint this job name left behind, unless `fresh`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kafka_io.require_topics(settings)  # before the JVM starts: a clear error, not a failing job
    if restore_from is None and not fresh:
        restore_from = latest_resume_point(settings)
    if restore_from is not None:
        restore_from = Path(restore_from)
        if not (restore_from / "_metadata").is_file():
            raise FileNotFoundError(f"{restore_from} is not a completed checkpoint or savepoint (no _metadata)")
        say(f"resuming from {restore_from}")
    if bounded and restore_from is not None:
        # A bounded KafkaSource restored from a checkpoint or savepoint never finishes (FLINK-31006, open in
        # connector 4.0.1), so a bounded run cannot resume. An unbounded run resumes exactly.
        raise ResumeError(f"a bounded run cannot resume from {restore_from} (Flink's bounded Kafka source never "
                          f"finishes after a restore, FLINK-31006). Resume with `stockmax run` (unbounded), or start "
                          f"over with `stockmax run --bounded --fresh` and a new STOCKMAX_JOB_NAME")
    with Store(settings) as store:
        store.migrate()
        env = _environment(settings, restore_from, bounded)
        loader = RollupLoader(settings, store)
        try:
            if bounded:
                # When the input ends, the job takes a final checkpoint, whose completion commits every
                # output transaction (FLIP-147); then the loader takes what the job committed.
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
