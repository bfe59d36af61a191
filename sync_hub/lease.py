"""The lease: how hub processes sharing one database agree which of them talks to central.

A row of ``fhir_lease`` names its holder until a time. A pusher takes it before a pass and
renews it before each request, so two ``serve`` processes (or ``serve`` and the ``push``
command) never push or fetch at the same time; a process that dies leaves a lease that simply
expires. Times are the injected clock's Unix seconds.
"""

from __future__ import annotations

import os
import secrets
import socket

import sqlite_utils

from care_record import Clock
from sync_hub.store import Store

CENTRAL = "central"
LEASE_SECONDS = 120.0


def new_holder() -> str:
    """A holder name: which machine and process, and a random part for this holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """One holder's view of the lease called ``name``."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        holder: str | None = None,
        seconds: float = LEASE_SECONDS,
        name: str = CENTRAL,
    ) -> None:
        self.store = store
        self.clock = clock
        self.holder = holder or new_holder()
        self.seconds = seconds
        self.name = name

    def hold(self) -> bool:
        """Take or renew the lease; False if another holder has it and it has not expired."""
        with self.store.write() as db:
            return take(
                db, self.name, self.holder, now=self.clock.now().timestamp(), seconds=self.seconds
            )

    def release(self) -> None:
        with self.store.write() as db:
            db.execute(
                "DELETE FROM fhir_lease WHERE name = ? AND holder = ?", [self.name, self.holder]
            )

    def held_by(self) -> str | None:
        """Who holds the lease now, if anyone."""
        with self.store.read() as db:
            row = db.execute(
                "SELECT holder FROM fhir_lease WHERE name = ? AND expires_at > ?",
                [self.name, self.clock.now().timestamp()],
            ).fetchone()
        return None if row is None else str(row[0])


def take(db: sqlite_utils.Database, name: str, holder: str, *, now: float, seconds: float) -> bool:
    """Inside a write transaction: take or renew ``name`` for ``holder`` until now + seconds."""
    row = db.execute("SELECT holder, expires_at FROM fhir_lease WHERE name = ?", [name]).fetchone()
    if row is not None and row[0] != holder and row[1] > now:
        return False
    db.execute(
        "INSERT INTO fhir_lease (name, holder, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_at = excluded.expires_at",
        [name, holder, now + seconds],
    )
    return True
