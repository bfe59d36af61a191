"""Encounters: the Encounter, its Observations, and the QuestionnaireResponse of its form.

A signed encounter's findings are final; an unsigned one (still open on the tablet) projects
its Observations as preliminary and its QuestionnaireResponse as in progress.
"""

from __future__ import annotations

import json
import re
from typing import Any

from care_record import VITAL_SIGNS
from sync_hub.projection.fhir import (
    AMENDS,
    ENCOUNTER_KIND,
    FORM,
    LOINC,
    OBSERVATION_CATEGORY,
    UCUM,
    V3_ACT_CODE,
    Resource,
    Targets,
    coding,
    concept,
    reference,
    resource,
)

VITAL_SIGN_CODES = frozenset(sign.loinc for sign in VITAL_SIGNS.values())
CATEGORY_DISPLAYS = {"vital-signs": "Vital Signs", "survey": "Survey", "exam": "Exam"}
FORM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# What R4 allows in a QuestionnaireResponse item and answer. valueReference and
# valueAttachment are left out: the engine writes neither, and a reference would have to
# resolve inside the bundle.
ITEM_KEYS = ("linkId", "definition", "text", "answer", "item")
ANSWER_VALUES = (
    "valueBoolean",
    "valueDecimal",
    "valueInteger",
    "valueDate",
    "valueDateTime",
    "valueTime",
    "valueString",
    "valueUri",
    "valueCoding",
    "valueQuantity",
)


def encounter_resources(record: dict[str, Any], targets: Targets) -> list[Resource]:
    """The Encounter, then its QuestionnaireResponse (if it has a form), then its Observations
    in the order they were recorded. Raises ValueError for a form whose answers are damaged."""
    found = [_encounter(record, targets)]
    form = record.get("form")
    if isinstance(form, dict):
        found.append(_questionnaire_response(record, form, targets))
    observations = record.get("observations") or {}
    found += [
        _observation(observation_id, observations[observation_id], record, targets)
        for observation_id in sorted(observations)
    ]
    return found


def _signed(record: dict[str, Any]) -> bool:
    return record.get("signed_at") is not None


def _encounter(record: dict[str, Any], targets: Targets) -> Resource:
    amended = targets.encounter(record.get("amends"))
    return resource(
        "Encounter",
        record["id"],
        {
            # The amended encounter is not a parent visit (partOf), so the link is our own.
            "extension": [{"url": AMENDS, "valueReference": amended}] if amended else None,
            "status": "finished",
            "class": coding(V3_ACT_CODE, "HH", "home health"),
            "type": [concept(ENCOUNTER_KIND, record["kind"])],
            "subject": targets.patient,
            "period": {"start": record["started_at"]},
        },
    )


def _observation(
    observation_id: str, finding: dict[str, Any], record: dict[str, Any], targets: Targets
) -> Resource:
    from_form = isinstance(record.get("form"), dict)
    code = finding["code"]
    return resource(
        "Observation",
        observation_id,
        {
            "status": "final" if _signed(record) else "preliminary",
            "category": [_category(code, from_form)],
            "code": concept(LOINC, code, finding.get("display")),
            "subject": targets.patient,
            "encounter": reference("Encounter", record["id"]),
            "effectiveDateTime": record["started_at"],
            "issued": record.get("recorded_at"),
            **_value(finding, observation_id),
            "derivedFrom": [reference("QuestionnaireResponse", record["id"])]
            if from_form
            else None,
        },
    )


def _category(code: str, from_form: bool) -> dict[str, Any]:
    if code in VITAL_SIGN_CODES:
        return concept(OBSERVATION_CATEGORY, "vital-signs", CATEGORY_DISPLAYS["vital-signs"])
    # A form's answers are what a structured questionnaire asked: a survey; a finding recorded
    # without a form is the CHW's own examination.
    name = "survey" if from_form else "exam"
    return concept(OBSERVATION_CATEGORY, name, CATEGORY_DISPLAYS[name])


def _value(finding: dict[str, Any], observation_id: str) -> dict[str, Any]:
    if finding.get("value") is not None:
        unit = finding.get("unit")
        quantity = {"value": finding["value"], "unit": unit, "system": UCUM, "code": unit}
        return {"valueQuantity": quantity}
    if finding.get("value_boolean") is not None:
        return {"valueBoolean": finding["value_boolean"]}
    if finding.get("value_code") is not None:
        answer = coding(finding.get("value_system"), finding["value_code"])
        return {"valueCodeableConcept": {"coding": [answer]}}
    raise ValueError(f"observation {observation_id} has no value")


def _questionnaire_response(
    record: dict[str, Any], form: dict[str, Any], targets: Targets
) -> Resource:
    encounter_id = record["id"]
    return resource(
        "QuestionnaireResponse",
        encounter_id,
        {
            "language": form.get("language"),
            "questionnaire": FORM + form_name(form.get("questionnaire"), record["kind"]),
            "status": "completed" if _signed(record) else "in-progress",
            "subject": targets.patient,
            "encounter": reference("Encounter", encounter_id),
            "authored": record.get("recorded_at") or record["started_at"],
            "item": response_items(form.get("items"), encounter_id),
        },
    )


def form_name(questionnaire: object, kind: str) -> str:
    """The form's name: the last segment of its canonical URL without the version (field_app
    writes ``https://.../Questionnaire/NAME|VERSION``); the encounter's kind, which field_app
    sets to the same name, when the canonical has no usable name."""
    if isinstance(questionnaire, str):
        last = re.split(r"[/:]", questionnaire.partition("|")[0])[-1]
        if FORM_NAME.match(last):
            return last
    return kind


def response_items(items: object, encounter_id: str) -> list[dict[str, Any]]:
    """The stored answers as R4 QuestionnaireResponse items, with any key R4 does not define
    dropped. Raises ValueError if they are not a JSON list of items with linkIds."""
    try:
        parsed = json.loads(items) if isinstance(items, str) else None
    except json.JSONDecodeError:
        parsed = None
    return _items(parsed, encounter_id)


def _items(items: object, encounter_id: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise _damaged(encounter_id)
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("linkId"), str):
            raise _damaged(encounter_id)
        kept = {key: item[key] for key in ITEM_KEYS if item.get(key) not in (None, [], "")}
        if "answer" in kept:
            kept["answer"] = _answers(kept["answer"], encounter_id)
        if "item" in kept:
            kept["item"] = _items(kept["item"], encounter_id)
        found.append({key: value for key, value in kept.items() if value != []})
    return found


def _answers(answers: object, encounter_id: str) -> list[dict[str, Any]]:
    if not isinstance(answers, list):
        raise _damaged(encounter_id)
    found = []
    for answer in answers:
        if not isinstance(answer, dict):
            raise _damaged(encounter_id)
        kept: dict[str, Any] = {key: answer[key] for key in ANSWER_VALUES if key in answer}
        if answer.get("item"):
            kept["item"] = _items(answer["item"], encounter_id)
        if kept:
            found.append(kept)
    return found


def _damaged(encounter_id: str) -> ValueError:
    return ValueError(f"the form answers of encounter {encounter_id} are not R4 response items")
