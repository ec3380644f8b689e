"""A real single-node Apache Kafka broker (KRaft) run from the jars tools/fetch-jars.sh cached.

Used by `stockmax kafka up|down|status` (make kafka-up / kafka-down), by `make run` and by the tests.
It listens on loopback only, and is configured so that transactions work on one node.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings, jaas_quote

# The broker's ceiling for a producer's transaction.timeout.ms. Flink's KafkaSink asks for
# Settings.kafka_transaction_timeout_ms (15 min by default), which must not exceed this.
TRANSACTION_MAX_TIMEOUT_MS = 3_600_000


class BrokerError(RuntimeError):
    pass


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url. One starting with '-' would be read as an option by
    Kafka's storage tool (1 in 64 would), so such ids are drawn again, as Kafka's own Uuid.randomUuid does."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def bootstrap_answers(bootstrap: str, timeout_s: float = 5.0, **client_options) -> bool:
    """True when a Kafka broker answers a metadata request at the bootstrap address (client_options:
    security settings, e.g. Settings.kafka_python_options())."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_answers(host or "localhost", int(port)):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 client_id="stockmax-probe", **client_options)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()
    except KafkaError:
        return False


@dataclass
class LocalKafka:
    data_dir: Path  # holds server.properties, the log dirs, the broker's log and its pid file
    jars_dir: Path
    port: int = 9092
    controller_port: int = 0  # 0: a free port
    # SASL/PLAIN users (name -> password) for a broker that requires authentication; empty: PLAINTEXT.
    # The broker itself authenticates inter-broker as the first of them.
    sasl_users: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, data_dir: Path | None = None) -> "LocalKafka":
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        if host not in ("localhost", "127.0.0.1", ""):
            raise BrokerError(f"the local broker listens on loopback only; STOCKMAX_KAFKA_BOOTSTRAP is "
                              f"{settings.kafka_bootstrap}")
        users = ({settings.kafka_sasl_username: settings.kafka_sasl_password}
                 if settings.kafka_security_protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN"
                 else {})
        if settings.kafka_security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT") or \
                settings.kafka_security_protocol == "SASL_PLAINTEXT" and not users:
            raise BrokerError("the local broker speaks PLAINTEXT, or SASL_PLAINTEXT with the PLAIN mechanism; "
                              f"STOCKMAX_KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}")
        return cls(data_dir or settings.data_dir / "kafka", settings.kafka_jars_dir, int(port), sasl_users=users)

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def client_options(self) -> dict:
        """kafka-python options to talk to this broker."""
        if not self.sasl_users:
            return {}
        user, password = next(iter(self.sasl_users.items()))
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": user,
                "sasl_plain_password": password}

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _write_config(self) -> Path:
        if not self.controller_port:
            self.controller_port = free_port()
        logs = self.data_dir / "logs"
        protocol = "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{protocol}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{protocol}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": protocol,
            "log.dirs": str(logs),
            "num.partitions": "1",
            # One node: internal topics with one replica, or consumer groups and transactions never start.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "min.insync.replicas": "1",
            "transaction.max.timeout.ms": str(TRANSACTION_MAX_TIMEOUT_MS),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
        }
        if self.sasl_users:
            user, password = next(iter(self.sasl_users.items()))
            props.update({
                "sasl.enabled.mechanisms": "PLAIN",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f"username={jaas_quote(user)} password={jaas_quote(password)} "
                    + " ".join(f"user_{name}={jaas_quote(secret)}" for name, secret in self.sasl_users.items()) + ";",
            })
        path = self.data_dir / "server.properties"
        path.touch(mode=0o600)  # it holds the users' passwords
        # A .properties file reads a backslash as an escape: write each one doubled.
        path.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items()))
        (self.data_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.log_file}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n")
        return path

    def _java(self, *args: str) -> list[str]:
        jars = sorted(self.jars_dir.glob("*.jar"))
        if not jars:
            raise BrokerError(f"no Kafka jars in {self.jars_dir}: run `make setup` (tools/fetch-jars.sh) first")
        # The whole heap from the start, as Kafka's own kafka-server-start.sh does (-Xms1G -Xmx1G): started at
        # 256 MiB, G1 kept the heap small and ran concurrent cycles all the time while the job's outputs
        # came in, on the same cores as the job (bench/README.md has the runs).
        return ["java", "-Xms1g", "-Xmx1g", "-XX:+UseG1GC",
                f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
                "-cp", os.pathsep.join(map(str, jars)), *args]

    def start(self, timeout_s: float = 60.0) -> None:
        """Format storage if new, start the broker in the background, wait until it answers."""
        if self.running_pid():
            if bootstrap_answers(self.bootstrap, **self.client_options):
                return
            raise BrokerError(f"a broker process ({self.running_pid()}) from {self.data_dir} is running but does "
                              f"not answer at {self.bootstrap}; see {self.log_file}")
        if port_answers("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} is taken by another process; set STOCKMAX_KAFKA_BOOTSTRAP to "
                              f"localhost:<free port> or stop what listens there")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c",
                                            str(config)),
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed: {fmt.stderr.strip() or fmt.stdout.strip()}")
        with open(self.data_dir / "broker.out", "ab") as out:
            proc = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with code {proc.returncode}; see {self.log_file} "
                                  f"and {self.data_dir / 'broker.out'}")
            if bootstrap_answers(self.bootstrap, timeout_s=2, **self.client_options):
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"the Kafka broker did not answer at {self.bootstrap} within {timeout_s:.0f}s; "
                          f"see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker started from this data dir (SIGTERM: a clean shutdown). False if none ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
                if finished:
                    break
            except ChildProcessError:
                pass
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
