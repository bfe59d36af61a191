"""A completed form as the chart keeps it: QuestionnaireResponse items, Observations, and the
visit written into a real encrypted store (the encounter, referral and tasks in one write)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from care_record import FixedClock
from field_app import Session, Settings, add_patient, unlock
from field_app.errors import BadAnswer, FormIncomplete
from field_app.forms import CompletedForm, Form, FormLibrary, FormState
from field_app.forms.response import observations, response_items
from field_app.visits import record_form_visit, start_form, write_form_visit

Json = dict[str, Any]
EXT = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
USER, PIN = "amina", "482913"
TODAY = date(2025, 3, 1)  # the conftest clock's day in Africa/Nairobi and UTC alike


def loinc(code: str, display: str) -> list[Json]:
    return [{"system": LOINC, "code": code, "display": display}]


EXTRACT = {"url": SDC + "sdc-questionnaire-observationExtract", "valueBoolean": True}
ITEMS: list[Json] = [
    {
        "linkId": "vitals",
        "type": "group",
        "text": "Vital signs",
        "item": [
            {
                "linkId": "weight",
                "type": "quantity",
                "text": "Weight",
                "required": True,
                "code": loinc("29463-7", "Body weight"),
                "extension": [
                    {"url": EXT + "questionnaire-unitOption", "valueCoding": {"code": "kg"}},
                    {"url": EXT + "questionnaire-unitOption", "valueCoding": {"code": "g"}},
                    {"url": EXT + "minValue", "valueDecimal": 0.5},
                    {"url": EXT + "maxValue", "valueDecimal": 150.0},
                    EXTRACT,
                ],
            },
            {
                "linkId": "temp",
                "type": "decimal",
                "text": "Temperature",
                "code": loinc("8310-5", "Body temperature"),
                "extension": [
                    {"url": EXT + "questionnaire-unitOption", "valueCoding": {"code": "Cel"}},
                    EXTRACT,
                ],
            },
        ],
    },
    {
        "linkId": "fever",
        "type": "boolean",
        "text": "Fever?",
        "required": True,
        "code": loinc("45701-0", "Fever"),
        "extension": [EXTRACT],
    },
    {
        "linkId": "signs",
        "type": "choice",
        "text": "Danger signs",
        "repeats": True,
        "code": loinc("75325-1", "Symptom"),
        "extension": [EXTRACT],
        "enableWhen": [{"question": "fever", "operator": "=", "answerBoolean": True}],
        "answerOption": [
            {"valueCoding": {"system": SNOMED, "code": "91175000", "display": "Seizure"}},
            {"valueCoding": {"code": "lethargic", "display": "Very sleepy"}},
        ],
    },
    {
        "linkId": "extra",
        "type": "group",
        "text": "Optional",
        "item": [{"linkId": "note", "type": "string", "text": "Note"}],
    },
    {"linkId": "seen_on", "type": "date", "text": "Seen on"},
    {
        "linkId": "heavy",
        "type": "boolean",
        "text": "Over 100 kg",
        "extension": [
            {
                "url": SDC + "sdc-questionnaire-calculatedExpression",
                "valueExpression": {"language": "text/fhirpath", "expression": "weight > 100"},
            }
        ],
    },
]
RULES: list[Json] = [
    {
        "id": "seizure",
        "when": "signs contains '91175000'",
        "source": "S",
        "referral": "emergency",
        "danger_sign": "Seizure",
        "reason": "Seizure: to hospital now.",
        "tasks": [
            {
                "kind": "referral_check",
                "description": "Check they reached hospital",
                "due_in_days": 1,
                "reminders": [{"template": "referral_check", "days_before": 0}],
            }
        ],
    },
    {
        "id": "fever",
        "when": "fever = true",
        "source": "S",
        "referral": "urgent",
        "reason": "Fever: clinic today.",
        "tasks": [
            {
                "kind": "recheck",
                "description": "Recheck the fever",
                "due_in_days": 3,
                "reminders": [{"template": "followup_due", "days_before": 1}],
            }
        ],
    },
]


def write_form(folder: Path, name: str = "f", record: str = "visit") -> FormLibrary:
    questionnaire = {"resourceType": "Questionnaire", "name": name, "url": "urn:f", "version": "2"}
    rule_file: Json = {
        "format": "care-rules/1",
        "form": name,
        "version": "2",
        "sources": {"S": "s"},
    }
    (folder / f"{name}.questionnaire.json").write_text(json.dumps(questionnaire | {"item": ITEMS}))
    rule_file |= {"rules": RULES, "record": record}
    (folder / f"{name}.rules.json").write_text(json.dumps(rule_file))
    return FormLibrary(folder)


@pytest.fixture
def form(tmp_path: Path) -> Form:
    return write_form(tmp_path).get("f")


def completed(form: Form, answers: Json) -> CompletedForm:
    state = FormState(form, today=TODAY)
    state.answer_all(answers)
    return state.complete()


FEVERISH: Json = {
    "weight": {"value": 3200, "unit": "g"},
    "temp": "38,5",
    "fever": True,
    "signs": ["91175000", "lethargic"],
    "seen_on": "2025-02-28",
}


# -- QuestionnaireResponse items ---------------------------------------------------------------


def test_response_items_are_the_enabled_answered_items_nested_by_group(form: Form) -> None:
    items = response_items(completed(form, FEVERISH))

    assert items == [
        {
            "linkId": "vitals",
            "text": "Vital signs",
            "item": [
                {
                    "linkId": "weight",
                    "text": "Weight",
                    "answer": [
                        {
                            "valueQuantity": {
                                "value": 3200.0,
                                "unit": "g",
                                "system": "http://unitsofmeasure.org",
                                "code": "g",
                            }
                        }
                    ],
                },
                {"linkId": "temp", "text": "Temperature", "answer": [{"valueDecimal": 38.5}]},
            ],
        },
        {"linkId": "fever", "text": "Fever?", "answer": [{"valueBoolean": True}]},
        {
            "linkId": "signs",
            "text": "Danger signs",
            "answer": [
                {"valueCoding": {"system": SNOMED, "code": "91175000", "display": "Seizure"}},
                {"valueCoding": {"code": "lethargic", "display": "Very sleepy"}},
            ],
        },
        {"linkId": "seen_on", "text": "Seen on", "answer": [{"valueDate": "2025-02-28"}]},
        {"linkId": "heavy", "text": "Over 100 kg", "answer": [{"valueBoolean": False}]},
    ]


def test_a_kept_answer_to_a_disabled_question_is_not_in_the_response(form: Form) -> None:
    state = FormState(form, today=TODAY)
    state.answer_all(FEVERISH | {"note": "sleepy since morning"})
    state.answer("fever", False)

    done = state.complete()
    items = response_items(done)

    assert state.given("signs") == ["91175000", "lethargic"]
    assert [i["linkId"] for i in items] == ["vitals", "fever", "extra", "seen_on", "heavy"]
    assert items[2] == {
        "linkId": "extra",
        "text": "Optional",
        "item": [
            {"linkId": "note", "text": "Note", "answer": [{"valueString": "sleepy since morning"}]}
        ],
    }
    assert done.conclusions.urgency is None


def test_observations_carry_loinc_codes_and_canonical_ucum_units(form: Form) -> None:
    found = observations(completed(form, FEVERISH))

    assert found == [
        {"code": "29463-7", "display": "Body weight", "value": 3.2, "unit": "kg"},
        {"code": "8310-5", "display": "Body temperature", "value": 38.5, "unit": "Cel"},
        {"code": "45701-0", "display": "Fever", "value_boolean": True},
        {"code": "75325-1", "display": "Symptom", "value_code": "91175000", "value_system": SNOMED},
        {"code": "75325-1", "display": "Symptom", "value_code": "lethargic"},
    ]


def test_an_incomplete_form_lists_linkids_and_reasons_but_never_values(form: Form) -> None:
    state = FormState(form, today=TODAY)
    state.answer_all({"weight": {"value": 987654, "unit": "g"}, "temp": "warm-ish", "signs": ["x"]})

    with pytest.raises(FormIncomplete) as caught:
        state.complete()

    assert caught.value.problems == {
        "weight": "must be at most 150",
        "temp": "must be a number",
        "fever": "is required",
    }
    message = str(caught.value)
    assert message.index("weight") < message.index("temp") < message.index("fever")
    for value in ("987654", "987.654", "warm-ish"):
        assert value not in str(caught.value)
        assert all(value not in p for p in caught.value.problems.values())


# -- writing a visit into a real store ----------------------------------------------------------


def reload_chart(settings: Settings, clock: FixedClock, patient_id: str) -> Json:
    """The chart as a fresh unlock reads it from disk."""
    opened = unlock(settings, clock, USER, PIN)
    try:
        return dict(opened.store.get_chart(patient_id).view().collections)
    finally:
        opened.lock()


def test_write_form_visit_records_everything_in_one_chart_change(
    tmp_path: Path,
    *,
    session: Session,
    settings: Settings,
    clock: FixedClock,
    amina: Json,
    row_counts: Callable[[], tuple[int, int]],
) -> None:
    library = write_form(tmp_path)
    patient_id = add_patient(session, amina)
    heads_before = session.store.get_chart(patient_id).heads
    state = start_form(
        session.store, library, patient_id, "f", language="en", zone="Africa/Nairobi"
    )
    state.answer_all(FEVERISH)

    visit = write_form_visit(session.store, patient_id, state, zone="Africa/Nairobi")

    chart = session.store.get_chart(patient_id)
    assert len(chart.document.get_changes(heads_before)) == 1  # one transaction, one save
    stored = reload_chart(settings, clock, patient_id)
    (encounter_id,) = stored["encounters"]
    assert encounter_id == visit.encounter_id
    encounter = stored["encounters"][encounter_id]
    assert encounter["kind"] == "f"
    assert encounter["zone"] == "Africa/Nairobi"
    assert encounter["form"]["questionnaire"] == "urn:f|2"
    assert json.loads(encounter["form"]["items"]) == response_items(visit.completed)
    assert sorted(o["code"] for o in encounter["observations"].values()) == [
        "29463-7",
        "45701-0",
        "75325-1",
        "75325-1",
        "8310-5",
    ]
    (referral,) = stored["referrals"].values()
    assert referral["urgency"] == "emergency"
    assert referral["reason"] == "Seizure: to hospital now."
    assert referral["danger_signs"] == "Seizure"
    assert referral["encounter_id"] == encounter_id
    tasks = {t["kind"]: t for t in stored["tasks"].values()}
    assert set(tasks) == {"referral_check", "recheck"}
    assert tasks["recheck"]["due"] == (TODAY + timedelta(days=3)).isoformat()
    assert tasks["recheck"]["encounter_id"] == encounter_id
    (reminder,) = tasks["recheck"]["reminders"].values()
    assert reminder == {"send_on": "2025-03-03", "template": "followup_due", "language": "en"}
    assert row_counts() == (1, 2)
    assert {t["kind"] for t in session.store.tasks_due("2025-12-31")} == {
        "referral_check",
        "recheck",
    }


def test_a_visit_without_findings_writes_no_referral_and_no_tasks(
    tmp_path: Path, session: Session, settings: Settings, clock: FixedClock, amina: Json
) -> None:
    library = write_form(tmp_path)
    patient_id = add_patient(session, amina)

    visit = record_form_visit(session, library, patient_id, "f", {"weight": 61, "fever": False})

    stored = reload_chart(settings, clock, patient_id)
    assert list(stored["encounters"]) == [visit.encounter_id]
    assert stored["referrals"] == {}
    assert stored["tasks"] == {}
    assert visit.referral is None
    assert visit.tasks == ()


@pytest.mark.parametrize(
    "answers",
    [
        {"fever": True},  # weight is required
        {"weight": "a lot", "fever": False},
        {"weight": {"value": 200, "unit": "kg"}, "fever": False},
    ],
)
def test_an_incomplete_form_writes_nothing(
    tmp_path: Path,
    *,
    session: Session,
    amina: Json,
    answers: Json,
    chart_doc: Callable[[str], bytes],
    row_counts: Callable[[], tuple[int, int]],
) -> None:
    library = write_form(tmp_path)
    patient_id = add_patient(session, amina)
    bytes_before, heads_before = chart_doc(patient_id), session.store.get_chart(patient_id).heads
    state = start_form(
        session.store, library, patient_id, "f", language="en", zone="Africa/Nairobi"
    )
    state.answer_all(answers)

    with pytest.raises(FormIncomplete):
        write_form_visit(session.store, patient_id, state, zone="Africa/Nairobi")

    assert chart_doc(patient_id) == bytes_before
    assert session.store.get_chart(patient_id).heads == heads_before
    assert row_counts() == (1, 0)


def test_a_registration_form_is_not_written_as_a_visit(
    tmp_path: Path, session: Session, amina: Json, chart_doc: Callable[[str], bytes]
) -> None:
    library = write_form(tmp_path, name="reg", record="patient")
    patient_id = add_patient(session, amina)
    before = chart_doc(patient_id)
    state = start_form(
        session.store, library, patient_id, "reg", language="en", zone="Africa/Nairobi"
    )
    state.answer_all({"weight": 60, "fever": False})

    with pytest.raises(BadAnswer, match="registers a patient"):
        write_form_visit(session.store, patient_id, state, zone="Africa/Nairobi")

    assert chart_doc(patient_id) == before


def test_start_form_gives_the_expressions_the_patient_and_the_local_day(
    tmp_path: Path, session: Session, amina: Json
) -> None:
    library = write_form(tmp_path)
    patient_id = add_patient(session, amina)

    # 08:30 on 1 March in UTC is 22:30 on 28 February in Honolulu.
    state = start_form(
        session.store, library, patient_id, "f", language="sw", zone="Pacific/Honolulu"
    )

    assert state.today == date(2025, 2, 28)
    assert state.language == "sw"
    assert state._env["patient"] == {
        "birth_date": amina["birth_date"],
        "sex": "female",
        "village": amina["village"],
    }
