"""Required value-set bindings of the resources central accepts (FHIR R4 4.0.1).

``fhir.resources`` checks structure and datatypes but not codes against value sets. FHIR calls
a binding *required* when a code outside the value set makes the resource invalid; those are
checked here, for every element of the accepted resources (and the datatypes inside them) that
R4 binds as required. Paths are dotted element names; arrays are walked through.

A ``code`` element lists its allowed codes. A ``CodeableConcept`` bound as required (marked
with its code system) must carry at least one coding from that system with an allowed code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from central.errors import InvalidResource

_REQUEST_STATUS = (
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
)
_EVENT_STATUS = (
    "preparation",
    "in-progress",
    "not-done",
    "on-hold",
    "stopped",
    "completed",
    "entered-in-error",
    "unknown",
)
_REQUEST_INTENT = (
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
)
# MedicationRequest's intents are the request intents without "directive"; Task's add "unknown".
_MEDICATION_REQUEST_INTENT = tuple(code for code in _REQUEST_INTENT if code != "directive")
_PRIORITY = ("routine", "urgent", "asap", "stat")
_ENCOUNTER_STATUS = (
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
)
_GENDER = ("male", "female", "other", "unknown")

# Datatypes whose code elements are bound as required wherever they appear.
_DATATYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "identifier": {"use": ("usual", "official", "temp", "secondary", "old")},
    "name": {"use": ("usual", "official", "temp", "nickname", "anonymous", "old", "maiden")},
    "telecom": {
        "system": ("phone", "fax", "email", "pager", "url", "sms", "other"),
        "use": ("home", "work", "temp", "old", "mobile"),
    },
    "address": {
        "use": ("home", "work", "temp", "old", "billing"),
        "type": ("postal", "physical", "both"),
    },
    "text": {"status": ("generated", "extensions", "additional", "empty")},
}

_CODES: dict[str, dict[str, tuple[str, ...]]] = {
    "Patient": {
        "gender": _GENDER,
        "contact.gender": _GENDER,
        "link.type": ("replaced-by", "replaces", "refer", "seealso"),
    },
    "Practitioner": {"gender": _GENDER},
    "Organization": {},
    "Location": {"status": ("active", "suspended", "inactive"), "mode": ("instance", "kind")},
    "Encounter": {
        "status": _ENCOUNTER_STATUS,
        "statusHistory.status": _ENCOUNTER_STATUS,
        "location.status": ("planned", "active", "reserved", "completed"),
    },
    "Observation": {
        "status": (
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
        "valueQuantity.comparator": ("<", "<=", ">=", ">"),
        "component.valueQuantity.comparator": ("<", "<=", ">=", ">"),
    },
    "Condition": {},
    "ServiceRequest": {
        "status": _REQUEST_STATUS,
        "intent": _REQUEST_INTENT,
        "priority": _PRIORITY,
    },
    "Task": {
        "status": (
            "draft",
            "requested",
            "received",
            "accepted",
            "rejected",
            "ready",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            "entered-in-error",
        ),
        "intent": ("unknown", *_MEDICATION_REQUEST_INTENT),
        "priority": _PRIORITY,
    },
    "Communication": {"status": _EVENT_STATUS, "priority": _PRIORITY},
    "CommunicationRequest": {"status": _REQUEST_STATUS, "priority": _PRIORITY},
    "QuestionnaireResponse": {
        "status": ("in-progress", "completed", "amended", "entered-in-error", "stopped"),
    },
    "Consent": {
        "status": ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error"),
        "provision.type": ("deny", "permit"),
    },
    "AllergyIntolerance": {
        "type": ("allergy", "intolerance"),
        "category": ("food", "medication", "environment", "biologic"),
        "criticality": ("low", "high", "unable-to-assess"),
        "reaction.severity": ("mild", "moderate", "severe"),
    },
    "MedicationStatement": {
        "status": (
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        ),
    },
    "MedicationRequest": {
        "status": (
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ),
        "intent": _MEDICATION_REQUEST_INTENT,
        "priority": _PRIORITY,
    },
    "Immunization": {"status": ("completed", "entered-in-error", "not-done")},
    "Procedure": {"status": _EVENT_STATUS},
    "CarePlan": {
        "status": _REQUEST_STATUS,
        "intent": ("proposal", "plan", "order", "option"),
        "activity.detail.status": (
            "not-started",
            "scheduled",
            "in-progress",
            "on-hold",
            "completed",
            "cancelled",
            "stopped",
            "unknown",
            "entered-in-error",
        ),
    },
    "Appointment": {
        "status": (
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        ),
        "participant.required": ("required", "optional", "information-only"),
        "participant.status": ("accepted", "declined", "tentative", "needs-action"),
    },
}

# CodeableConcepts bound as required: element -> (code system, allowed codes).
_CONCEPTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "Condition": {
        "clinicalStatus": (
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
        ),
        "verificationStatus": (
            "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            (
                "unconfirmed",
                "provisional",
                "differential",
                "confirmed",
                "refuted",
                "entered-in-error",
            ),
        ),
    },
    "AllergyIntolerance": {
        "clinicalStatus": (
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            ("active", "inactive", "resolved"),
        ),
        "verificationStatus": (
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            ("unconfirmed", "confirmed", "refuted", "entered-in-error"),
        ),
    },
}

ACCEPTED_TYPES = frozenset(_CODES)


def check_bindings(resource: dict[str, Any]) -> None:
    """Raise InvalidResource naming the first element whose code is outside its required value
    set. The message names the element and the allowed codes, never the value sent."""
    kind = resource["resourceType"]
    for path, allowed in _CODES.get(kind, {}).items():
        _check_codes(kind, path, _values(resource, path.split(".")), allowed)
    for element, datatype_codes in _DATATYPES.items():
        for found in _values(resource, [element]):
            for name, allowed in datatype_codes.items():
                if isinstance(found, dict) and name in found:
                    _check_codes(kind, f"{element}.{name}", [found[name]], allowed)
    for path, (system, allowed) in _CONCEPTS.get(kind, {}).items():
        for concept in _values(resource, path.split(".")):
            _check_concept(kind, path, concept, system, allowed)


def _check_codes(kind: str, path: str, values: list[Any], allowed: tuple[str, ...]) -> None:
    for value in values:
        if value not in allowed:
            raise InvalidResource(
                f"{kind}.{path}: the code is not in the required value set "
                f"(one of: {', '.join(allowed)})"
            )


def _check_concept(
    kind: str, path: str, concept: Any, system: str, allowed: tuple[str, ...]
) -> None:
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    if not any(c.get("system") == system and c.get("code") in allowed for c in codings):
        raise InvalidResource(
            f"{kind}.{path}: needs a coding from {system} with one of: {', '.join(allowed)}"
        )


def _values(node: Any, path: list[str]) -> list[Any]:
    return list(_walk(node, path))


def _walk(node: Any, path: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _walk(node[path[0]], path[1:])
