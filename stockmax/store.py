"""ClickHouse through clickhouse-connect: the embedded chDB engine (chdb://) or a server (http(s)://).

The same code serves both. DDL lives in sql/migrations, queries in sql/queries (one definition each).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from .config import Settings, package_data

SQL_DIR = package_data("sql")
# What the loader inserts, as Arrow (sql/migrations has the tables): a whole batch goes to ClickHouse as one
# Arrow block, no Python object per value. Times are epoch µs; ClickHouse reads an Arrow int64 into a
# DateTime64 column as seconds, a timestamp('us') as what it is.
_TIME = pa.timestamp("us", tz="UTC")
ROLLUP_SCHEMA = pa.schema([("symbol", pa.string()), ("resolution_s", pa.uint32()), ("bucket_start", _TIME),
                           ("open", pa.float64()), ("high", pa.float64()), ("high_time", _TIME),
                           ("low", pa.float64()), ("low_time", _TIME), ("close", pa.float64()),
                           ("count", pa.uint64()), ("volume", pa.float64()), ("vwap", pa.float64())])
TICK_SCHEMA = pa.schema([("symbol", pa.string()), ("event_time", _TIME), ("exchange", pa.string()),
                         ("seq", pa.uint64()), ("price", pa.float64()), ("volume", pa.float64()),
                         ("applied", pa.uint8()), ("version", pa.uint8())])


class StoreError(RuntimeError):
    """The store cannot be used; the message says why and what to do."""


class StoreLockedError(StoreError):
    pass


def query_text(name: str) -> str:
    return (SQL_DIR / "queries" / f"{name}.sql").read_text()


def _process_description(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"process {pid} ({cmd[:200]})"
    except OSError:
        return f"process {pid}"


class _DirectoryLock:
    """One process at a time per embedded data directory (chDB allows no more), with a clear error."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "stockmax.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 32).decode(errors="replace").strip()
            os.close(self._fd)
            who = _process_description(int(holder)) if holder.isdigit() else "another process"
            raise StoreLockedError(
                f"the embedded ClickHouse store {directory} is in use by {who}. The embedded engine allows one "
                f"process per directory: stop that process, or set STOCKMAX_CLICKHOUSE_DSN to another "
                f"chdb:///<dir> or to a ClickHouse server (http://host:8123)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def server_options(settings: Settings) -> dict:
    """Credentials and TLS for a ClickHouse server (none apply to the embedded engine)."""
    if settings.store_dsn.startswith("chdb://"):
        return {}
    options = {}
    if settings.clickhouse_username:
        options["username"] = settings.clickhouse_username
    if settings.clickhouse_password:
        options["password"] = settings.clickhouse_password
    if settings.clickhouse_ca_cert:
        options["ca_cert"] = settings.clickhouse_ca_cert
    return options


class Store:
    """A connection to the configured ClickHouse, with stockmax's database selected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsn = settings.store_dsn
        self.database = settings.clickhouse_database
        self._lock = None
        # One statement at a time on this connection: the loader inserts while the query service
        # (store_service.py) answers other processes' questions in this same process.
        self.busy = threading.Lock()
        if self.dsn.startswith("chdb://"):
            self._lock = _DirectoryLock(Path(self.dsn[len("chdb://"):]))
        try:
            self.client = clickhouse_connect.get_client(dsn=self.dsn, **server_options(settings))
            self.client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            self.client.database = self.database
        except Exception as exc:  # any driver or engine failure at connect time becomes one clear error
            self.close()
            raise StoreError(f"cannot open ClickHouse at {settings.redacted()['clickhouse_dsn'] or self.dsn}: "
                             f"{settings.scrub(str(exc).splitlines()[0][:300])}") from None

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection must not hide the original error
                pass
            self.client = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply sql/migrations/*.sql in order; each is idempotent (IF NOT EXISTS, MODIFY). Returns what ran.
        {raw_ticks_ttl_days} in a migration is the setting (a validated integer)."""
        applied = []
        for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
            text = path.read_text().replace("{raw_ticks_ttl_days}", str(int(self.settings.raw_ticks_ttl_days)))
            self.client.command(text, settings={"materialize_ttl_after_modify": 0})
            applied.append(path.name)
        return applied

    # -- writes -----------------------------------------------------------------------------------
    def insert_rollups(self, rows: list[dict] | pa.Table) -> None:
        """Insert closed buckets: dicts or a table with ROLLUP_SCHEMA's columns (times as epoch µs or as
        timestamps). Idempotent (see sql/migrations/001_rollups.sql), so a caller may retry freely; the loader does, with
        backoff. Raises StoreError when the store refuses them."""
        self._insert("rollups", ROLLUP_SCHEMA, rows)

    def insert_ticks(self, rows: list[dict] | pa.Table) -> None:
        """Insert raw ticks (TICK_SCHEMA's columns); idempotent like insert_rollups (sql/migrations/002_ticks.sql)."""
        self._insert("ticks", TICK_SCHEMA, rows)

    def _insert(self, table: str, schema: pa.Schema, rows: list[dict] | pa.Table) -> None:
        data = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        if data.num_rows == 0:
            return
        try:
            with self.busy:
                self.client.insert_arrow(table, data.select(schema.names).cast(schema))
        except (ClickHouseError, OSError) as exc:
            raise StoreError(f"inserting {data.num_rows} rows into {table} failed: "
                             f"{self.settings.scrub(str(exc))}") from exc

    # -- reads ------------------------------------------------------------------------------------
    def query(self, name: str, **parameters) -> list[dict]:
        """Run sql/queries/<name>.sql with bound parameters; rows as dicts."""
        with self.busy:
            result = self.client.query(query_text(name), parameters=parameters)
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def rows(self, sql: str, parameters: dict) -> list[tuple]:
        """Rows of a statement built from sql/queries (history.py), as tuples."""
        with self.busy:
            return self.client.query(sql, parameters=parameters).result_rows
