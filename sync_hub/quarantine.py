"""Charts that could not be applied: kept byte for byte, reported, never blocking the rest.

The same damaged payload sent again (a tablet retries what was not acknowledged) is counted on
its first row rather than stored again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlite_utils


@dataclass(frozen=True)
class Held:
    id: int
    device: str
    doc: str
    kind: str
    size: int
    reason: str
    first_at: str
    last_at: str
    times: int


def hold(
    db: sqlite_utils.Database,
    *,
    device: str,
    doc: str,
    kind: str,
    payload: bytes,
    reason: str,
    at: str,
) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    db.execute(
        "INSERT INTO quarantine (device, doc, kind, payload, digest, reason, first_at, last_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, doc, digest) DO UPDATE SET "
        "last_at = excluded.last_at, reason = excluded.reason, times = times + 1",
        [device, doc, kind[:40], payload, digest, reason[:500], at, at],
    )


def held(db: sqlite_utils.Database) -> list[Held]:
    rows = db.execute(
        "SELECT id, device, doc, kind, length(payload), reason, first_at, last_at, times "
        "FROM quarantine ORDER BY id"
    )
    return [Held(*row) for row in rows]


def count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM quarantine").fetchone()[0])
