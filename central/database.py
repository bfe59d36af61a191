"""Central's one data layer, over two backends chosen by URL: SQLite (a file; the default, for
a laptop, a demo or a small programme) and PostgreSQL (a national programme).

Every query is written once, with ``?`` placeholders; the PostgreSQL side turns them into
psycopg's ``%s``. Nothing above this module knows which backend it runs on, except where SQL
itself differs (``Dialect``). Each request opens a connection from a pool, works in one
transaction, and commits before it answers (or rolls back if anything raised).

SQLite lets one writer in at a time: writes queue on a lock in this process and on a file lock
beside the database between processes (SQLite's own busy handler sleeps and polls, and would
leave the file idle between transactions while several server processes wait). PostgreSQL runs writers side by side and the store takes row locks where two
writers could race (see ``central.fhir.store``).
"""

from __future__ import annotations

import fcntl
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
import psycopg_pool
from psycopg import sql

from central.errors import Busy
from sms.database import schema as sms_schema

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]
# What the reminder service plans from, read in lastUpdated order (central.reminders): a
# partial index keeps that reading off every other type's rows.
REMINDER_SOURCES = ("CommunicationRequest", "Consent", "Patient", "Task")


class Session(Protocol):
    """One transaction on one connection."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement; return its rows (empty for statements that return none)."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Insert many rows into a table (no conflict handling): the fastest way each backend
        has (PostgreSQL's COPY)."""
        ...


class Database(Protocol):
    dialect: Dialect

    def write(self) -> Any:
        """A context manager giving a Session in a write transaction."""
        ...

    def read(self) -> Any:
        """A context manager giving a Session for a consistent read (rolled back)."""
        ...

    def create(self) -> None: ...

    def close(self) -> None: ...


def open_database(url: str, *, pool_size: int = 8, busy_timeout_seconds: int = 30) -> Database:
    """The database at ``url``: ``sqlite:///PATH`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:///")), pool_size, busy_timeout_seconds)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool_size, busy_timeout_seconds)
    raise ValueError("a database URL starts with sqlite:/// or postgresql://")


# -- SQLite ---------------------------------------------------------------------------------------


@dataclass
class _SqliteSession:
    conn: sqlite3.Connection
    dialect: Dialect = "sqlite"

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
            rows,
        )


class SqliteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, pool_size: int, busy_timeout_seconds: int) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self._writer = threading.Lock()
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._to_open = threading.BoundedSemaphore(pool_size)
        self._lock_path = path.with_name(path.name + ".writer-lock")

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            isolation_level=None,
            timeout=self.busy_timeout_seconds,
            check_same_thread=False,
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            if self._to_open.acquire(blocking=False):
                conn = self._open()
            else:
                try:
                    conn = self._pool.get(timeout=self.busy_timeout_seconds)
                except queue.Empty:
                    raise Busy("central is busy; try again in a moment") from None
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            yield conn
        finally:
            self._pool.put(conn)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._connection() as conn:
            if not self._writer.acquire(timeout=self.busy_timeout_seconds):
                raise Busy("central is busy; try again in a moment")
            try:
                with self._other_processes(), self._transaction(conn) as session:
                    yield session
            finally:
                self._writer.release()

    @contextmanager
    def _other_processes(self) -> Iterator[None]:
        """Queue behind writers in other processes (a blocking lock wakes the moment it is
        free, where SQLite's busy handler would sleep)."""
        with self._lock_path.open("a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[Session]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Busy("central's database is locked; try again in a moment") from exc
        try:
            yield _SqliteSession(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield _SqliteSession(conn)
            finally:
                conn.execute("ROLLBACK")

    def create(self) -> None:
        with self.write() as session:
            for statement in schema("sqlite"):
                session.execute(statement)

    def close(self) -> None:
        """Close the idle connections; SQLite first refreshes the planner's statistics of the
        tables that changed much (``PRAGMA optimize``, as SQLite advises before closing)."""
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            conn.execute("PRAGMA optimize")
            conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------------

_PLACEHOLDERS: dict[str, str] = {}


def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (no statement here has ``?`` or ``%`` in a
    literal)."""
    converted = _PLACEHOLDERS.get(sql)
    if converted is None:
        converted = sql.replace("%", "%%").replace("?", "%s")
        _PLACEHOLDERS[sql] = converted
    return converted


@dataclass
class _PostgresSession:
    conn: psycopg.Connection[Any]
    dialect: Dialect = "postgresql"

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self.conn.cursor() as cursor:
            cursor.execute(_pg(sql), params)
            return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        # COPY costs the server a fraction of what as many INSERT statements do.
        if not rows:
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool_size: int, busy_timeout_seconds: int) -> None:
        self.url = url
        self.busy_timeout_seconds = busy_timeout_seconds
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=busy_timeout_seconds
        )
        self._opened = False
        self._open_lock = threading.Lock()

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened:
                try:
                    self._pool.open(wait=True, timeout=self.busy_timeout_seconds)
                except psycopg_pool.PoolTimeout as exc:
                    raise Busy("central cannot reach its database; try again later") from exc
                self._opened = True

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._ensure_open()
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise Busy("central is busy; try again in a moment") from exc
        except psycopg.OperationalError as exc:
            raise Busy("central's database is unavailable; try again in a moment") from exc

    @contextmanager
    def write(self) -> Iterator[Session]:
        # The pool's connection block commits when it ends and rolls back if it raises.
        with self._connection() as conn:
            yield _PostgresSession(conn)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._connection() as conn:
            try:
                yield _PostgresSession(conn)
            finally:
                conn.rollback()

    def create(self) -> None:
        with self.write() as session:
            # Two processes starting together must not both create the tables.
            session.execute("SELECT pg_advisory_xact_lock(7261001)")
            for statement in schema("postgresql"):
                session.execute(statement)

    def close(self) -> None:
        if self._opened:
            self._pool.close()


# -- schema ---------------------------------------------------------------------------------------


_REFERENCE_INDEX = (
    "CREATE INDEX IF NOT EXISTS search_reference_value ON search_reference (rtype, param, target)"
)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def schema(dialect: Dialect) -> list[str]:
    """Every table and index, created if missing (safe to run again)."""
    seq = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGINT PRIMARY KEY"
    blob = "BLOB" if dialect == "sqlite" else "BYTEA"
    # String search finds prefixes as ranges of text in code point order: SQLite's BINARY,
    # PostgreSQL's "C" collation (central.fhir.search).
    code_point_order = "" if dialect == "sqlite" else ' COLLATE "C"'
    # The audit trail is append-only: the database itself refuses to edit or remove an entry
    # (central.audit explains the production role that makes this hold against a superuser too).
    append_only = (
        [
            f"""CREATE TRIGGER IF NOT EXISTS audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"""
            for verb in ("UPDATE", "DELETE")
        ]
        if dialect == "sqlite"
        else [
            """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit trail is append-only';
            END
            $$""",
            # Created only if missing: creating a trigger locks out inserts while it waits.
            """DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass
                           AND tgname = 'audit_log_no_update_or_delete') THEN
                CREATE TRIGGER audit_log_no_update_or_delete
                BEFORE UPDATE OR DELETE ON audit_log
                FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass
                           AND tgname = 'audit_log_no_truncate') THEN
                CREATE TRIGGER audit_log_no_truncate
                BEFORE TRUNCATE ON audit_log
                FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
            END IF;
            END $$""",
        ]
    )
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # The current version of every resource (a deleted one stays, marked, with no content).
        """CREATE TABLE IF NOT EXISTS resources (
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            region TEXT,
            deleted INTEGER NOT NULL DEFAULT 0,
            content TEXT,
            PRIMARY KEY (rtype, id)
        )""",
        "CREATE INDEX IF NOT EXISTS resources_updated ON resources (rtype, last_updated)",
        (
            "CREATE INDEX IF NOT EXISTS resources_reminder_changes"
            " ON resources (last_updated, rtype, id)"
            f" WHERE rtype IN ({_quoted(REMINDER_SOURCES)}) AND deleted = 0"
        ),
        # Every version ever written, for vread and _history.
        """CREATE TABLE IF NOT EXISTS history (
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated TEXT NOT NULL,
            region TEXT,
            method TEXT NOT NULL,
            content TEXT,
            PRIMARY KEY (rtype, id, version)
        )""",
        "CREATE INDEX IF NOT EXISTS history_updated ON history (last_updated)",
        # Search indexes of current versions: one row per value of a search parameter.
        """CREATE TABLE IF NOT EXISTS search_token (
            rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
            system TEXT NOT NULL, code TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS search_token_value ON search_token (rtype, param, code, system)",
        "CREATE INDEX IF NOT EXISTS search_token_owner ON search_token (rtype, id)",
        f"""CREATE TABLE IF NOT EXISTS search_string (
            rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
            value TEXT{code_point_order} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS search_string_value ON search_string (rtype, param, value)",
        "CREATE INDEX IF NOT EXISTS search_string_owner ON search_string (rtype, id)",
        """CREATE TABLE IF NOT EXISTS search_date (
            rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
            low TEXT NOT NULL, high TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS search_date_value ON search_date (rtype, param, low)",
        "CREATE INDEX IF NOT EXISTS search_date_high ON search_date (rtype, param, high)",
        "CREATE INDEX IF NOT EXISTS search_date_owner ON search_date (rtype, id)",
        """CREATE TABLE IF NOT EXISTS search_reference (
            rtype TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, target TEXT NOT NULL
        )""",
        _REFERENCE_INDEX,
        "CREATE INDEX IF NOT EXISTS search_reference_owner ON search_reference (rtype, id)",
        # Hubs and other clients allowed to ask for tokens (SMART Backend Services).
        """CREATE TABLE IF NOT EXISTS clients (
            client_id TEXT PRIMARY KEY,
            region TEXT NOT NULL,
            jwks TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        # Client-assertion IDs seen recently: a JWT is accepted once.
        """CREATE TABLE IF NOT EXISTS assertion_ids (
            client_id TEXT NOT NULL, jti TEXT NOT NULL, expires_at INTEGER NOT NULL,
            PRIMARY KEY (client_id, jti)
        )""",
        "CREATE INDEX IF NOT EXISTS assertion_ids_expiry ON assertion_ids (expires_at)",
        # The audit trail: append-only, each entry chained to the one before by its hash. The
        # seq is given by central.audit.append (it is part of the hash), never by the database.
        f"""CREATE TABLE IF NOT EXISTS audit_log (
            seq {seq},
            recorded TEXT NOT NULL,
            event TEXT NOT NULL,
            prev_hash {blob} NOT NULL,
            hash {blob} NOT NULL
        )""",
        *append_only,
        # The reminder service's outbox, opt-outs and scheduler jobs (sms.database).
        *sms_schema(dialect),
    ]
