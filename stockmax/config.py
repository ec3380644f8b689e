"""Settings, read in one place: defaults < config file < environment variables (STOCKMAX_<NAME>).

The config file is TOML: `STOCKMAX_CONFIG` names it, else `./stockmax.toml` is read when it exists.
Its keys are the field names below (e.g. `kafka_bootstrap = "host:9092"`); the environment variable for
a field is its name in upper case with the `STOCKMAX_` prefix (e.g. `STOCKMAX_KAFKA_BOOTSTRAP`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .times import parse_utc_us

ENV_PREFIX = "STOCKMAX_"

# The checkout this package runs from (the package is installed editable by `make setup`): flink-conf/ and
# the fetched jars are read from here.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def package_data(name: str) -> Path:
    """schemas/ or sql/: inside the package in an installed wheel (pyproject.toml puts them there), at the
    top of the checkout otherwise."""
    installed = Path(__file__).resolve().parent / name
    return installed if installed.is_dir() else PROJECT_ROOT / name


class ConfigError(ValueError):
    """A setting is missing, unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class Settings:
    # Profile
    # A set of defaults for latency against throughput (PROFILES below; docs/settings.md lists them):
    # "balanced", "low-latency" or "throughput". Settings given in the file or the environment win over it.
    profile: str = "balanced"
    # Local state
    # Where stockmax keeps its state on this machine: the embedded ClickHouse store, the local broker,
    # checkpoints, savepoints and the local Flink log (logs/; FLINK_LOG_DIR overrides).
    data_dir: Path = field(default_factory=lambda: Path.cwd() / ".stockmax")
    # Kafka
    kafka_bootstrap: str = "localhost:9092"  # the brokers, host:port[,host:port...]
    # Security for every client (the job's source and sinks, replay, readers, the loader): PLAINTEXT, SSL,
    # SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    kafka_sasl_username: str = ""  # SASL user
    kafka_sasl_password: str = ""  # secret: never printed or logged
    kafka_ssl_cafile: str = ""  # PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL)
    topic_prefix: str = ""  # prepended to every topic name below (isolates demo and test runs)
    topic_ticks: str = "ticks"  # the input: one JSON tick (or an Arrow batch of ticks) per record
    topic_alerts: str = "alerts"  # spike and threshold alerts
    topic_rollups: str = "rollups"  # closed rollup buckets, for the loader
    topic_late: str = "ticks-late"  # ticks behind the watermark when they arrived, not applied
    topic_dead: str = "ticks-dead"  # refused records, with their reason and original bytes
    topic_max_updates: str = "max-updates"  # a record each time a window's max or min changes
    topic_duplicates: str = "ticks-duplicate"  # repeats of a (symbol, exchange, seq) within the dedup horizon
    topic_tick_batches: str = "tick-batches"  # the ticks the job read, as Arrow batches: the loader's raw ticks
    topic_partitions: int = 2  # partitions of the topics `stockmax topics create` makes
    # Kafka's time retention goes by record timestamps, and stockmax stamps records with event time: a
    # replay of last month's ticks would be deleted at the broker's next retention check. So the topics
    # stockmax creates keep records by default (-1); set a bound in ms to expire them.
    topic_retention_ms: int = -1
    # Only the loader reads tick-batches, and it holds every tick again: it expires by when the broker appended
    # a record (message.timestamp.type LogAppendTime), not by event time, this long after (default 7 days,
    # Kafka's own). A loader stopped longer loses the expired raw ticks (rollups are kept). -1: keep.
    topic_tick_batches_retention_ms: int = 7 * 86_400_000
    # ClickHouse
    # chdb:///<dir> is the embedded engine (one process per dir); http(s)://user:pass@host:port for a
    # server. Empty means chdb:///<data_dir>/clickhouse.
    clickhouse_dsn: str = ""
    clickhouse_database: str = "stockmax"  # the database stockmax's tables live in
    clickhouse_username: str = ""  # for a server; overrides a user in the DSN
    clickhouse_password: str = ""  # secret: never printed or logged
    clickhouse_ca_cert: str = ""  # PEM CA file for an https:// server with a private CA
    # Raw ticks are kept this long after loading (days, 1 .. 3650), for exact `stockmax max` answers at
    # sub-second range edges; rollups are kept for good.
    raw_ticks_ttl_days: int = 35
    # Ticks
    tick_max_bytes: int = 65_536  # larger records go to the dead letters (message_too_large)
    event_time_floor: str = "2000-01-01T00:00:00Z"  # ISO-8601 UTC: earlier event times are refused
    max_future_skew_ms: int = 300_000  # event times further ahead of the job machine's clock are refused
    # Event time
    # How far out of order (in event time, within a partition) a tick may arrive and still be applied: every
    # output waits this long for the ticks before it. Later ticks go to the late topic.
    watermark_bound_ms: int = 500
    source_idleness_ms: int = 5000  # a partition silent this long stops holding back the watermark
    # A live feed that goes quiet (no record from any partition for this long; the time the job spends behind
    # its input does not count): each partition's event time moves on with the wall clock from its newest tick,
    # as late behind the clock as that tick came, so the last ticks' outputs come without waiting for the next
    # tick; after the pause a tick is late only if it comes more than watermark_bound_ms later than its
    # partition's ticks did (docs/semantics.md, quiet feeds).
    quiet_after_ms: int = 1000
    # The quiet-feed rule (quiet_after_ms) moves a feed only while every partition's newest tick came within this
    # many ms of its event time: a replay of history is never moved. 0: the rule is off.
    quiet_feed_lag_ms: int = 60_000
    # What the job computes
    windows: str = "1s,1m,5m,1h"  # sliding max/min windows, each 1ms .. 24h
    spike_threshold_pct: float = 2.0  # a spike alert fires when the price moves this many % within spike_window_ms
    spike_window_ms: int = 1000  # the spike rule's window
    moving_average_ticks: int = 20  # the moving average in max updates is over this many last ticks
    rollup_resolutions: str = "1s,1m,1h"  # rollup bucket sizes, whole seconds each
    dedup_horizon_ms: int = 60_000  # how long a (symbol, exchange, seq) is remembered to drop repeats
    # Per symbol: {"AAPL": {"spike_threshold_pct": 3, "spike_window_ms": 500, "levels": [190, 200]}}.
    # In the config file as [symbol_rules.AAPL] tables; in the environment as JSON.
    symbol_rules: dict = field(default_factory=dict)
    # Flink
    parallelism: int = 1  # the job's parallelism (its keyed step uses at most one subtask per ticks partition)
    checkpoint_interval_ms: int = 1000  # alerts become visible to read_committed readers at each checkpoint
    # Each changed symbol's whole state is written to a checkpoint at least this often; checkpoints in
    # between write the ticks it accepted (a journal, replayed on restore), a share of the symbols rewritten
    # at each. Longer: cheaper checkpoints, a longer replay on restore. At or below the checkpoint interval,
    # every changed symbol is written at every checkpoint.
    state_rewrite_ms: int = 2000
    # Must be <= the broker's transaction.max.timeout.ms (the local broker allows 1 h) and outlive a
    # checkpoint plus a restart, or the broker aborts transactions Flink still means to commit.
    kafka_transaction_timeout_ms: int = 900_000
    # The job's Kafka producers: records gathered into batches of up to this many bytes, waiting up to this
    # long to fill one. Outputs are readable only at the next checkpoint anyway, and with the client's
    # defaults (16 KiB, no wait) the broker spent a core on many small batches.
    kafka_batch_bytes: int = 524_288
    kafka_linger_ms: int = 20  # see kafka_batch_bytes
    # How the job's producers compress output batches: none, lz4, zstd or gzip (kafka-python, the project's
    # readers, decodes these with lz4 / zstandard, both installed). JSON outputs shrink several times with
    # lz4, and the broker's CPU goes with the bytes it moves; lz4 costs the producers less than that saves.
    kafka_compression: str = "lz4"
    # After a failure (a broker away, a crashed worker) the job restarts from its latest checkpoint, waiting
    # 1 s, then twice as long each time up to 60 s; it gives up after this many restarts in a row (0: never
    # restart). A broker outage of several minutes is ridden out.
    restart_attempts: int = 30
    python_bundle_size: int = 10_000  # a Python bundle ends after this many elements (PyFlink)
    python_bundle_time_ms: int = 200  # ... or after this long
    # The ticks topic's records reach the Python step a partition's group at a time (jvm/, GroupRecords): each
    # crossing into Python costs tens of µs, whatever it carries. A group goes at every watermark and
    # checkpoint, or once it holds this many records or bytes of values.
    group_max_records: int = 5000
    group_max_bytes: int = 4 * 1024 * 1024  # see group_max_records
    # The local mini-cluster
    # Where the local mini-cluster runs the Python functions: "loopback", PyFlink's local default, every
    # step in threads of the `stockmax run` process (one GIL; py-spy on that process sees them); or
    # "process", a worker process per Python step, as on a cluster (which always uses processes). On two
    # cores processes were no faster: each worker boots its own Python while the JVM starts.
    python_workers: str = "loopback"
    # How often sources emit watermarks. Each one ends the Python operator's bundle (a crossing and a state
    # commit round), and outputs wait for the next one: latency against throughput (see PROFILES).
    watermark_interval_ms: int = 200
    # Heap of the local mini-cluster's JVM (`stockmax run`): the keyed state lives there. Without a cap
    # the JVM takes a quarter of the machine and lets garbage pile up to it.
    local_jvm_heap_mb: int = 1024
    # Its garbage collector: "parallel" (ParallelGC) or "g1" (the JVM's default). On two cores G1's
    # concurrent work competes with the Python worker and the broker (bench/README.md has the runs).
    local_jvm_gc: str = "parallel"
    # It maps the classes an earlier local job loaded, parsed and verified already, from an archive that the
    # first local job writes when its process exits (AppCDS; stockmax/class_archive.py, in
    # LOCAL_JVM_CLASS_ARCHIVE_DIR): a job's tasks start sooner after submission.
    local_jvm_class_archive: bool = True
    # Its Prometheus endpoint (Flink's Prometheus reporter, http://HOST:PORT/metrics): Flink's metrics and
    # the job's own (docs/operations.md lists them). A port, or a range ("9249-9259": the first free one, so
    # that several local jobs can run); "" turns it off. It listens on every interface (the reporter has no
    # host option). A cluster sets its own (flink-conf/config.yaml).
    metrics_port: str = "9249-9259"
    # The read side
    # Where `stockmax serve` listens (HTTP API, WebSocket stream, live page).
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000  # see serve_host
    # Bearer tokens the API accepts, comma-separated (secret); empty: no authentication. Browsers and
    # WebSocket clients may give theirs as ?token=. /healthz and /metrics stay open.
    api_tokens: str = ""
    serve_alerts_kept: int = 10_000  # how many of the last alerts read `GET /api/v1/alerts` answers from (memory)
    # A WebSocket client's backlog of alerts and price bars it has not taken yet; a client further behind
    # is disconnected (alerts are never dropped). Max updates are coalesced: only each window's newest waits.
    serve_client_backlog: int = 1000
    # Jobs and clusters
    job_name: str = "stockmax"  # also the consumer group, the transactional-id prefix and the checkpoint folder
    # Testing only: make the job fail once at each of these tick counts (per attempt of the keyed
    # operator), e.g. "3000,9000", to prove recovery. Each point fails once; markers under data_dir.
    fail_at_ticks: str = ""
    # A Flink cluster (`stockmax submit`, `cancel`, `savepoint`): its JobManager's REST address, and the
    # Python on its TaskManagers that has stockmax's dependencies (the docker-compose image's python3).
    flink_rest_address: str = "localhost:8081"
    cluster_python: str = "python3"  # see flink_rest_address
    # Where tools/fetch-jars.sh put the Flink Kafka connector and built stockmax's functions (jvm/).
    flink_jars_dir: Path = PROJECT_ROOT / ".cache" / "jars" / "flink"
    kafka_jars_dir: Path = PROJECT_ROOT / ".cache" / "jars" / "kafka"  # the Kafka broker's jars (stockmax kafka up)

    # -- derived values ---------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for one of: ticks, alerts, max_updates, rollups, late, duplicates, dead,
        tick_batches."""
        return self.topic_prefix + getattr(self, f"topic_{name}")

    def flink_jar(self, pattern: str) -> Path:
        """The jar in flink_jars_dir matching pattern (the newest name, should several): the Kafka connector
        (flink-sql-connector-kafka-*.jar) or stockmax's own functions (stockmax-flink-functions.jar)."""
        jars = sorted(self.flink_jars_dir.glob(pattern))
        if not jars:
            raise FileNotFoundError(f"{pattern} is not in {self.flink_jars_dir}: run `make setup` (tools/fetch-jars.sh "
                                    f"fetches the connector and builds stockmax's functions from jvm/ with Maven)")
        return jars[-1]

    @property
    def store_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def checkpoint_dir(self) -> Path:
        """Where this job's checkpoints are kept (one folder per job name, then per Flink job id)."""
        return self.data_dir / "checkpoints" / self.job_name

    @property
    def savepoint_dir(self) -> Path:
        return self.data_dir / "savepoints" / self.job_name

    def quiet_flush_ms(self) -> int:
        """About how long after a silent live feed's last tick was read its outputs are committed, by the
        quiet-feed rule (docs/semantics.md): the silence (or the bound, if longer), a check, a Python bundle,
        and the checkpoint after (two intervals: one may be under way). A bucket still open then closes once
        its end is this far behind."""
        return (max(self.quiet_after_ms, self.watermark_bound_ms) + self.watermark_interval_ms
                + self.python_bundle_time_ms + 2 * self.checkpoint_interval_ms)

    def failure_points(self) -> tuple[int, ...]:
        return tuple(sorted(int(p) for p in self.fail_at_ticks.split(",") if p.strip()))

    def rollup_resolutions_seconds(self) -> tuple[int, ...]:
        from .operators.durations import parse_windows

        resolutions = parse_windows(self.rollup_resolutions)
        if any(r % 1_000_000 for r in resolutions):
            raise ValueError(f"rollup resolutions must be whole seconds: {self.rollup_resolutions!r}")
        return tuple(r // 1_000_000 for r in resolutions)

    def tick_limits(self):
        """The tick parser's bounds (stockmax.operators.tick.TickLimits)."""
        from .operators.tick import TickLimits

        return TickLimits(max_bytes=self.tick_max_bytes, min_event_time_us=parse_utc_us(self.event_time_floor),
                          max_future_skew_us=self.max_future_skew_ms * 1000)

    def rules(self):
        """The operators' view of these settings (stockmax.operators.symbol.Rules)."""
        from .operators.durations import parse_windows
        from .operators.symbol import Rules

        overrides = {}
        for symbol, rule in self.symbol_rules.items():
            override = {}
            if "spike_threshold_pct" in rule:
                override["spike_threshold_pct"] = float(rule["spike_threshold_pct"])
            if "spike_window_ms" in rule:
                override["spike_window_us"] = int(rule["spike_window_ms"]) * 1000
            if "levels" in rule:
                override["levels"] = tuple(float(level) for level in rule["levels"])
            overrides[symbol] = override
        return Rules(windows_us=parse_windows(self.windows), spike_threshold_pct=self.spike_threshold_pct,
                     spike_window_us=self.spike_window_ms * 1000,
                     levels=(), moving_average_ticks=self.moving_average_ticks,
                     rollup_resolutions_s=self.rollup_resolutions_seconds(),
                     dedup_horizon_us=self.dedup_horizon_ms * 1000,
                     watermark_bound_us=self.watermark_bound_ms * 1000, overrides=overrides)

    def local_jvm_options(self) -> str:
        """The local mini-cluster JVM's options (PyFlink reads them from JVM_ARGS when it starts that JVM)."""
        return f"-Xmx{self.local_jvm_heap_mb}m {LOCAL_JVM_GCS[self.local_jvm_gc]}"

    def kafka_python_options(self) -> dict:
        """Security options for kafka-python clients."""
        options: dict = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password)
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options

    def kafka_librdkafka_options(self) -> dict[str, str]:
        """The same security options for librdkafka (confluent-kafka, the store loader's reader)."""
        options = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            options.update({"sasl.mechanism": self.kafka_sasl_mechanism, "sasl.username": self.kafka_sasl_username,
                            "sasl.password": self.kafka_sasl_password})
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile:
            options["ssl.ca.location"] = self.kafka_ssl_cafile
        return options

    def kafka_java_properties(self) -> dict[str, str]:
        """The same security options as Kafka client properties for Flink's Kafka connector (table option
        names, with the `properties.` prefix). Flink masks jaas.config values in what it prints."""
        props = {"properties.security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            # flink-sql-connector-kafka shades the Kafka client: its login modules carry the shaded package.
            module = {"PLAIN": "plain.PlainLoginModule"}.get(self.kafka_sasl_mechanism, "scram.ScramLoginModule")
            props["properties.sasl.mechanism"] = self.kafka_sasl_mechanism
            props["properties.sasl.jaas.config"] = (
                f"org.apache.flink.kafka.shaded.org.apache.kafka.common.security.{module} required "
                f"username={jaas_quote(self.kafka_sasl_username)} password={jaas_quote(self.kafka_sasl_password)};")
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile:
            props["properties.ssl.truststore.type"] = "PEM"
            props["properties.ssl.truststore.location"] = self.kafka_ssl_cafile
        return props

    def with_(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, str]:
        """All settings as text, with secrets and credentials in the DSN hidden (for printing)."""
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        for name in SECRET_SETTINGS:
            out[name] = "***" if out[name] else ""
        out["clickhouse_dsn"] = _redact_dsn(out["clickhouse_dsn"])
        return out

    def scrub(self, text: str) -> str:
        """Text (an error from a client library, say) with every secret of these settings masked."""
        secrets = [getattr(self, name) for name in SECRET_SETTINGS] + self.api_tokens.split(",")
        userinfo = _dsn_userinfo(self.clickhouse_dsn)
        if userinfo:
            secrets += [userinfo, *userinfo.split(":", 1)[1:]]  # user:password, and the password alone
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def environment(settings: Settings) -> dict[str, str]:
    """The STOCKMAX_* variables under which another stockmax process sees exactly these settings."""
    return {ENV_PREFIX + f.name.upper(): json.dumps(getattr(settings, f.name)) if isinstance(getattr(settings, f.name), dict)
            else str(getattr(settings, f.name)) for f in fields(settings)}


def jaas_quote(text: str) -> str:
    """A value in a JAAS login configuration: in double quotes, with quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


SECRET_SETTINGS = ("kafka_sasl_password", "clickhouse_password", "api_tokens")


def _dsn_userinfo(dsn: str) -> str | None:
    """The user[:password] part of scheme://user:password@host, if any."""
    if "@" in dsn and "://" in dsn:
        return dsn.split("://", 1)[1].rsplit("@", 1)[0]
    return None


def _redact_dsn(dsn: str) -> str:
    userinfo = _dsn_userinfo(dsn)
    if userinfo is not None:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest[len(userinfo) + 1:]}"
    return dsn


def _convert(name: str, kind, raw, source: str):
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, float) or isinstance(raw, bool):
                raise ValueError(raw)
            return int(str(raw).replace("_", ""))
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(str(raw)).expanduser()
        if kind is dict:
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
        return str(raw)
    except ValueError:  # json.JSONDecodeError is one too
        raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {raw!r}") from None


_KINDS = {"int": int, "float": float, "str": str, "Path": Path, "bool": bool, "dict": dict}


def load(config_file: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from defaults, then the config file, then STOCKMAX_* environment variables."""
    env = os.environ if env is None else env
    kinds = {f.name: _KINDS[f.type] for f in fields(Settings)}
    values: dict = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path is None and Path("stockmax.toml").is_file():
        path = "stockmax.toml"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in kinds:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(key, kinds[key], raw, f"config file {path}")

    for key, kind in kinds.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _convert(key, kind, raw, ENV_PREFIX + key.upper())

    profile = values.get("profile", Settings.profile)
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    settings = Settings(**{**PROFILES[profile], **values})
    _validate(settings)
    return settings


# What each profile changes from the defaults above; exactly-once holds in every one. The latency of an output
# is about the watermark bound (ticks wait for it), a watermark and Python bundle interval (when the keyed
# step runs), and a checkpoint interval (outputs are committed at checkpoints); each costs throughput when
# shorter (a bundle end is a crossing and a state round; a checkpoint writes every symbol changed since the
# one before, whatever its tick rate, and snapshots all of them). The defaults ("balanced") keep a default-rate
# feed's outputs within a few seconds; "throughput" is for the highest rates and replays of history.
# "low-latency" holds ticks only 0.1 s for order, enough for a feed handler that stamps ticks as it publishes
# them (the watermark is per partition); a tick arriving later than that goes to the late topic. The
# defaults hold them 0.5 s, "throughput" 1 s (recorded history may be further out of order). A feed silent
# for quiet_after_ms has its last ticks released; their outputs follow within about a checkpoint interval.
PROFILES: dict[str, dict] = {
    "balanced": {},
    "low-latency": {"watermark_bound_ms": 100, "watermark_interval_ms": 50, "python_bundle_time_ms": 50,
                    "checkpoint_interval_ms": 200, "kafka_linger_ms": 5, "source_idleness_ms": 1000,
                    "quiet_after_ms": 300},
    "throughput": {"watermark_bound_ms": 1000, "watermark_interval_ms": 2000, "python_bundle_time_ms": 2000,
                   "python_bundle_size": 50_000, "checkpoint_interval_ms": 5000, "kafka_linger_ms": 50,
                   "quiet_after_ms": 2000},
}


# The jars in flink_jars_dir that the job loads (tools/fetch-jars.sh puts them there).
KAFKA_CONNECTOR_JAR = "flink-sql-connector-kafka-*.jar"
FUNCTIONS_JAR = "stockmax-flink-functions.jar"  # jvm/, built by Maven

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_COMPRESSIONS = ("none", "lz4", "zstd", "gzip")  # snappy left out: kafka-python would need python-snappy
PYTHON_WORKERS = ("process", "loopback")
LOCAL_JVM_GCS = {"parallel": "-XX:+UseParallelGC", "g1": "-XX:+UseG1GC"}  # setting -> JVM option
LOCAL_JVM_CLASS_ARCHIVE_DIR = PROJECT_ROOT / ".cache" / "jvm"  # Settings.local_jvm_class_archive


def _validate(s: Settings) -> None:
    positive = ["tick_max_bytes", "max_future_skew_ms", "topic_partitions", "spike_window_ms", "parallelism",
                "checkpoint_interval_ms", "state_rewrite_ms", "kafka_transaction_timeout_ms", "kafka_batch_bytes",
                "python_bundle_size", "python_bundle_time_ms", "watermark_interval_ms", "local_jvm_heap_mb",
                "quiet_after_ms", "group_max_records", "group_max_bytes", "serve_alerts_kept", "serve_client_backlog"]
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(s, name)}")
    try:
        parse_utc_us(s.event_time_floor)
    except ValueError as exc:
        raise ConfigError(f"event_time_floor: {exc}") from None
    for name in ("watermark_bound_ms", "max_future_skew_ms"):
        if getattr(s, name) >= 99 * 86_400_000:
            raise ConfigError(f"{name} must be under 99 days, got {getattr(s, name)}")
    for name in ("topic_retention_ms", "topic_tick_batches_retention_ms"):
        if getattr(s, name) != -1 and getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be -1 (keep) or positive, got {getattr(s, name)}")
    if not 1 <= s.raw_ticks_ttl_days <= 3650:
        raise ConfigError(f"raw_ticks_ttl_days must be in 1 .. 3650, got {s.raw_ticks_ttl_days}")
    for name in ("restart_attempts", "watermark_bound_ms", "kafka_linger_ms", "quiet_feed_lag_ms"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(s, name)}")
    if not 0 < s.spike_threshold_pct < 100:
        raise ConfigError(f"spike_threshold_pct must be in (0, 100), got {s.spike_threshold_pct}")
    try:
        s.failure_points()
    except ValueError:
        raise ConfigError(f"fail_at_ticks must be comma-separated tick counts, got {s.fail_at_ticks!r}") from None
    if not 0 < s.dedup_horizon_ms:
        raise ConfigError(f"dedup_horizon_ms must be positive, got {s.dedup_horizon_ms}")
    allowed = {"spike_threshold_pct", "spike_window_ms", "levels"}
    for symbol, rule in s.symbol_rules.items():
        if not isinstance(rule, dict) or not set(rule) <= allowed:
            raise ConfigError(f"symbol_rules.{symbol}: allowed keys are {', '.join(sorted(allowed))}; got {rule!r}")
    try:
        rules = s.rules()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"windows, rollup_resolutions or symbol_rules: {exc}") from None
    if max(rules.windows_us) > 24 * 3_600_000_000 or s.spike_window_ms > 24 * 3_600_000:
        raise ConfigError("windows and spike_window_ms must be at most 24h")
    if rules.dedup_horizon_us > rules.idle_gap_us:
        raise ConfigError("dedup_horizon_ms must not exceed the longest window plus watermark_bound_ms")
    for name, allowed_values in (("kafka_security_protocol", KAFKA_SECURITY_PROTOCOLS),
                                 ("kafka_sasl_mechanism", KAFKA_SASL_MECHANISMS),
                                 ("kafka_compression", KAFKA_COMPRESSIONS), ("python_workers", PYTHON_WORKERS),
                                 ("local_jvm_gc", tuple(LOCAL_JVM_GCS))):
        if getattr(s, name) not in allowed_values:
            raise ConfigError(f"{name} must be one of {', '.join(allowed_values)}, got {getattr(s, name)!r}")
    if s.kafka_security_protocol.startswith("SASL") and not (s.kafka_sasl_username and s.kafka_sasl_password):
        raise ConfigError(f"kafka_security_protocol {s.kafka_security_protocol} needs kafka_sasl_username and "
                          f"kafka_sasl_password")
    for name in ("kafka_ssl_cafile", "clickhouse_ca_cert"):
        if getattr(s, name) and not Path(getattr(s, name)).is_file():
            raise ConfigError(f"{name}: {getattr(s, name)} is not a file")
    if s.metrics_port and not re.fullmatch(r"\d{1,5}(-\d{1,5})?", s.metrics_port):
        raise ConfigError(f"metrics_port must be a port (9249), a range (9249-9259) or empty (off), got {s.metrics_port!r}")
    if not 0 < s.serve_port < 65536:
        raise ConfigError(f"serve_port must be in 1 .. 65535, got {s.serve_port}")
    if not (s.store_dsn.startswith("chdb://") or s.store_dsn.startswith(("http://", "https://"))):
        raise ConfigError(f"clickhouse_dsn must start with chdb://, http:// or https://, got {_redact_dsn(s.store_dsn)!r}")



def settings_reference() -> str:
    """docs/settings.md: every setting with its environment variable, default and meaning, made from the
    Settings class above and its comments (the one definition; a test keeps the file equal to this)."""
    import ast
    import io
    import tokenize

    source = Path(__file__).read_text()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    cls = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    defaults = Settings()
    out = ["# Settings", "",
           "Generated from `stockmax/config.py` by `stockmax config --reference` (a test keeps the two equal).",
           "Each setting is read, in this order, from its default, the TOML config file (`--config`,",
           "`$STOCKMAX_CONFIG` or `./stockmax.toml`; keys are the names below) and the environment variable, which",
           "wins. `stockmax config` prints the effective values, secrets as `***`.", ""]
    previous_end = cls.lineno
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        name = node.target.id
        above, line = [], node.lineno - 1
        while line > previous_end and line in comments and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        previous_end = node.end_lineno
        if above and len(above[0].split()) <= 4 and not any(c in above[0] for c in ".,:;("):  # a section's title
            out += ["", f"## {above.pop(0)}", "", "| setting | environment variable | default | meaning |",
                    "|---|---|---|---|"]
        meaning = " ".join(above + ([comments[node.end_lineno]] if node.end_lineno in comments else []))
        value = getattr(defaults, name)
        if name == "data_dir":
            value = "./.stockmax"  # the working directory's
        elif isinstance(value, Path):
            value = "<checkout>/" + str(value.relative_to(PROJECT_ROOT))
        shown = json.dumps(value) if isinstance(value, dict) else str(value)
        out.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | `{shown}` | {meaning.replace('|', '/')} |")
    out += ["", "## Profiles", "", "What each `profile` changes from the defaults above (settings given in the file or the "
            "environment win over it):", "", "| profile | changes |", "|---|---|"]
    out += [f"| `{name}` | {', '.join(f'`{k}` = `{v}`' for k, v in changes.items()) or 'none: the defaults'} |"
            for name, changes in PROFILES.items()]
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


def rewrite_rounds(settings: Settings) -> int:
    """How many checkpoints a changed symbol may wait to be written whole (state_rewrite_ms)."""
    return max(1, round(settings.state_rewrite_ms / settings.checkpoint_interval_ms))
