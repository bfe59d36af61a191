"""The database the reminder service keeps its state in: central's own, passed in.

``sms`` does not open databases. Central hands it an object with the ``Database`` shape below
(``central.database`` has it): SQLite or PostgreSQL, SQL written once with ``?`` placeholders,
``write()`` and ``read()`` giving a session in one transaction. ``schema(dialect)`` lists the
tables this package needs; central creates them with its own.

Tables:
    sms_outbox     one row per reminder (its CommunicationRequest's ID), and its state
    sms_opt_outs   phones that wrote STOP (by phone: Twilio's opt-out is per number)
    sms_inbound    webhook keys already handled, so a replayed webhook changes nothing
    sms_rate       one token bucket per Twilio account, shared by every central process
    sms_cursor     how far the planner has read central's store
    sms_jobs       APScheduler's job store (``sms.jobstore``)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]


class Session(Protocol):
    dialect: Dialect

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Insert many rows (the backend's fastest way); the same shape as central's session."""
        ...


class Database(Protocol):
    dialect: Dialect

    def write(self) -> AbstractContextManager[Any]:
        """A Session in a write transaction, committed when the block ends without error."""
        ...

    def read(self) -> AbstractContextManager[Any]: ...


def schema(dialect: Dialect) -> list[str]:
    """The tables and indexes, created if missing (safe to run again)."""
    blob = "BLOB" if dialect == "sqlite" else "BYTEA"
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    return [
        # Times are epoch seconds (UTC) so that both backends compare them as numbers.
        f"""CREATE TABLE IF NOT EXISTS sms_outbox (
            reminder_id TEXT PRIMARY KEY,
            patient_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            phone TEXT NOT NULL,
            language TEXT NOT NULL,
            zone TEXT NOT NULL,
            template TEXT NOT NULL,
            body TEXT NOT NULL,
            send_at {real} NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT,
            claimed_until {real},
            twilio_sid TEXT,
            error TEXT,
            -- 1: an operator asked to send it now; planning leaves its time alone
            pinned INTEGER NOT NULL DEFAULT 0,
            -- what replies and outcomes point at; NULL: CommunicationRequest/reminder_id
            based_on TEXT,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS sms_outbox_due ON sms_outbox (state, send_at)",
        "CREATE INDEX IF NOT EXISTS sms_outbox_patient ON sms_outbox (patient_id)",
        "CREATE INDEX IF NOT EXISTS sms_outbox_sid ON sms_outbox (twilio_sid)",
        f"""CREATE TABLE IF NOT EXISTS sms_opt_outs (
            phone TEXT PRIMARY KEY,
            opted_out_at {real} NOT NULL,
            source TEXT NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS sms_inbound (
            key TEXT PRIMARY KEY,
            received_at {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS sms_rate (
            account TEXT PRIMARY KEY,
            tokens {real} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        "CREATE TABLE IF NOT EXISTS sms_cursor (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS sms_jobs (
            id TEXT PRIMARY KEY,
            next_run_time {real},
            job_state {blob} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS sms_jobs_next ON sms_jobs (next_run_time)",
    ]
