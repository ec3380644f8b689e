"""History questions from any process, whoever holds the embedded store.

The embedded engine (chdb://) allows one process per data directory. The rule: the process that loads the
store owns it (the loader of `stockmax run`, or of `stockmax serve` when no run loads), and it answers the
other processes' history questions (`stockmax serve`, `stockmax max`, `stockmax bars`) over an
authenticated local connection (multiprocessing.connection: HMAC with a key only this user can read).
The owner writes where to ask into the store's directory (QUERY_FILE) and removes it when it closes.

A ClickHouse server (http(s)://) has no owner: every process opens its own connection.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from multiprocessing.connection import Client, Listener
from pathlib import Path

from . import history
from .config import Settings
from .store import Store, StoreError, StoreLockedError

log = logging.getLogger(__name__)

QUERY_FILE = "stockmax-queries.json"
# The questions an owner answers: history.py's functions, by name.
QUESTIONS = {"highest": history.highest, "bars": history.bars}


def embedded_dir(settings: Settings) -> Path | None:
    dsn = settings.store_dsn
    return Path(dsn[len("chdb://"):]) if dsn.startswith("chdb://") else None


class QueryService:
    """In the owner: answers QUESTIONS on `store` for other processes, one thread per connection, each
    statement under the store's own lock (the loader inserts on the same connection)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        key = secrets.token_bytes(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        self._closed = threading.Event()
        directory = embedded_dir(store.settings)
        self.path = directory / QUERY_FILE if directory else None
        if self.path:
            temporary = self.path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key: this user only
            with os.fdopen(fd, "w") as out:
                json.dump({"port": self._listener.address[1], "key": key.hex(), "pid": os.getpid()}, out)
            os.replace(temporary, self.path)
        threading.Thread(target=self._accept, name="store-queries", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection = self._listener.accept()
            except Exception:  # a caller without the key, or the listener closed
                continue
            threading.Thread(target=self._answer, args=(connection,), name="store-query", daemon=True).start()

    def _answer(self, connection) -> None:
        with connection:
            while True:
                try:
                    name, args = connection.recv()
                except (EOFError, OSError):
                    return
                try:
                    reply = ("ok", QUESTIONS[name](self.store, *args))
                except history.HistoryError as exc:
                    reply = ("not found" if isinstance(exc, history.NotFound) else "history", str(exc))
                except Exception as exc:  # the store failed: the caller gets the reason
                    reply = ("store", self.store.settings.scrub(str(exc).splitlines()[0][:300]))
                try:
                    connection.send(reply)
                except OSError:
                    return

    def close(self) -> None:
        self._closed.set()
        if self.path:
            self.path.unlink(missing_ok=True)
        self._listener.close()


def owner_address(settings: Settings, wait_s: float = 0.0) -> tuple[int, bytes] | None:
    """(port, key) of the embedded store's owner's query service, or None when none is published (within
    wait_s: a loader publishes it a moment after it takes the store)."""
    directory = embedded_dir(settings)
    deadline = time.monotonic() + wait_s
    while directory is not None:
        try:
            published = json.loads((directory / QUERY_FILE).read_text())
            return published["port"], bytes.fromhex(published["key"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
    return None


class RemoteHistory:
    """history.py's questions asked of the store's owner (a few connections kept open, one per caller)."""

    def __init__(self, settings: Settings, address: tuple[int, bytes]) -> None:
        self.settings = settings
        self._port, self._key = address
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._connect().close()  # fail here, clearly, if the owner does not answer

    def _connect(self):
        """A new connection, to the owner published now (the loader may have been restarted, or be
        another process's since)."""
        self._port, self._key = owner_address(self.settings) or (self._port, self._key)
        try:
            return Client(("127.0.0.1", self._port), authkey=self._key)
        except OSError as exc:
            raise StoreError(f"the process holding the embedded store {embedded_dir(self.settings)} does not "
                             f"answer questions ({exc}); is it still running?") from None

    def _ask(self, name: str, *args):
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            connection.send((name, args))
            kind, value = connection.recv()
        except (EOFError, OSError) as exc:
            connection.close()
            raise StoreError(f"the store's owner went away during a question ({type(exc).__name__})") from None
        self._idle.put(connection)
        if kind == "not found":
            raise history.NotFound(value)
        if kind == "history":
            raise history.HistoryError(value)
        if kind == "store":
            raise StoreError(value)
        return value

    def highest(self, symbol: str, start_us: int, end_us: int) -> tuple[float, int]:
        return tuple(self._ask("highest", symbol, start_us, end_us))

    def bars(self, symbol: str, resolution_s: int, start_us: int, end_us: int) -> list[dict]:
        return self._ask("bars", symbol, resolution_s, start_us, end_us)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class LocalHistory:
    """history.py's questions on a store this process opened."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.settings = store.settings

    def highest(self, symbol: str, start_us: int, end_us: int) -> tuple[float, int]:
        return history.highest(self.store, symbol, start_us, end_us)

    def bars(self, symbol: str, resolution_s: int, start_us: int, end_us: int) -> list[dict]:
        return history.bars(self.store, symbol, resolution_s, start_us, end_us)

    def close(self) -> None:
        self.store.close()


def open_history(settings: Settings) -> LocalHistory | RemoteHistory:
    """Where this process asks history questions: the store itself when it can open it (a server, or an
    embedded store nobody holds), else the embedded store's owner."""
    try:
        return LocalHistory(Store(settings))
    except StoreLockedError as locked:
        address = owner_address(settings, wait_s=15)
        if address is None:
            raise StoreLockedError(f"{locked} (that process answers no questions for others: only a loader "
                                   f"does, i.e. `stockmax run`, `stockmax serve` or `stockmax load`)") from None
        return RemoteHistory(settings, address)
