"""The outbox to central: which patient charts central has not acknowledged, in what order.

``store.put_chart`` queues a patient chart in the same transaction that stores it, so a chart
the hub holds is never missing from the outbox. A chart is one row however often it changes:
``version`` counts the changes since it was queued, and the pusher deletes exactly the version
it pushed, so a change made while a push was in flight stays queued. The pusher projects the
chart as it is when pushed: a hub offline for days sends each chart once, in its latest state.

A chart central refuses (or that cannot be projected) moves to ``fhir_quarantine`` with the
reason and leaves the queue, so it blocks nothing; its next change queues it again.

Times in ``queued_at`` and ``at`` are the hub's stamps (ISO 8601 UTC, to the second).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

REASON_CHARS = 500

_CURSOR = "fetch_cursor"  # of Communications: the first type fetched, so its key has no suffix
COMMUNICATION = "Communication"
TASK = "Task"
_LAST_PUSH = "last_push_at"
_LAST_FETCH = "last_fetch_at"


@dataclass(frozen=True)
class Pending:
    """A queued chart as it stands: its place, the version queued, and its stored bytes."""

    seq: int
    doc: str
    version: int
    data: bytes


@dataclass(frozen=True)
class Quarantined:
    doc: str
    version: int
    status: str
    reason: str
    at: str


@dataclass(frozen=True)
class Status:
    pending: int
    oldest_queued_at: str | None
    last_push_at: str | None
    last_fetch_at: str | None
    cursor: str | None  # of Communications
    task_cursor: str | None
    quarantined: list[Quarantined]


# -- the queue ------------------------------------------------------------------------------------


def queue(db: sqlite_utils.Database, doc: str, *, at: str) -> None:
    """Mark a chart as changed since central last had it (keeping its place if queued)."""
    db.execute(
        "INSERT INTO fhir_outbox (doc, version, queued_at) VALUES (?, 1, ?) "
        "ON CONFLICT (doc) DO UPDATE SET version = version + 1",
        [doc, at],
    )


def queue_all_patients(db: sqlite_utils.Database) -> int:
    """Queue every patient chart, oldest change first; returns how many were queued."""
    cursor = db.execute(
        "INSERT INTO fhir_outbox (doc, version, queued_at) "
        "SELECT id, 1, updated_at FROM charts WHERE kind = 'patient' ORDER BY updated_at, id "
        "ON CONFLICT (doc) DO UPDATE SET version = version + 1"
    )
    return int(cursor.rowcount)


def pending_after(db: sqlite_utils.Database, seq: int, limit: int) -> list[Pending]:
    """The next ``limit`` queued charts after place ``seq``, in queue order, with their data."""
    rows = db.execute(
        "SELECT o.seq, o.doc, o.version, c.data FROM fhir_outbox o "
        "JOIN charts c ON c.id = o.doc WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
        [seq, limit],
    ).fetchall()
    return [Pending(row[0], row[1], row[2], bytes(row[3])) for row in rows]


def pending_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM fhir_outbox").fetchone()[0])


def delivered(db: sqlite_utils.Database, charts: Iterable[tuple[str, int]], *, at: str) -> int:
    """Central has these (doc, version) pairs: drop them from the queue, and from quarantine
    (a chart refused once and accepted since is fine). Returns how many rows left the queue;
    a chart changed since its version was read stays queued."""
    done = 0
    for doc, version in charts:
        cursor = db.execute("DELETE FROM fhir_outbox WHERE doc = ? AND version = ?", [doc, version])
        done += int(cursor.rowcount)
        db.execute("DELETE FROM fhir_quarantine WHERE doc = ?", [doc])
    set_state(db, _LAST_PUSH, at)
    return done


# -- quarantine -----------------------------------------------------------------------------------


def quarantine(
    db: sqlite_utils.Database, doc: str, version: int, *, status: str, reason: str, at: str
) -> None:
    """Hold a chart out of the queue with why; if it changed meanwhile it stays queued too."""
    db.execute(
        "INSERT INTO fhir_quarantine (doc, version, status, reason, at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (doc) DO UPDATE SET version = excluded.version, status = excluded.status, "
        "reason = excluded.reason, at = excluded.at",
        [doc, version, status[:40], reason[:REASON_CHARS], at],
    )
    db.execute("DELETE FROM fhir_outbox WHERE doc = ? AND version = ?", [doc, version])


def quarantined(db: sqlite_utils.Database) -> list[Quarantined]:
    rows = db.execute(
        "SELECT doc, version, status, reason, at FROM fhir_quarantine ORDER BY at, doc"
    )
    return [Quarantined(*row) for row in rows]


def requeue_quarantined(db: sqlite_utils.Database, *, at: str) -> int:
    """Queue every quarantined chart again (after central or the hub was fixed)."""
    docs = [q.doc for q in quarantined(db)]
    for doc in docs:
        queue(db, doc, at=at)
    return len(docs)


# -- state: cursor, last push and fetch -------------------------------------------------------------


def get_state(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM fhir_state WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


def set_state(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO fhir_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def _cursor_key(resource_type: str) -> str:
    return _CURSOR if resource_type == COMMUNICATION else f"{_CURSOR}:{resource_type}"


def cursor(db: sqlite_utils.Database, resource_type: str = COMMUNICATION) -> datetime | None:
    """The newest ``meta.lastUpdated`` merged from central of that resource type (each type is
    fetched by its own search, so each has its own cursor), or None before its first fetch."""
    value = get_state(db, _cursor_key(resource_type))
    return None if value is None else datetime.fromisoformat(value)


def advance_cursor(
    db: sqlite_utils.Database, seen: datetime, resource_type: str = COMMUNICATION
) -> None:
    """Move the type's cursor to ``seen`` if that is later; it never goes back."""
    current = cursor(db, resource_type)
    if current is None or seen > current:
        set_state(db, _cursor_key(resource_type), seen.isoformat())


def fetched(db: sqlite_utils.Database, *, at: str) -> None:
    set_state(db, _LAST_FETCH, at)


def status(db: sqlite_utils.Database) -> Status:
    count, oldest = db.execute("SELECT count(*), min(queued_at) FROM fhir_outbox").fetchone()
    return Status(
        pending=int(count),
        oldest_queued_at=oldest,
        last_push_at=get_state(db, _LAST_PUSH),
        last_fetch_at=get_state(db, _LAST_FETCH),
        cursor=get_state(db, _cursor_key(COMMUNICATION)),
        task_cursor=get_state(db, _cursor_key(TASK)),
        quarantined=quarantined(db),
    )
