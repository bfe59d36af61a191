"""What happened to a reminder, for the CHW's tablet: a Communication per final state
(delivered, failed, cancelled), written with the state change that caused it."""

from __future__ import annotations

from datetime import datetime

from sms import fhir
from sms.model import OutboxRow
from sms.records import Resource


def outcome_for(row: OutboxRow, why: str | None, now: datetime) -> Resource:
    """The reminder-outcome Communication for ``row`` in its final state. Its ID is the same
    however often it is built for that reminder and state, so a replay writes nothing new."""
    return fhir.outcome_communication(
        communication_id=fhir.uuid7(row.send_at, f"outcome:{row.reminder_id}:{row.state}"),
        patient_id=row.patient_id,
        reminder_id=row.reminder_id,
        channel=row.channel,
        state=row.state,
        detail=why or "",
        at=now,
        based_on=row.based_on,
    )
