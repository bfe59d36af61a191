"""The patient: Patient, pregnancy status, consents, allergies and medications.

Field values are those the chart view shows: for a conflicted field, the newest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from care_record import ChartView
from care_record.schema import ConsentScope
from sync_hub.projection.fhir import (
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    BCP_47,
    CONSENT_SCOPE,
    CONSENT_SCOPE_NAME,
    LOINC,
    OBSERVATION_CATEGORY,
    PATIENT_IDENTIFIER,
    TIMEZONE,
    V3_ACT_CODE,
    Region,
    Resource,
    Targets,
    code_for,
    coding,
    concept,
    known_zone,
    named_id,
    records,
    resource,
)

GENDERS = {sex: sex for sex in ("female", "male", "other", "unknown")}

PREGNANCY_STATUS_ID = "Observation/pregnancy-status"
PREGNANCY_ANSWERS = {
    "pregnant": ("LA15173-0", "Pregnant"),
    "not_pregnant": ("LA26683-5", "Not pregnant"),
    "unknown": ("LA4489-6", "Unknown"),
}

# Consent state -> (Consent.status, provision.type). Refused and withdrawn both deny, so a
# reader that checks only one of the two elements still never sends without consent.
CONSENT_STATES = {
    "granted": ("active", "permit"),
    "refused": ("rejected", "deny"),
    "withdrawn": ("inactive", "deny"),
}

CRITICALITIES = {"low": "low", "high": "high", "unable_to_assess": "unable-to-assess"}
ALLERGY_CLINICAL_STATUSES = {"active": "active", "inactive": "inactive"}
# "inactive" is a medication no longer taken: R4's "completed", not "stopped" (which says it
# was halted before the course was done, something the chart does not know).
MEDICATION_STATUSES = {
    "active": "active",
    "inactive": "completed",
    "entered_in_error": "entered-in-error",
}


def patient(view: ChartView, region: Region) -> Resource:
    fields = view.fields
    return resource(
        "Patient",
        view.id,
        {
            # Central's reminders keep quiet hours in this zone.
            "extension": [{"url": TIMEZONE, "valueCode": patient_zone(view, region.timezone)}],
            "identifier": [{"system": PATIENT_IDENTIFIER, "value": view.id}],
            "active": True,
            "name": _names(fields.get("family"), fields.get("given")),
            "telecom": _phones(fields.get("phone")),
            "gender": _gender(fields.get("sex"), view.id),
            "birthDate": fields.get("birth_date"),
            # A village is the patient's community: R4 defines Address.city as "city, town,
            # suburb, village or other community".
            "address": [{"city": fields["village"]}] if fields.get("village") else None,
            "communication": _languages(fields.get("language")),
            # A name for reminders to quote; central holds no Organization to point at.
            "managingOrganization": {"display": region.facility} if region.facility else None,
        },
    )


def patient_zone(view: ChartView, default: str) -> str:
    """The time zone of the patient's newest encounter (by start; on a tie, the later ID),
    which is the zone of the tablet that recorded it; ``default`` if the chart has none.
    Raises ValueError if that encounter's start or zone is damaged."""
    encounters = records(view, "encounters")
    if not encounters:
        return default
    newest = max(encounters, key=lambda e: (_started(e), e["id"]))
    zone = newest["zone"]
    if not known_zone(zone):
        raise ValueError(f"the time zone of encounter {newest['id']} is not an IANA time zone")
    return str(zone)


def _started(encounter: dict[str, Any]) -> datetime:
    try:
        started = datetime.fromisoformat(encounter["started_at"])
    except (TypeError, ValueError):
        started = None
    if started is None or started.tzinfo is None:
        raise ValueError(f"the start of encounter {encounter['id']} is not a time with a zone")
    return started


def _names(family: object, given: object) -> list[dict[str, Any]]:
    # The given name stays as typed (one element): splitting on spaces would guess.
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = [given]
    return [name] if name else []


def _phones(phone: object) -> list[dict[str, str]]:
    return [{"system": "phone", "value": str(phone), "use": "mobile"}] if phone else []


def _gender(sex: object, chart_id: str) -> str | None:
    return None if sex is None else code_for(GENDERS, sex, what="sex", record_id=chart_id)


def _languages(language: object) -> list[dict[str, Any]]:
    if not language:
        return []
    return [{"language": concept(BCP_47, str(language)), "preferred": True}]


def pregnancy_status(view: ChartView, targets: Targets) -> list[Resource]:
    """The current pregnancy status: one Observation per chart, updated in place."""
    status = view.fields.get("pregnancy_status")
    if status is None:
        return []
    answer = code_for(PREGNANCY_ANSWERS, status, what="pregnancy status", record_id=view.id)
    return [
        resource(
            "Observation",
            named_id(view.id, PREGNANCY_STATUS_ID),
            {
                "status": "final",
                "category": [concept(OBSERVATION_CATEGORY, "social-history", "Social History")],
                "code": concept(LOINC, "82810-3", "Pregnancy status"),
                "subject": targets.patient,
                "valueCodeableConcept": concept(LOINC, *answer),
            },
        )
    ]


def consents(view: ChartView, targets: Targets) -> list[Resource]:
    """One Consent per scope the chart has recorded, in a fixed order."""
    return [
        _consent(view.id, scope, state, targets)
        for scope in sorted(get_args(ConsentScope))
        if (state := view.consent(scope)) is not None
    ]


def _consent(chart_id: str, scope: str, state: object, targets: Targets) -> Resource:
    status, provision = code_for(CONSENT_STATES, state, what=f"consent {scope}", record_id=chart_id)
    return resource(
        "Consent",
        named_id(chart_id, f"Consent/{scope}"),
        {
            "status": status,
            "scope": concept(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
            "category": [concept(LOINC, "59284-0", "Consent Document")],
            "patient": targets.patient,
            # The programme asks before it sends or shares: an opt-in regime for every scope.
            "policyRule": concept(V3_ACT_CODE, "OPTIN", "opt-in"),
            "provision": {
                "type": provision,
                "action": [{"coding": [coding(CONSENT_SCOPE_NAME, scope)]}],
            },
        },
    )


def allergies(view: ChartView, targets: Targets) -> list[Resource]:
    return [_allergy(record, targets) for record in records(view, "allergies")]


def _allergy(record: dict[str, Any], targets: Targets) -> Resource:
    record_id = record["id"]
    return resource(
        "AllergyIntolerance",
        record_id,
        {
            **_allergy_status(record.get("status"), record_id),
            "criticality": code_for(
                CRITICALITIES, record.get("criticality"), what="criticality", record_id=record_id
            ),
            "code": {"text": record.get("substance")},
            "patient": targets.patient,
            "recordedDate": record.get("created_at"),
        },
    )


def _allergy_status(status: object, record_id: str) -> dict[str, Any]:
    # R4 ait-1 and ait-2: a clinical status unless, and only unless, entered in error.
    if status == "entered_in_error":
        return {"verificationStatus": concept(ALLERGY_VERIFICATION, "entered-in-error")}
    clinical = code_for(
        ALLERGY_CLINICAL_STATUSES, status, what="allergy status", record_id=record_id
    )
    return {"clinicalStatus": concept(ALLERGY_CLINICAL, clinical)}


def medications(view: ChartView, targets: Targets) -> list[Resource]:
    return [_medication(record, targets) for record in records(view, "medications")]


def _medication(record: dict[str, Any], targets: Targets) -> Resource:
    record_id = record["id"]
    return resource(
        "MedicationStatement",
        record_id,
        {
            "status": code_for(
                MEDICATION_STATUSES,
                record.get("status"),
                what="medication status",
                record_id=record_id,
            ),
            "medicationCodeableConcept": {"text": record.get("name")},
            "subject": targets.patient,
            "dateAsserted": record.get("created_at"),
            "dosage": [{"text": record["dosage"]}] if record.get("dosage") else None,
        },
    )
