"""A central with reminders on, serving HTTP on a free port, a local Twilio that calls it back,
and a clock the test moves: everything real but time.

``World.hub_writes`` puts FHIR resources into central's store as a hub would push them (the
shapes of ``sync_hub.projection``); ``World.service`` is the reminder service the scheduler
would run, with a wait that moves the clock instead of sleeping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from central.app import create_app
from central.callers import ALL_REGIONS, Caller
from central.clock import FixedClock
from central.database import Database
from central.fhir import interactions
from central.fhir.interactions import Context
from central.reminders import reminder_service
from central.settings import Settings
from field_app.demo.ports import listening_socket
from sms import ReminderService
from sms.local_twilio import LocalTwilio
from tests.serving import run_in_thread

ACCOUNT = "AC" + "5" * 32
AUTH_TOKEN = "local-twilio-auth-token"
FROM_NUMBER = "+255700000001"
# Monday 23 November 2026, 05:00 UTC: 08:00 in Dar es Salaam, before the 09:00 send time.
MONDAY_EARLY = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
MONDAY = date(2026, 11, 23)
TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
HUB = Caller("hub-kilosa", ALL_REGIONS, frozenset({"system/*.read", "system/*.write"}))


@dataclass
class World:
    database: Database
    settings: Settings
    clock: FixedClock
    twilio: LocalTwilio
    service: ReminderService

    @property
    def url(self) -> str:
        return self.settings.base_url

    def hub_writes(self, *resources: dict[str, Any]) -> None:
        ctx = Context(self.database, self.settings, self.clock, HUB)
        for resource in resources:
            interactions.update(
                ctx, resource["resourceType"], resource["id"], resource, if_match=None
            )

    def resources(self, kind: str) -> list[dict[str, Any]]:
        from central.fhir.store import decode  # noqa: PLC0415 - test-only reach into rows

        with self.database.read() as session:
            rows = session.execute(
                "SELECT content FROM resources WHERE rtype = ? AND deleted = 0 ORDER BY id",
                (kind,),
            )
        return [decode(row[0]) for row in rows]

    def row(self, reminder_id: str) -> Any:
        from sms import outbox  # noqa: PLC0415

        with self.database.read() as session:
            return outbox.get(session, reminder_id)

    def settle(self) -> None:
        """Wait until the local Twilio has delivered every webhook it has to deliver."""
        assert self.twilio.drain(10.0), "the local Twilio still has webhooks to deliver"


@contextmanager
def reminder_world(database: Database, **settings: Any) -> Iterator[World]:
    clock = FixedClock(MONDAY_EARLY)
    sock = listening_socket()  # held until central listens on it: the Twilio needs its URL first
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with LocalTwilio(
        ACCOUNT, AUTH_TOKEN, sms_url=f"{base}/sms/inbound", callback_backoff=0.05
    ) as twilio:
        config = Settings(
            base_url=base,
            sms="on",
            sms_scheduler="off",
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=AUTH_TOKEN,
            twilio_from=FROM_NUMBER,
            twilio_api_url=twilio.url,
            sms_per_second=50,
            **settings,
        )
        config.check()
        service = dataclasses.replace(reminder_service(config, database, clock), wait=clock.advance)
        server, thread, _ = run_in_thread(create_app(config, clock=clock, database=database), sock)
        try:
            yield World(database, config, clock, twilio, service)
        finally:
            server.should_exit = True
            thread.join(10)


# -- what a hub pushes ----------------------------------------------------------------------------


def patient(
    patient_id: str,
    phone: str | None,
    *,
    given: str = "Amina",
    language: str = "sw",
    zone: str = "Africa/Dar_es_Salaam",
    facility: str | None = "Kilosa Health Centre",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": zone}],
        "active": True,
        "name": [{"family": "Juma", "given": [given]}],
        "communication": [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                "preferred": True,
            }
        ],
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    if facility:
        resource["managingOrganization"] = {"display": facility}
    return resource


def consent(patient_id: str, scope: str, permit: bool = True) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": f"{patient_id[:20]}-{scope.replace('_', '-')}"[:64],
        "status": "active" if permit else "inactive",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit" if permit else "deny",
            "action": [{"coding": [{"system": "urn:rural-care:consent-scope", "code": scope}]}],
        },
    }


def reminder(
    reminder_id: str,
    patient_id: str,
    *,
    day: date = MONDAY,
    template: str = "followup_due",
    language: str | None = "sw",
    status: str = "active",
    task_id: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CommunicationRequest",
        "id": reminder_id,
        "status": status,
        "category": [
            {"coding": [{"system": "urn:rural-care:reminder-template", "code": template}]}
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": day.isoformat(),
        "recipient": [{"reference": f"Patient/{patient_id}"}],
    }
    if language:
        resource["language"] = language
    if task_id:
        resource["basedOn"] = [{"reference": f"Task/{task_id}"}]
    return resource


def task(task_id: str, patient_id: str, *, due: date, status: str = "requested") -> dict[str, Any]:
    """A follow-up as the hub projects it: due on ``due`` (restriction.period.end)."""
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "plan",
        "code": {"coding": [{"system": "urn:rural-care:task-kind", "code": "anc_contact"}]},
        "description": "Next antenatal contact",
        "for": {"reference": f"Patient/{patient_id}"},
        "restriction": {"period": {"end": due.isoformat()}},
    }
