"""Referrals: a ServiceRequest for the referral and a provisional Condition for what caused it.

Both take the referral's ID (their types differ, so the IDs do not clash at central).
"""

from __future__ import annotations

from typing import Any

from sync_hub.projection.fhir import (
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    SNOMED,
    Resource,
    Targets,
    code_for,
    concept,
    reference,
    resource,
)

REFERRAL_STATUSES = {
    "requested": "active",
    "accepted": "active",
    "completed": "completed",
    "cancelled": "revoked",
}
PRIORITIES = {"emergency": "stat", "urgent": "urgent", "routine": "routine"}
CATEGORY_DISPLAYS = {
    "encounter-diagnosis": "Encounter Diagnosis",
    "problem-list-item": "Problem List Item",
}


def referral_resources(record: dict[str, Any], targets: Targets) -> list[Resource]:
    return [_service_request(record, targets), _condition(record, targets)]


def _service_request(record: dict[str, Any], targets: Targets) -> Resource:
    referral_id = record["id"]
    return resource(
        "ServiceRequest",
        referral_id,
        {
            "status": code_for(
                REFERRAL_STATUSES,
                record.get("status"),
                what="referral status",
                record_id=referral_id,
            ),
            "intent": "order",
            "priority": code_for(
                PRIORITIES, record.get("urgency"), what="urgency", record_id=referral_id
            ),
            "code": concept(SNOMED, "3457005", "Patient referral"),
            "subject": targets.patient,
            "encounter": targets.encounter(record.get("encounter_id")),
            "authoredOn": record.get("created_at"),
            "reasonReference": [reference("Condition", referral_id)],
            "note": [{"text": record["reason"]}] if record.get("reason") else None,
        },
    )


def _condition(record: dict[str, Any], targets: Targets) -> Resource:
    encounter = targets.encounter(record.get("encounter_id"))
    # A diagnosis made at a visit is an encounter diagnosis; a referral written outside one
    # puts its cause on the problem list instead.
    category = "encounter-diagnosis" if encounter else "problem-list-item"
    return resource(
        "Condition",
        record["id"],
        {
            "clinicalStatus": concept(CONDITION_CLINICAL, "active"),
            "verificationStatus": concept(CONDITION_VERIFICATION, "provisional"),
            "category": [concept(CONDITION_CATEGORY, category, CATEGORY_DISPLAYS[category])],
            "code": {"text": record.get("danger_signs") or record.get("reason")},
            "subject": targets.patient,
            "encounter": encounter,
            "recordedDate": record.get("created_at"),
        },
    )
