"""The ClickHouse store on the embedded engine: schema, idempotent writes, one process per directory."""

import subprocess
import sys
import textwrap
import time

import pytest

from stockmax.store import Store, StoreError, StoreLockedError

ROW = {"symbol": "AAPL", "resolution_s": 60, "bucket_start": 1767623400000000, "open": 1.0, "high": 2.0,
       "high_time": 1767623401000000, "low": 0.5, "low_time": 1767623402000000, "close": 1.5, "count": 3,
       "volume": 30.0, "vwap": 1.25}


def test_migrate_is_idempotent_and_rewrites_change_nothing(store_settings):
    with Store(store_settings) as store:
        assert store.migrate() == store.migrate()
        other = dict(ROW, symbol="MSFT", vwap=None, volume=0.0)
        store.insert_rollups([ROW, other])
        store.insert_rollups([ROW])  # a retry or a replay after a restart writes the same row again
        rows = store.query("rollups_for_symbols", symbol_prefix="")
    assert [r["symbol"] for r in rows] == ["AAPL", "MSFT"]
    assert {k: rows[0][k] for k in ROW} == ROW
    assert rows[1]["vwap"] is None


def test_data_survives_reopening(store_settings):
    with Store(store_settings) as store:
        store.migrate()
        store.insert_rollups([ROW])
    with Store(store_settings) as store:
        assert store.query("highest_prices", resolution_s=60, symbol_prefix="AA", limit=10)[0]["max_price"] == 2.0


def test_second_process_gets_a_clear_error_naming_the_holder(store_settings):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from stockmax import config
        from stockmax.store import Store
        s = config.load(env={{}}).with_(data_dir=__import__('pathlib').Path({str(store_settings.data_dir)!r}))
        with Store(s):
            print("open", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError) as err:
            Store(store_settings)
        assert f"process {holder.pid}" in str(err.value)
        assert "STOCKMAX_CLICKHOUSE_DSN" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    with Store(store_settings):  # the lock goes with its process
        pass


def test_cli_reports_a_locked_store_without_a_traceback(store_settings):
    with Store(store_settings):
        done = subprocess.run([sys.executable, "-m", "stockmax.cli", "db", "migrate"], capture_output=True, text=True,
                              env={"STOCKMAX_DATA_DIR": str(store_settings.data_dir), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "stockmax: error: the embedded ClickHouse store" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_is_a_clear_error_without_the_credentials(store_settings):
    s = store_settings.with_(clickhouse_dsn="http://analyst:dsn-pass@127.0.0.1:1", clickhouse_password="pw-secret")
    with pytest.raises(StoreError) as caught:
        Store(s)
    text = str(caught.value)
    assert "cannot open ClickHouse at http://***@127.0.0.1:1" in text
    assert "dsn-pass" not in text and "pw-secret" not in text
