"""A completed form as what the chart stores: a QuestionnaireResponse, Observations, a
referral and tasks (for a visit), or demographics and consents (for a registration).

Pure functions: nothing here touches a store. ``field_app.visits`` and ``field_app.patients``
write the result in one transaction.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from field_app.forms.answers import in_canonical_unit
from field_app.forms.questionnaire import UCUM, Item, Quantity, Value
from field_app.forms.rules import Conclusions, PlannedTask
from field_app.forms.state import CompletedForm

SHORT_TEXT = 200
# A referral carries every reason at its urgency: long enough that none is ever cut in practice.
REFERRAL_TEXT = 1000
# Answers of a registration form that land in the chart's demographics, by linkId.
DEMOGRAPHIC_FIELDS = ("given", "family", "sex", "birth_date", "phone", "village", "language")
CONSENT_PREFIX = "consent_"
# A visit form's free-text item with this linkId is also the encounter's note.
NOTE = "note"


def response_items(completed: CompletedForm) -> list[dict[str, Any]]:
    """The ``item`` list of the QuestionnaireResponse: enabled, answered items in form order."""
    return _items(completed, completed.form.questionnaire.top)


def _items(completed: CompletedForm, link_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    found = []
    for link_id in link_ids:
        item = completed.form.questionnaire.items[link_id]
        entry: dict[str, Any] = {"linkId": link_id, "text": item.text}
        if item.type == "group":
            children = _items(completed, item.children)
            if children:
                found.append(entry | {"item": children})
        elif link_id in completed.answers:
            answers = [_answer(item, v) for v in completed.answers[link_id]]
            found.append(entry | {"answer": answers})
    return found


def _answer(item: Item, value: Value) -> dict[str, Any]:
    if isinstance(value, Quantity):
        return {
            "valueQuantity": {
                "value": value.value,
                "unit": value.unit,
                "system": UCUM,
                "code": value.unit,
            }
        }
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    if isinstance(value, date):
        return {"valueDate": value.isoformat()}
    option = item.option(value) if item.type == "choice" else None
    if option is not None:
        coding = {"code": option.code, "display": option.display}
        return {"valueCoding": ({"system": option.system} if option.system else {}) | coding}
    return {"valueString": value}


def observations(completed: CompletedForm) -> list[dict[str, Any]]:
    """A coded Observation for each answered item marked for observation extraction."""
    found = []
    for link_id, values in completed.answers.items():
        item = completed.form.questionnaire.items[link_id]
        if not item.extract or item.code is None:
            continue
        for value in values:
            finding = _observation_value(item, value)
            if finding is not None:
                found.append(
                    {"code": item.code.code, "display": item.code.display[:SHORT_TEXT]} | finding
                )
    return found


def _observation_value(item: Item, value: Value) -> dict[str, Any] | None:
    if isinstance(value, Quantity):
        # Observations are kept in one unit per code, so trends need no conversion.
        return {"value": in_canonical_unit(item, value), "unit": item.units[0].code}
    if isinstance(value, bool):
        return {"value_boolean": value}
    if isinstance(value, int | float) and item.units:
        return {"value": float(value), "unit": item.units[0].code}
    if item.type == "choice" and isinstance(value, str):
        option = item.option(value)
        system = option.system if option and option.system else None
        return {"value_code": value} | ({"value_system": system} if system else {})
    return None


def visit(
    completed: CompletedForm, *, started_at: datetime, zone: str, reminder_language: str
) -> dict[str, Any]:
    """The chart write (care_record ``Visit``) for a completed visit form."""
    questionnaire = completed.form.questionnaire
    encounter = {
        "kind": questionnaire.name,
        "started_at": started_at,
        "zone": zone,
        "observations": observations(completed),
        "form": {
            "questionnaire": questionnaire.canonical,
            "language": completed.language,
            "items": json.dumps(
                response_items(completed), separators=(",", ":"), ensure_ascii=False
            ),
        },
    }
    if NOTE in completed.answers:
        encounter["note"] = str(completed.answers[NOTE][0])
    return {
        "encounter": encounter,
        "referral": referral(completed),
        "tasks": [task(completed, t, reminder_language) for t in completed.conclusions.tasks],
    }


def referral(completed: CompletedForm) -> dict[str, Any] | None:
    """The referral the rules call for, with a one-line reason in the CHW's language."""
    conclusions: Conclusions = completed.conclusions
    if conclusions.urgency is None:
        return None
    found: dict[str, Any] = {
        "urgency": conclusions.urgency,
        "reason": one_line(
            [completed.text(r.reason) for r in conclusions.referral_rules],
            separator=" ",
            limit=REFERRAL_TEXT,
        ),
        "rules": one_line([r.id for r in conclusions.fired], separator=",", limit=REFERRAL_TEXT),
    }
    if conclusions.danger_signs:
        found["danger_signs"] = one_line(
            [completed.text(d) for d in conclusions.danger_signs], limit=REFERRAL_TEXT
        )
    return found


def task(completed: CompletedForm, planned: PlannedTask, language: str) -> dict[str, Any]:
    return {
        "kind": planned.kind,
        "description": one_line([completed.text(planned.description)]),
        "due": planned.due,
        "rule": planned.rule,
        "reminders": [
            {"send_on": r.send_on, "template": r.template, "language": language}
            for r in planned.reminders
        ],
    }


def demographics(completed: CompletedForm) -> dict[str, Any]:
    """Demographics from a registration form's answers (linkIds named as the chart fields)."""
    return {
        name: _scalar(completed.answers[name][0])
        for name in DEMOGRAPHIC_FIELDS
        if name in completed.answers
    }


def consents(completed: CompletedForm) -> dict[str, str]:
    """Consent scopes answered yes or no on a registration form: scope -> granted/refused."""
    return {
        link_id.removeprefix(CONSENT_PREFIX): "granted" if values[0] is True else "refused"
        for link_id, values in completed.answers.items()
        if link_id.startswith(CONSENT_PREFIX) and isinstance(values[0], bool)
    }


def one_line(texts: list[str], *, separator: str = "; ", limit: int = SHORT_TEXT) -> str:
    """Distinct texts joined on one line, cut at a whole text to fit ``limit`` characters."""
    line = ""
    for text in dict.fromkeys(" ".join(t.split()) for t in texts if t.strip()):
        candidate = f"{line}{separator}{text}" if line else text
        if len(candidate) > limit:
            return line or text[: limit - 1] + "…"
        line = candidate
    return line


def _scalar(value: Value) -> Any:
    if isinstance(value, Quantity):
        return value.value
    return value
