"""The reminder service (``sms``) mounted in central: its view of the FHIR store, and the
service built from central's settings.

``StoreRecords`` gives the planner the Patients, Consents and reminder CommunicationRequests
the hubs pushed, and writes the service's Communications and call-back Tasks through the same
store as every other write: validated, indexed, audited, in the caller's transaction, as the
client ``sms`` with every region.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from central.callers import ALL_REGIONS, Caller
from central.clock import Clock
from central.database import REMINDER_SOURCES, Database, Session
from central.errors import CentralError
from central.fhir.interactions import Context, write_resources
from central.fhir.store import Write, decode
from central.fhir.validation import validate
from central.settings import Settings
from sms import ReminderService, SmsConfig, TwilioSender
from sms.records import PatientRecords, Position, Resource
from sms.scheduler import start_scheduler

log = logging.getLogger(__name__)

# The types are literals so that the planner matches the query to the partial index.
_CHANGED = (
    "SELECT last_updated, rtype, id, content FROM resources{hint} WHERE rtype IN"
    f" ({', '.join(repr(kind) for kind in REMINDER_SOURCES)}) AND deleted = 0"
)
# SQLite's planner would take the (rtype, last_updated) index for the IN list and then sort
# every row after the cursor, page after page.
_HINTS = {"sqlite": " INDEXED BY resources_reminder_changes", "postgresql": ""}
# What a patient's reminders are planned from, found by their ``patient`` search parameter.
_REFERRING = ("Consent", "CommunicationRequest", "Task")
_PATIENT_ELEMENT = {"CommunicationRequest": "subject", "Task": "for", "Consent": "patient"}
REMINDER_TEMPLATE = "urn:rural-care:reminder-template"
CALLER = Caller(
    client_id="sms",
    region=ALL_REGIONS,
    scopes=frozenset({"system/Communication.write", "system/Task.write"}),
)


@dataclass(frozen=True)
class StoreRecords:
    settings: Settings
    clock: Clock
    database: Database

    def changes(
        self, session: Session, after: Position | None, limit: int
    ) -> tuple[list[str], Position | None]:
        """Read in (lastUpdated, type, ID) order, on the partial index of those types. A full
        page is completed to the end of its last instant: a hub's bundle is one instant, so a
        patient's Patient, Consents and reminders are planned together, once."""
        rows = session.execute(
            f"{_changed(session)} AND (last_updated, rtype, id) > (?, ?, ?)"
            " ORDER BY last_updated, rtype, id LIMIT ?",
            (*(after or ("", "", "")), limit),
        )
        if not rows:
            return [], None
        if len(rows) == limit:
            at, kind, rid = rows[-1][:3]
            rows += session.execute(
                f"{_changed(session)} AND last_updated = ? AND (rtype, id) > (?, ?)"
                " ORDER BY rtype, id",
                (at, kind, rid),
            )
        patients = dict.fromkeys(
            found for row in rows if (found := _patient_of(row[1], row[2], row[3]))
        )
        last = rows[-1]
        return list(patients), (last[0], last[1], last[2])

    def patient_records(self, session: Session, patient_ids: Sequence[str]) -> list[PatientRecords]:
        if not patient_ids:
            return []
        patients = {r["id"]: r for r in _contents(session, "Patient", list(patient_ids))}
        targets = [f"Patient/{pid}" for pid in patient_ids]
        by_patient: dict[str, dict[str, list[Resource]]] = {
            pid: {kind: [] for kind in _REFERRING} for pid in patient_ids
        }
        for kind in _REFERRING:
            for resource in _referring(session, kind, targets):
                pid = _patient_of(kind, resource.get("id", ""), resource)
                if pid in by_patient:
                    by_patient[pid][kind].append(resource)
        return [
            PatientRecords(
                pid,
                patients.get(pid),
                by_patient[pid]["Consent"],
                by_patient[pid]["CommunicationRequest"],
                by_patient[pid]["Task"],
            )
            for pid in patient_ids
        ]

    def write(self, session: Session, resources: Sequence[Resource]) -> None:
        """Store each resource; one central refuses (its patient is not here, say) is logged
        and left out, so that what it records (an opt-out, a delivery) still commits. The
        store refuses before it writes anything, so the transaction goes on unharmed."""
        ctx = Context(self.database, self.settings, self.clock, CALLER)
        for resource in resources:
            kind = resource["resourceType"]
            try:
                checked = validate(resource, expected_type=kind)
                write_resources(session, ctx, [Write("PUT", kind, resource["id"], checked)])
            except CentralError as exc:
                log.warning("the reminder service's %s was not stored: %s", kind, exc)


def _changed(session: Session) -> str:
    return _CHANGED.format(hint=_HINTS[session.dialect])


def _patient_of(kind: str, rid: str, content: str | Resource | None) -> str | None:
    if kind == "Patient":
        return rid
    if content is None:
        return None
    if isinstance(content, str):
        # Only reminders matter among CommunicationRequests; most are skipped unread.
        if kind == "CommunicationRequest" and REMINDER_TEMPLATE not in content:
            return None
        content = decode(content)
    ref = content.get(_PATIENT_ELEMENT.get(kind, "patient")) or {}
    target = ref.get("reference", "") if isinstance(ref, dict) else ""
    return target.removeprefix("Patient/") if target.startswith("Patient/") else None


def _contents(session: Session, kind: str, ids: list[str]) -> list[Resource]:
    """Current resources of ``kind`` with these IDs."""
    sql = "SELECT content FROM resources WHERE rtype = ? AND id IN ({}) AND deleted = 0"
    return _decoded(session, sql, kind, ids)


def _referring(session: Session, kind: str, targets: list[str]) -> list[Resource]:
    """Current resources of ``kind`` whose ``patient`` search parameter is one of targets."""
    sql = (
        "SELECT r.content FROM search_reference s JOIN resources r"
        " ON r.rtype = s.rtype AND r.id = s.id"
        " WHERE s.rtype = ? AND s.param = 'patient' AND s.target IN ({})"
        " AND r.deleted = 0 ORDER BY r.id"
    )
    return _decoded(session, sql, kind, targets)


def _decoded(session: Session, sql: str, kind: str, values: list[str]) -> list[Resource]:
    """The resources ``sql`` (a query for ``kind`` with an IN list to fill) finds for
    ``values``, asked 500 at a time."""
    found: list[Resource] = []
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        rows = session.execute(sql.format(", ".join("?" * len(chunk))), (kind, *chunk))
        found.extend(decode(row[0]) for row in rows)
    return found


def sms_config(settings: Settings, worker: str) -> SmsConfig:
    return SmsConfig(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        from_number=settings.twilio_from,
        public_url=settings.sms_public_url or settings.base_url,
        api_url=settings.twilio_api_url or None,
        per_second=float(settings.sms_per_second),
        lease_seconds=float(settings.sms_lease_seconds),
        voice_clips_url=settings.sms_voice_clips_url or None,
        worker=worker,
        policy=settings.sms_policy,
    )


def reminder_service(settings: Settings, database: Database, clock: Clock) -> ReminderService:
    config = sms_config(settings, worker=f"central-{os.getpid()}")
    sender = TwilioSender(
        account_sid=config.account_sid,
        auth_token=config.auth_token,
        from_number=config.from_number,
        api_url=config.api_url,
        # A send must end well within its lease, or the lease could run out while it is in
        # flight and the reminder be looked up, found missing and sent again.
        timeout_seconds=min(10.0, config.lease_seconds / 2),
    )
    return ReminderService(
        database=database,
        records=StoreRecords(settings, clock, database),
        sender=sender,
        config=config,
        now=clock.now,
        wait=time.sleep,
    )


def start(service: ReminderService, settings: Settings) -> Any:
    """Start this process's scheduler (plan, dispatch, reconcile); returns it for shutdown."""
    tasks = service.tasks(
        plan_seconds=settings.sms_plan_seconds,
        dispatch_seconds=settings.sms_dispatch_seconds,
        reconcile_seconds=max(settings.sms_lease_seconds // 2, 1),
    )
    return start_scheduler(service.database, tasks)
