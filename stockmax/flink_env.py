"""How stockmax's settings become Flink's: `job_options` for every run of the job, on the local mini-cluster and
on a cluster alike, and `local_configuration` for the mini-cluster of `stockmax run` (its JVM, its Python
workers, its checkpoint folder).

On a cluster the job applies `job_options` itself when it is built (jobs/pipeline.py: main), on top of the
cluster's own configuration (flink-conf/config.yaml: memory, ports, slots, where checkpoints go), however it
was submitted: `stockmax submit` or `flink run -py jobs/pipeline.py` by hand.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

from . import class_archive
from .config import KAFKA_CONNECTOR_JAR, LOCAL_JVM_CLASS_ARCHIVE_DIR, Settings


PROMETHEUS_REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def restart_strategy(settings: Settings) -> dict[str, str]:
    if settings.restart_attempts == 0:
        return {"restart-strategy.type": "none"}
    return {
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "60 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(settings.restart_attempts),
    }


def job_options(settings: Settings) -> dict[str, str]:
    """The Flink options that stockmax's settings make, for the job wherever it runs."""
    return {
        "pipeline.name": settings.job_name,
        "parallelism.default": str(settings.parallelism),
        # Operators chained in the JVM hand records on without a defensive copy (the keyed step's rows go
        # through the split to the sink in one task; nothing here keeps a record after passing it on).
        "pipeline.object-reuse": "true",
        "python.fn-execution.bundle.size": str(settings.python_bundle_size),
        "python.fn-execution.bundle.time": str(settings.python_bundle_time_ms),
        "pipeline.auto-watermark-interval": f"{settings.watermark_interval_ms} ms",
        # The keyed step reads its symbols once per attempt and writes the changed ones at each checkpoint's
        # store mark (KeySymbols): all of a key's at once, so the worker's caches must hold them all (a full
        # write cache would send its entries to the JVM one round trip at a time).
        "python.map-state.read-cache-size": "1000000",
        "python.map-state.write-cache-size": "1000000",
        "execution.checkpointing.interval": f"{settings.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        # Aligned, whatever the cluster says: the keyed step writes its state when GroupRecords' store marks
        # come, and only aligned barriers guarantee that nothing changes it between the last mark and the
        # snapshot.
        "execution.checkpointing.unaligned.enabled": "false",
        # Kept when the job is cancelled or its process dies, so that it can resume from it.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        **restart_strategy(settings),
    }


def configuration(options: dict[str, str]):
    """A pyflink Configuration holding these options."""
    from pyflink.common import Configuration

    conf = Configuration()
    for key, value in options.items():
        conf.set_string(key, value)
    return conf


@contextlib.contextmanager
def _jvm_start_environment(**values: str):
    """Environment variables that PyFlink reads when it starts its JVM, at the first Configuration() of the
    process (no effect later). The user's own values win. They are set only around that start: left set,
    they would pass on to processes this one starts later (another job, with its own data dir)."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def python_boot_launcher(settings: Settings) -> Path:
    """What the local JVM runs as `python.executable` in loopback mode: stockmax/loopback_boot.py instead of
    PyFlink's beam_boot (the same request to this process's worker pool, without beam_boot's ~1 s import
    of Apache Beam on the job's start-up), and this venv's interpreter for anything else."""
    python = shlex.quote(sys.executable)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    launcher = settings.data_dir / "python-boot.sh"
    launcher.write_text(f"""#!/bin/sh
# Written by stockmax (stockmax/flink_env.py, python_boot_launcher) for the local mini-cluster.
if [ "$1" = "-m" ] && [ "$2" = "pyflink.fn_execution.beam.beam_boot" ] && [ -n "$PYTHON_LOOPBACK_SERVER_ADDRESS" ]; then
  shift 2
  exec {python} -m stockmax.loopback_boot "$@"
fi
exec {python} "$@"
""")
    launcher.chmod(0o755)
    return launcher


def local_configuration(settings: Settings, restore_from: str | None = None):
    """The mini-cluster's configuration: job_options, and what only a local run sets (the connector jar, the
    Python workers, the checkpoint folder under data_dir). It starts the JVM when none runs yet.
    restore_from: a retained checkpoint or savepoint to start from."""
    from pyflink import java_gateway

    connector = settings.flink_jar(KAFKA_CONNECTOR_JAR)
    # Read by PyFlink when the environment is made (StreamExecutionEnvironment._open): a worker process per
    # Python step, or, unset, PyFlink's local default, threads of this process (settings.python_workers says
    # why). Left unset for loopback: the variable outlives this call, and "loopback" inherited by a later
    # `flink run` against a cluster would make PyFlink refuse that job.
    if settings.python_workers == "process":
        os.environ["_python_worker_execution_mode"] = "process"
        python = sys.executable
    else:
        os.environ.pop("_python_worker_execution_mode", None)
        python = str(python_boot_launcher(settings).resolve())
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The heap and the garbage collector (Settings.local_jvm_options); and the mini-cluster's log with the
    # job's data, not in the venv's pyflink/log, where every run on the machine overwrote the one before.
    jvm_options = settings.local_jvm_options()
    if settings.local_jvm_class_archive and "JVM_ARGS" not in os.environ and java_gateway._gateway is None:
        # This call starts the JVM: it maps the classes an earlier job loaded (stockmax/class_archive.py).
        jvm_options += " " + class_archive.options(LOCAL_JVM_CLASS_ARCHIVE_DIR)
    options = {
        **job_options(settings),
        "pipeline.jars": connector.resolve().as_uri(),
        "python.executable": python,  # the worker must run this venv's Python, not PATH's
        "python.client.executable": sys.executable,
        "execution.checkpointing.dir": settings.checkpoint_dir.resolve().as_uri(),
        "rest.bind-address": "127.0.0.1",
    }
    jvm_environment = {"JVM_ARGS": jvm_options, "FLINK_LOG_DIR": str(log_dir.resolve())}
    if settings.metrics_port:
        options.update({"metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER_FACTORY,
                        "metrics.reporter.prom.port": settings.metrics_port})
        # The reporter is a plugin the apache-flink wheel ships (pyflink/plugins/metrics-prometheus), but the
        # mini-cluster loads no plugins: its jar goes on the JVM's class path, through the one variable
        # PyFlink's launcher adds to it (a user's own HADOOP_CLASSPATH wins, and then must hold it).
        jvm_environment["HADOOP_CLASSPATH"] = str(prometheus_reporter_jar())
    if restore_from:
        options["execution.state-recovery.path"] = restore_from
    with _jvm_start_environment(**jvm_environment):
        return configuration(options)


def prometheus_reporter_jar() -> Path:
    import pyflink

    jars = sorted((Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError("the apache-flink wheel has no plugins/metrics-prometheus jar: set STOCKMAX_METRICS_PORT= "
                                "(empty) to run without the Prometheus endpoint")
    return jars[-1]
