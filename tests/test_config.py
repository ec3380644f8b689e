from pathlib import Path

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
