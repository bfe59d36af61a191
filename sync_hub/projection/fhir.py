"""The pieces every projected resource is built from: code systems, codings, references and
stable IDs (docs/fhir.md, "Naming" and "The projection")."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from care_record import ChartView

Resource = dict[str, Any]
T = TypeVar("T")

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
BCP_47 = "urn:ietf:bcp:47"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
# FHIR R5's core extension for a resource's IANA time zone (R4 readers know it from the
# extensions pack); a plain valueCode, so R4 validators accept it.
TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"

REGION = "urn:rural-care:region"
PATIENT_IDENTIFIER = "urn:rural-care:patient"
ENCOUNTER_KIND = "urn:rural-care:encounter-kind"
TASK_KIND = "urn:rural-care:task-kind"
REMINDER_TEMPLATE = "urn:rural-care:reminder-template"
MESSAGE_CATEGORY = "urn:rural-care:message"
CONSENT_SCOPE_NAME = "urn:rural-care:consent-scope"
AMENDS = "urn:rural-care:amends"
FORM = "urn:rural-care:form:"


def coding(system: str | None, code: str, display: str | None = None) -> dict[str, str]:
    found = {"system": system, "code": code, "display": display}
    return {k: v for k, v in found.items() if v is not None}


def concept(system: str | None, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [coding(system, code, display)]}


def reference(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def named_id(chart_id: str, name: str) -> str:
    """The ID of a resource that has no UUID of its own in the chart: a UUIDv5 in the chart's
    own namespace, so the same chart always names it the same and two charts never collide."""
    return str(uuid.uuid5(uuid.UUID(chart_id), name))


def resource(resource_type: str, resource_id: str, elements: Mapping[str, Any]) -> Resource:
    """A resource with the elements that have a value: FHIR JSON has no nulls and no empty
    arrays, so an absent value is left out rather than written empty."""
    present = {k: v for k, v in elements.items() if v is not None and v != []}
    return {"resourceType": resource_type, "id": resource_id, **present}


def code_for(table: Mapping[str, T], value: object, *, what: str, record_id: str) -> T:
    """The FHIR code for a chart value. Raises ValueError for a value the chart's schema does
    not allow (a damaged chart), naming the record but not the value."""
    found = table.get(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"{what} of record {record_id} is not one the chart schema allows")
    return found


@dataclass(frozen=True)
class Region:
    """What the hub knows of its region that no chart says: ``code``, the region tag on every
    resource; ``timezone``, the IANA zone of a patient with no visit yet; ``facility``, the
    name of the health facility its patients attend ("" when none is set)."""

    code: str
    timezone: str
    facility: str = ""


def known_zone(name: object) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows."""
    if not isinstance(name, str):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Targets:
    """What the chart's resources may point at. A reference is written only to a record that is
    in the chart, so every reference resolves inside the bundle."""

    patient_id: str
    encounters: frozenset[str]
    messages: frozenset[str]

    @classmethod
    def of(cls, view: ChartView) -> Targets:
        return cls(
            patient_id=view.id,
            encounters=frozenset(view.collections.get("encounters", {})),
            messages=frozenset(view.collections.get("messages", {})),
        )

    @property
    def patient(self) -> dict[str, str]:
        return reference("Patient", self.patient_id)

    def encounter(self, encounter_id: object) -> dict[str, str] | None:
        if isinstance(encounter_id, str) and encounter_id in self.encounters:
            return reference("Encounter", encounter_id)
        return None

    def message(self, message_id: object) -> dict[str, str] | None:
        if isinstance(message_id, str) and message_id in self.messages:
            return reference("Communication", message_id)
        return None


def records(view: ChartView, collection: str) -> list[dict[str, Any]]:
    """A collection's records, oldest first; none if the chart has no such collection."""
    return view.records(collection) if collection in view.collections else []
