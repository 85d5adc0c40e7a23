"""Engines and the unit of work: one DB transaction around each piece of domain work.

SQLite (the embedded default) runs in WAL mode with synchronous=NORMAL (a commit appends to the
WAL without an fsync; the WAL is synced at checkpoints, so a power cut may lose the last commits
but never corrupts the file) and opens every transaction with BEGIN IMMEDIATE,
so concurrent workers serialise their writes instead of failing on a read-to-write upgrade;
PostgreSQL uses row locks (`SELECT ... FOR UPDATE`). Database trouble that a retry can cure
(locked database, lost connection, serialization failure, deadlock) surfaces as DatabaseUnavailable
(a TransientError); a missing table or column as SchemaNotMigrated (permanent: run `paratro migrate`).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import DatabaseUnavailable, SchemaNotMigrated

NOT_MIGRATED = "database schema is not migrated: run `paratro migrate`"
# SQLite says "no such table/column"; PostgreSQL's SQLSTATEs 42P01 / 42703 say the same.
_MISSING_SCHEMA_TEXT = ("no such table", "no such column")
_MISSING_SCHEMA_SQLSTATE = ("42P01", "42703")

READ_ONLY_OPTION = "paratro_read_only"
LOCK_TIMEOUT_S = 30.0  # how long a unit of work waits for SQLite's write lock
FIRST_PAUSE_S, MAX_PAUSE_S = 0.0002, 0.004  # polling for the write lock (see _begin_immediate)
_lock = threading.Lock()
_databases: dict[tuple[int, str], "Database"] = {}


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Per connection, so per worker process: a 64 MiB page cache instead of the default 2 MiB
        # (the transfer, outbox and event tables' hot pages stay in memory between steps), reads
        # of the file through a 256 MiB memory map instead of read() calls, and temporary
        # b-trees (ORDER BY without an index, IN lists) in memory instead of temp files.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only unit (`Database.reading`) takes no write lock: in WAL mode readers never block
        # the writer, and a long read (a tracker tick over 100,000 rows) must not stall every step.
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        elif not _begin_immediate(connection.connection.driver_connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the last try, with SQLite's busy wait and its error


def _begin_immediate(dbapi_connection: Any, timeout_s: float = LOCK_TIMEOUT_S) -> bool:
    """Take SQLite's write lock, polling every fraction of a millisecond while another process
    holds it. SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries: with several
    worker processes committing a few milliseconds apart, a waiter would sleep on well after the
    lock was free, and the workers would stand idle half the time. False: not taken in time (or
    another error): the caller's last plain try (SQLite's own wait, `timeout_s` more at most)
    then raises SQLite's error, mapped as usual."""
    deadline = time.monotonic() + timeout_s
    pause = FIRST_PAUSE_S
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.Error as exc:  # any other error: the caller's last try raises it, mapped
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    return False
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 1.5, MAX_PAUSE_S)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")


def make_engine(url: str) -> Engine:
    """An engine configured for the pipeline's concurrency on either backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _prepare_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def schema_missing(exc: DBAPIError) -> bool:
    """True if the statement failed because a pipeline table or column does not exist."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate in _MISSING_SCHEMA_SQLSTATE or any(text in str(exc.orig) for text in _MISSING_SCHEMA_TEXT)


def translate_db_error(exc: DBAPIError) -> Exception:
    """The domain error for a driver error: a missing schema is the deployment's fault (permanent);
    an unreachable, locked or lost database is worth a retry (DatabaseUnavailable, transient)."""
    if schema_missing(exc):
        return SchemaNotMigrated(NOT_MIGRATED)
    if isinstance(exc, OperationalError):
        detail = " ".join(str(exc.orig).split())[:200]
        return DatabaseUnavailable(f"database unavailable: {exc.orig.__class__.__name__}: {detail}")
    if exc.connection_invalidated:
        return DatabaseUnavailable("database connection lost")
    return exc


class Database:
    """An engine and its session factory, created once per process (Celery forks workers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(**{READ_ONLY_OPTION: True}),
                                     expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """Commit everything done inside, or nothing; DB trouble worth a retry -> DatabaseUnavailable."""
        with self._unit(self._sessions) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A unit that only reads: on SQLite it takes no write lock (a deferred BEGIN), so it never
        makes a writer wait; a write inside it may fail with "database is locked". PostgreSQL: the
        same as `unit_of_work`."""
        with self._unit(self._readers) as session:
            yield session

    @contextmanager
    def _unit(self, sessions: sessionmaker[Session]) -> Iterator[Session]:
        session = sessions()
        try:
            with session.begin():
                yield session
        except DBAPIError as exc:
            mapped = translate_db_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def get_database(url: str) -> Database:
    """The process's Database for `url`; a forked child gets its own engine, never its parent's."""
    key = (os.getpid(), url)
    with _lock:
        database = _databases.get(key)
        if database is None:
            database = _databases[key] = Database(url)
        return database
