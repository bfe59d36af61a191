"""What the reminder service needs of the FHIR store it is mounted in (central's).

``sms`` reads and writes plain FHIR R4 JSON through this Protocol and never imports central;
central implements it over its own store, in the caller's transaction, with its audit trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sms.database import Session

Resource = dict[str, Any]
# Where a reading of changes stopped: (lastUpdated instant, resource type, ID), in that order.
Position = tuple[str, str, str]


@dataclass(frozen=True)
class PatientRecords:
    """One patient's resources that reminders are planned from."""

    patient_id: str
    patient: Resource | None  # None: not (yet) at central
    consents: Sequence[Resource] = field(default_factory=tuple)
    requests: Sequence[Resource] = field(default_factory=tuple)  # CommunicationRequests
    tasks: Sequence[Resource] = field(default_factory=tuple)  # the follow-ups they are for


class Records(Protocol):
    def changes(
        self, session: Session, after: Position | None, limit: int
    ) -> tuple[list[str], Position | None]:
        """IDs of patients whose Patient, Consent or CommunicationRequest changed after
        ``after`` (in lastUpdated order, at most ``limit`` resources read), and where the
        reading stopped (None when nothing was read)."""
        ...

    def patient_records(self, session: Session, patient_ids: Sequence[str]) -> list[PatientRecords]:
        """The reminder resources of each patient, in the order asked."""
        ...

    def write(self, session: Session, resources: Sequence[Resource]) -> None:
        """Create these resources (Communications and Tasks with their IDs set) in the
        session's transaction, as the reminder service."""
        ...
