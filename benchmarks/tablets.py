"""Tablets for the sync benchmark: real encrypted ones, and light in-memory ones for crowds.

``EncryptedTablet`` is the tablet app itself: an encrypted store made by
``field_app.session.init_store``, enrolled by ``field_app.syncing.enroll``, written by
``field_app.patients.register_patient`` and ``field_app.visits.write_visit``, synced by
``field_app.syncing.sync`` over HTTP.

``MemoryTablet`` keeps its charts in ``care_record.sync.memory.MemoryReplica`` (the sync
engine's reference replica) instead of an encrypted database, and syncs with ``memory_sync``:
the loop of ``field_app.syncing.sync`` over that replica, with the same requests, the same
signatures (``field_app.syncing.DeviceSigner``) and the same HTTP client code
(``field_app.syncing.post_frame``, retries and all). Hundreds of them fit in one process; the
hub cannot tell them from real tablets.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from benchmarks.population import Person, Visit
from care_record import Chart, SystemClock, new_id, vital_observations
from care_record.sync import (
    Session as SyncSession,
)
from care_record.sync import (
    SyncResponse,
    absorb,
    build_request,
    decode_frame,
    encode_frame,
)
from care_record.sync.memory import MemoryReplica
from field_app.patients import register_patient
from field_app.session import Session, init_store
from field_app.settings import Settings
from field_app.store import Store
from field_app.syncing import (
    MAX_ROUNDS,
    DeviceSigner,
    Identity,
    Link,
    SyncReport,
    enroll,
    hub_link,
    post_frame,
    sync,
)
from field_app.visits import write_visit

ZONE = "Africa/Dar_es_Salaam"
PIN = "kahawa-2718"
# Unlocking is not measured here: a cheap PIN key derivation keeps setting up tablets fast.
SCRYPT_LOG2_N = 12
SNAPSHOT_BYTES = 1024 * 1024  # what field_app.syncing.sync asks for by default


class ShiftedClock:
    """Real time, moved back by ``behind``: earlier visits happen on earlier days, and the
    measured day happens now (the hub checks a request's signed time against its own clock;
    requests are always signed with the real time)."""

    def __init__(self) -> None:
        self.behind = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) - self.behind

    def days_ago(self, days: float) -> None:
        self.behind = timedelta(days=days)


# -- the real tablet ---------------------------------------------------------------------------


class EncryptedTablet:
    """The tablet app over its encrypted store, held open for the whole benchmark."""

    def __init__(self, folder: Path, user: str) -> None:
        self.settings = Settings(data_dir=folder, zone=ZONE, scrypt_log2_n=SCRYPT_LOG2_N)
        self.clock = ShiftedClock()
        self.user = user
        self._session: Session = init_store(self.settings, self.clock, user, PIN)
        # Held directly: the session's idle lock would otherwise see the clock jump by days.
        self.store: Store = self._session.store

    def close(self) -> None:
        self._session.lock()

    def enroll(self, client: httpx.Client, hub_url: str, code: str) -> None:
        enroll(self.store, client, hub_url, code, f"{self.user}-tablet")

    def register(self, who: Person, village: str) -> str:
        return register_patient(self.store, {**who.demographics, "village": village})

    def record(self, patient_id: str, visit: Visit) -> str:
        return write_visit(
            self.store, patient_id, visit.readings, zone=ZONE, kind=visit.kind, note=visit.note
        )

    def sync(self, client: httpx.Client, base_url: str | None = None) -> SyncReport:
        """Sync with the enrolled hub, or through ``base_url`` (a link emulator in front of it)."""
        link = hub_link(self.store, client, SystemClock())
        if base_url is not None:
            link.base_url = base_url
        return sync(self.store, link)

    def chart(self, patient_id: str) -> Chart:
        return self.store.get_chart(patient_id)


# -- the light tablet ----------------------------------------------------------------------------


@dataclass
class MemoryTablet:
    """An enrolled device whose charts live in memory (see the module's docstring)."""

    identity: Identity
    author: str
    actor: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    replica: MemoryReplica = field(default_factory=lambda: MemoryReplica(_initiator=True))
    clock: ShiftedClock = field(default_factory=ShiftedClock)

    @classmethod
    def enroll(cls, client: httpx.Client, hub_url: str, code: str, label: str) -> MemoryTablet:
        """``POST /enroll`` with a new Ed25519 key, as ``field_app.syncing.enroll`` does."""
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        body = {"code": code, "public_key": base64.b64encode(public).decode(), "label": label}
        answer = client.post(f"{hub_url}/enroll", json=body, timeout=30)
        answer.raise_for_status()
        reply: dict[str, Any] = answer.json()
        identity = Identity(reply["device_id"], hub_url, str(reply["chw"]), key)
        return cls(identity, author=new_id(SystemClock()))

    def register(self, who: Person, village: str) -> str:
        chart = Chart.new_patient(
            {**who.demographics, "village": village},
            author=self.author,
            clock=self.clock,
            actor=self.actor,
        )
        self.put(chart)
        return chart.id

    def record(self, patient_id: str, visit: Visit) -> str:
        """``field_app.visits.write_visit`` over the in-memory replica."""
        chart = self.chart(patient_id)
        encounter = {
            "kind": visit.kind,
            "started_at": self.clock.now(),
            "zone": ZONE,
            "observations": vital_observations(dict(visit.readings)),
            "note": visit.note,
        }
        encounter_id = chart.record_encounter({k: v for k, v in encounter.items() if v is not None})
        self.put(chart)
        return encounter_id

    def chart(self, patient_id: str) -> Chart:
        stored = self.replica.get(patient_id)
        if stored is None:
            raise KeyError(patient_id)
        return Chart.load(stored.data, author=self.author, clock=self.clock, actor=self.actor)

    def put(self, chart: Chart) -> None:
        self.replica.put(chart.id, "patient", chart.save(), chart.heads)

    def link(self, client: httpx.Client) -> Link:
        return Link(client, self.identity.hub_url, DeviceSigner(self.identity, SystemClock()))

    def sync(
        self,
        client: httpx.Client,
        *,
        ready: Callable[[], None] | None = None,
        waits: list[float] | None = None,
        answered: Callable[[], None] | None = None,
    ) -> SyncReport:
        return memory_sync(
            self.replica, self.link(client), ready=ready, waits=waits, answered=answered
        )


def memory_sync(
    replica: MemoryReplica,
    link: Link,
    *,
    max_snapshot_bytes: int = SNAPSHOT_BYTES,
    ready: Callable[[], None] | None = None,
    waits: list[float] | None = None,
    answered: Callable[[], None] | None = None,
) -> SyncReport:
    """``field_app.syncing.sync`` over a MemoryReplica: the same rounds, frames and counts.

    ``ready`` is called once the first request is built, before it is sent (a crowd of tablets
    waits there to send together); ``waits`` collects how long each answer took to come back;
    ``answered`` is called once the first answer is in, before it is taken in (a crowd waits
    there until every tablet has its answer).
    """
    session = SyncSession("hub")
    report = SyncReport()
    for _ in range(MAX_ROUNDS):
        request = build_request(replica, session, max_snapshot_bytes=max_snapshot_bytes)
        body = encode_frame(request)
        if ready is not None:
            ready()
            ready = None
        sent_at = time.perf_counter()
        answer = post_frame(link, "/sync", body)
        if waits is not None:
            waits.append(time.perf_counter() - sent_at)
        if answered is not None:
            answered()
            answered = None
        report.round_trips += 1
        report.bytes_sent += len(body)
        report.bytes_received += len(answer)
        outcome = absorb(replica, session, request, decode_frame(answer, SyncResponse))
        report.sent += outcome.sent
        report.received += outcome.received
        report.new += outcome.new
        report.quarantined += outcome.quarantined
        if outcome.command:
            report.command = outcome.command
            return report
        if not outcome.more:
            return report
    raise RuntimeError("the in-memory tablet's sync did not finish")
