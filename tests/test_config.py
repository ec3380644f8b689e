import subprocess
import sys

import pytest

from stockmax import config


def test_defaults():
    s = config.load(env={})
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.store_dsn == f"chdb://{(s.data_dir / 'clickhouse').resolve()}"
    assert s.topic("ticks") == "ticks" and s.topic("dead") == "ticks-dead"


def test_environment_overrides_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "stockmax.toml"
    path.write_text('kafka_bootstrap = "filehost:9092"\nparallelism = 2\ntopic_prefix = "x-"\n')
    s = config.load(path, env={"STOCKMAX_PARALLELISM": "3", "STOCKMAX_DATA_DIR": str(tmp_path / "d")})
    assert (s.kafka_bootstrap, s.parallelism, s.data_dir) == ("filehost:9092", 3, tmp_path / "d")
    assert s.topic("alerts") == "x-alerts"


def test_config_file_from_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("spike_threshold_pct = 3.5\n")
    assert config.load(env={"STOCKMAX_CONFIG": str(path)}).spike_threshold_pct == 3.5


@pytest.mark.parametrize("env, message", [
    ({"STOCKMAX_PARALLELISM": "two"}, "parallelism must be int"),
    ({"STOCKMAX_PARALLELISM": "0"}, "parallelism must be positive"),
    ({"STOCKMAX_SPIKE_THRESHOLD_PCT": "150"}, "spike_threshold_pct"),
    ({"STOCKMAX_CLICKHOUSE_DSN": "mysql://x"}, "clickhouse_dsn must start with"),
    ({"STOCKMAX_CONFIG": "/nonexistent/stockmax.toml"}, "does not exist"),
    ({"STOCKMAX_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka_security_protocol must be one of"),
    ({"STOCKMAX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"STOCKMAX_KAFKA_SASL_MECHANISM": "GSSAPI"}, "kafka_sasl_mechanism must be one of"),
    ({"STOCKMAX_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "is not a file"),
    ({"STOCKMAX_EVENT_TIME_FLOOR": "yesterday"}, "event_time_floor"),
    ({"STOCKMAX_MAX_FUTURE_SKEW_MS": str(100 * 86_400_000)}, "under 99 days"),
    ({"STOCKMAX_RESTART_ATTEMPTS": "-1"}, "restart_attempts"),
    ({"STOCKMAX_KAFKA_LINGER_MS": "-5"}, "kafka_linger_ms must be >= 0"),
    ({"STOCKMAX_KAFKA_BATCH_BYTES": "0"}, "kafka_batch_bytes must be positive"),
    ({"STOCKMAX_QUIET_AFTER_MS": "0"}, "quiet_after_ms must be positive"),
    ({"STOCKMAX_TOPIC_RETENTION_MS": "0"}, r"topic_retention_ms must be -1 \(keep\) or positive"),
    ({"STOCKMAX_TOPIC_TICK_BATCHES_RETENTION_MS": "-2"}, r"topic_tick_batches_retention_ms must be -1 \(keep\)"),
    ({"STOCKMAX_QUIET_FEED_LAG_MS": "-1"}, "quiet_feed_lag_ms must be >= 0"),
    ({"STOCKMAX_KAFKA_COMPRESSION": "snappy"}, "kafka_compression must be one of none, lz4, zstd, gzip"),
    ({"STOCKMAX_PYTHON_WORKERS": "thread"}, "python_workers must be one of process, loopback"),
    ({"STOCKMAX_LOCAL_JVM_GC": "zgc"}, "local_jvm_gc must be one of parallel, g1"),
])
def test_bad_settings_are_clear_errors(env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(env=env)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("kafka_bootstrapp = 'x:1'\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'kafka_bootstrapp'"):
        config.load(path, env={})


def test_credentials_are_redacted():
    s = config.load(env={"STOCKMAX_CLICKHOUSE_DSN": "https://user:s3cret@ch.example:8443"})
    assert "s3cret" not in str(s.redacted())


SECRETS = {"STOCKMAX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STOCKMAX_KAFKA_SASL_USERNAME": "trader",
           "STOCKMAX_KAFKA_SASL_PASSWORD": 'pa"ss\\word', "STOCKMAX_CLICKHOUSE_PASSWORD": "ch-secret",
           "STOCKMAX_CLICKHOUSE_DSN": "https://u:dsn-secret@ch.example:8443"}


def test_secrets_reach_the_clients_and_are_never_printed(tmp_path):
    s = config.load(env=SECRETS)
    assert s.kafka_python_options() == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                                        "sasl_plain_username": "trader", "sasl_plain_password": 'pa"ss\\word'}
    assert s.kafka_librdkafka_options() == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                            "sasl.username": "trader", "sasl.password": 'pa"ss\\word'}
    jaas = s.kafka_java_properties()["properties.sasl.jaas.config"]
    # The connector's Kafka client is shaded; quotes and backslashes in the password are escaped for JAAS.
    assert jaas == ('org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule '
                    'required username="trader" password="pa\\"ss\\\\word";')
    shown = subprocess.run([sys.executable, "-m", "stockmax.cli", "config"], capture_output=True, text=True,
                           env={**SECRETS, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "STOCKMAX_KAFKA_SASL_USERNAME" in shown.stdout and "trader" in shown.stdout
    for secret in ('pa"ss', "ch-secret", "dsn-secret"):
        assert secret not in shown.stdout + shown.stderr


def test_every_flink_setting_becomes_a_job_option():
    """flink_env.job_options is the one place settings become Flink options, for local and cluster runs
    (tests/test_cluster.py reads them back from a cluster): each setting it covers shows in its options."""
    from stockmax.flink_env import job_options

    s = config.load(env={}).with_(parallelism=3, checkpoint_interval_ms=750, python_bundle_size=123,
                                  python_bundle_time_ms=45, watermark_interval_ms=67, restart_attempts=9,
                                  job_name="named")
    options = job_options(s)
    assert {key: options[key] for key in ("parallelism.default", "execution.checkpointing.interval",
                                          "python.fn-execution.bundle.size", "python.fn-execution.bundle.time",
                                          "pipeline.auto-watermark-interval", "pipeline.name",
                                          "restart-strategy.exponential-delay.attempts-before-reset-backoff")} == {
        "parallelism.default": "3", "execution.checkpointing.interval": "750 ms",
        "python.fn-execution.bundle.size": "123", "python.fn-execution.bundle.time": "45",
        "pipeline.auto-watermark-interval": "67 ms", "pipeline.name": "named",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": "9"}
    assert job_options(s.with_(restart_attempts=0))["restart-strategy.type"] == "none"


def test_the_settings_reference_is_generated_from_the_settings():
    """docs/settings.md is what `stockmax config --reference` makes of config.py: every setting, documented."""
    from dataclasses import fields

    reference = config.settings_reference()
    assert (config.PROJECT_ROOT / "docs" / "settings.md").read_text() == reference, \
        "docs/settings.md is stale: run `.venv/bin/stockmax config --reference > docs/settings.md`"
    rows = [line for line in reference.split("## Profiles")[0].splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [f.name for f in fields(config.Settings)]
    assert all(not row.endswith("|  |") for row in rows), "a setting without a meaning in config.py"


def test_a_profile_sets_defaults_that_given_settings_override(tmp_path):
    low = config.load(env={"STOCKMAX_PROFILE": "low-latency"})
    assert {k: getattr(low, k) for k in config.PROFILES["low-latency"]} == config.PROFILES["low-latency"]
    given = config.load(env={"STOCKMAX_PROFILE": "low-latency", "STOCKMAX_CHECKPOINT_INTERVAL_MS": "700"})
    assert given.checkpoint_interval_ms == 700
    assert given.watermark_bound_ms == config.PROFILES["low-latency"]["watermark_bound_ms"]
    assert config.load(env={}) == config.load(env={"STOCKMAX_PROFILE": "balanced"}).with_(profile="balanced")
    with pytest.raises(config.ConfigError, match="profile must be one of balanced, low-latency, throughput"):
        config.load(env={"STOCKMAX_PROFILE": "fast"})


def test_how_often_a_symbol_is_written_whole_follows_the_checkpoint_interval():
    """state_rewrite_ms in checkpoints (KeySymbols' rewrite rounds): each profile's, and never below one."""
    rounds = {profile: config.rewrite_rounds(config.load(env={"STOCKMAX_PROFILE": profile}))
              for profile in config.PROFILES}
    assert rounds == {"balanced": 2, "low-latency": 10, "throughput": 1}
    assert config.rewrite_rounds(config.load(env={"STOCKMAX_STATE_REWRITE_MS": "1"})) == 1
    with pytest.raises(config.ConfigError, match="state_rewrite_ms"):
        config.load(env={"STOCKMAX_STATE_REWRITE_MS": "0"})
