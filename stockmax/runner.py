"""Runs the job on the local Flink mini-cluster, with the store loader (rollups, raw ticks) beside it."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import kafka_io
from .config import Settings
from .loader import LoaderProcess, StoreLoader, loader_unless_another
from .progress import BoundedProgress, StatusReporter
from .store import Store, StoreError, StoreLockedError
from .store_service import QueryService

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    rollups_loaded: int
    savepoint: str | None = None
    job_seconds: float | None = None  # a bounded run's time in Flink, from start to the last commit


class ResumeError(RuntimeError):
    pass


def _environment(settings: Settings, restore_from: Path | None, bounded: bool):
    """A mini-cluster environment with the pipeline built in, restoring from a checkpoint or savepoint."""
    # Imported here: starting PyFlink starts a JVM, which only the commands that run the job should pay.
    from pyflink.datastream import StreamExecutionEnvironment

    from .flink_env import local_configuration
    from .jobs.pipeline import build

    conf = local_configuration(settings, restore_from.resolve().as_uri() if restore_from else None)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    build(env, settings, bounded=bounded)
    return env


def latest_resume_point(settings: Settings) -> Path | None:
    """The newest completed checkpoint (left by a crash or a kill) or savepoint (left by a stop) of this
    job name, if any."""
    completed = [m.parent for m in settings.checkpoint_dir.glob("*/chk-*/_metadata")]
    completed += [m.parent for m in settings.savepoint_dir.glob("*/_metadata")]
    return max(completed, key=lambda p: p.stat().st_mtime_ns) if completed else None


def run(settings: Settings, bounded: bool, restore_from: str | Path | None = None, fresh: bool = False,
        load: bool = True, say=log.info, progress: bool = False) -> RunResult:
    """bounded: process every tick in the topic now, commit all outputs, load all rollups, return.
    Otherwise run until interrupted, loading rollups continuously. load=False leaves the rollups in their
    topic for a loader of its own (`stockmax load`), and this process does not open the store.
    progress: a bounded run shows a bar over the ticks topic's records; a live one says a status line
    (stockmax/progress.py) every few seconds.

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
    if not bounded:
        return _run_unbounded(settings, restore_from, load, say, progress)
    with contextlib.ExitStack() as resources:
        loader = None
        if load:
            store = resources.enter_context(Store(settings))
            store.migrate()
            loader = StoreLoader(settings, store)
            resources.callback(loader.close)
            resources.callback(QueryService(store).close)  # history questions from other processes
        # When the input ends, the job takes a final checkpoint, whose completion commits every output
        # transaction (FLIP-147); then the loader takes what the job committed.
        env = _environment(settings, restore_from, bounded=True)
        with BoundedProgress(settings, enabled=progress):
            result = env.execute(settings.job_name)
        if loader:
            loader.drain()
        return RunResult(rollups_loaded=loader.loaded if loader else 0, job_seconds=result.get_net_runtime() / 1000)


def _run_unbounded(settings: Settings, restore_from: Path | None, load: bool, say, progress: bool) -> RunResult:
    """The job until stopped, with the loader in a process of its own (LoaderProcess says why), started
    first: a store that cannot be opened is a clear error before the JVM starts. An embedded store that
    another loader holds (`stockmax serve`'s) is left to it, and taken over if that loader stops: one loader
    per store, and its process answers everyone's history questions (store_service.py)."""
    loader = loader_unless_another(settings, say) if load else None
    loaders = [loader] if loader else []
    try:
        env = _environment(settings, restore_from, bounded=False)
        retry_at = time.monotonic() + 10

        def watch_loader() -> None:
            nonlocal retry_at
            if not load or (loaders and loaders[-1].is_alive()) or time.monotonic() < retry_at:
                return
            if loaders:
                # Unexpected (it retries store and broker failures itself): start another, which resumes
                # from the committed offsets; rows loaded twice fold into one (idempotent inserts).
                say(f"the store loader exited (exit code {loaders[-1].process.exitcode}); starting it again")
            try:
                loaders.append(LoaderProcess(settings))
                if len(loaders) == 1:
                    say("this run now loads the store (the loader that held it stopped)")
            except StoreLockedError:  # another loader still holds it
                retry_at = time.monotonic() + 10
            except StoreError as exc:
                say(f"the store loader could not start again ({exc}); retrying in 10 s")
                retry_at = time.monotonic() + 10

        with StatusReporter(settings, say) if progress else contextlib.nullcontext():
            savepoint = _run_until_stopped(env, settings, say, watch_loader)
    finally:
        if loaders:
            loaders[-1].stop()  # it finishes its batch and stops; then its store closes
    return RunResult(rollups_loaded=sum(loader.loaded for loader in loaders), savepoint=savepoint)


def _run_until_stopped(env, settings: Settings, say, every_half_second=lambda: None) -> str | None:
    """Run the job until it fails for good or is asked to stop (Ctrl-C or SIGTERM). Asked to stop, it
    stops with a savepoint, from which `stockmax run --from-savepoint PATH` (or plain `stockmax run`)
    resumes: the way to upgrade the job without losing or repeating an output."""
    client = env.execute_async(settings.job_name)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            every_half_second()
            if client.get_job_status().result().is_globally_terminal_state():
                client.get_job_execution_result().result()  # raises the job's failure
                return None
        say("stopping with a savepoint ...")
        for attempt in range(60):
            try:
                path = _stop_with_savepoint(client, settings.savepoint_dir.resolve().as_uri(), drain=False)
                say(f"stopped with savepoint {path}; resume with: stockmax run --from-savepoint "
                    f"{path.removeprefix('file:')}")
                return path
            except Exception as exc:  # e.g. the job is restarting after a failure: try again shortly
                say(f"savepoint not taken yet ({str(exc).splitlines()[0][:200]}); retrying")
                time.sleep(1)
        raise RuntimeError("could not stop the job with a savepoint; it is still running")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _stop_with_savepoint(client, directory: str, drain: bool) -> str:
    """JobClient.stopWithSavepoint. PyFlink 2.0's wrapper calls a two-argument Java method that Flink 2.0
    no longer has (it takes a SavepointFormatType too), so the Java client is called directly."""
    from pyflink.java_gateway import get_gateway

    savepoint_format = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.DEFAULT
    return client._j_job_client.stopWithSavepoint(drain, directory, savepoint_format).get()
