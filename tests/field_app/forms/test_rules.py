"""Rules (care-rules/1) over a form's answers: urgency, the referral's reason, tasks, reminders."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from field_app.forms import Form, FormLibrary, FormState
from field_app.forms.response import REFERRAL_TEXT, referral

Json = dict[str, Any]
TODAY = date(2025, 3, 1)

ITEMS: list[Json] = [
    {"linkId": "fever", "type": "boolean", "text": "Fever?"},
    {"linkId": "convulsing", "type": "boolean", "text": "Convulsions?"},
    {"linkId": "cough_days", "type": "integer", "text": "Days of cough"},
    {
        "linkId": "next_dose",
        "type": "date",
        "text": "Next dose due",
        # A maxValue lets the date be in the future.
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueDate": "2099-12-31"}
        ],
    },
]


def write_form(folder: Path, rules: list[Json]) -> Form:
    questionnaire = {"resourceType": "Questionnaire", "name": "f", "url": "urn:f", "version": "1"}
    rule_file = {"format": "care-rules/1", "form": "f", "version": "1", "sources": {"S": "s"}}
    (folder / "f.questionnaire.json").write_text(json.dumps(questionnaire | {"item": ITEMS}))
    (folder / "f.rules.json").write_text(json.dumps(rule_file | {"rules": rules}))
    return FormLibrary(folder).get("f")


def rule(rule_id: str, condition: str, **extra: Any) -> Json:
    return {"id": rule_id, "when": condition, "source": "S", "reason": f"{rule_id} reason"} | extra


def task(kind: str, **due: Any) -> Json:
    return {"kind": kind, "description": f"{kind} task"} | due


def filled(form: Form, **answers: object) -> FormState:
    state = FormState(form, today=TODAY)
    state.answer_all(answers)
    return state


URGENCY_RULES = [
    rule("fever", "fever = true", referral="routine"),
    rule("long_cough", "cough_days >= 14", referral="urgent"),
    rule("convulsing", "convulsing = true", referral="emergency", danger_sign="Convulsions"),
    rule("note_only", "cough_days >= 1"),
]


@pytest.mark.parametrize(
    ("answers", "urgency", "fired"),
    [
        ({}, None, []),
        ({"cough_days": 3}, None, ["note_only"]),
        ({"fever": True}, "routine", ["fever"]),
        ({"fever": True, "cough_days": 20}, "urgent", ["fever", "long_cough", "note_only"]),
        ({"convulsing": True, "fever": True}, "emergency", ["fever", "convulsing"]),
        ({"fever": False, "convulsing": False, "cough_days": 13}, None, ["note_only"]),
    ],
)
def test_the_urgency_is_the_highest_of_the_fired_rules(
    tmp_path: Path, answers: Json, urgency: str | None, fired: list[str]
) -> None:
    state = filled(write_form(tmp_path, URGENCY_RULES), **answers)

    assert state.conclusions.urgency == urgency
    assert [r.id for r in state.conclusions.fired] == fired


def test_the_referral_gives_the_reasons_at_its_urgency_on_one_line(tmp_path: Path) -> None:
    rules = [
        rule("fever", "fever = true", referral="routine", reason="Warm skin"),
        rule("cough", "cough_days >= 14", referral="urgent", reason="Long\n  cough"),
        rule(
            "both",
            "fever = true and cough_days >= 14",
            referral="urgent",
            reason="Fever   and cough",
        ),
        rule("again", "cough_days >= 20", referral="urgent", reason="Long cough"),
        rule("convulsing", "convulsing = true", danger_sign="Convulsions", reason="Fits"),
    ]
    state = filled(write_form(tmp_path, rules), fever=True, cough_days=21, convulsing=True)

    found = referral(state.complete())

    assert found is not None
    assert found["urgency"] == "urgent"
    assert found["rules"] == "fever,cough,both,again,convulsing"
    assert found["danger_signs"] == "Convulsions"
    reason = found["reason"]
    assert "\n" not in reason
    assert reason.count("Long cough") == 1  # the same reason twice is given once
    assert reason.index("Long cough") < reason.index("Fever and cough")  # in file order
    assert "Warm skin" not in reason  # below the referral's urgency
    assert "Fits" not in reason  # no referral from that rule


def test_a_long_referral_reason_is_cut_at_a_whole_reason(tmp_path: Path) -> None:
    reasons = [f"Reason {i}: " + "x" * 290 for i in range(6)]
    rules = [
        rule(f"r{i}", "fever = true", referral="urgent", reason=text)
        for i, text in enumerate(reasons)
    ]
    completed = filled(write_form(tmp_path, rules), fever=True).complete()

    found = referral(completed)

    assert found is not None
    reason = found["reason"]
    assert "\n" not in reason
    assert len(reason) <= REFERRAL_TEXT
    kept = [text for text in reasons if text in reason]
    assert kept == reasons[: len(kept)]
    assert 1 <= len(kept) < len(reasons)
    assert "x" * 291 not in reason  # no reason is cut in the middle


def test_no_referral_when_no_rule_refers(tmp_path: Path) -> None:
    completed = filled(write_form(tmp_path, URGENCY_RULES), cough_days=2).complete()

    assert referral(completed) is None


def test_tasks_of_the_same_kind_keep_the_earliest_due_date(tmp_path: Path) -> None:
    rules = [
        rule(
            "a",
            "fever = true",
            tasks=[task("recheck", due_in_days=7), task("visit", due_in_days=30)],
        ),
        rule("b", "cough_days > 0", tasks=[task("recheck", due_in_days=2)]),
        rule("c", "cough_days > 5", tasks=[task("recheck", due_in_days=3)]),
    ]
    state = filled(write_form(tmp_path, rules), fever=True, cough_days=6)

    planned = {t.kind: (t.due, t.rule) for t in state.conclusions.tasks}

    assert planned == {
        "recheck": (TODAY + timedelta(days=2), "b"),
        "visit": (TODAY + timedelta(days=30), "a"),
    }


@pytest.mark.parametrize(
    ("next_dose", "due"),
    [
        ("2025-03-10", date(2025, 3, 10)),
        ("2025-03-01", TODAY),
        ("2025-02-01", TODAY),  # missed weeks ago: due now
        (None, TODAY),  # no date at all: due now
    ],
)
def test_a_due_date_from_the_answers_is_never_in_the_past(
    tmp_path: Path, next_dose: str | None, due: date
) -> None:
    rules = [rule("dose", "fever = true", tasks=[task("dose", due="next_dose")])]
    state = filled(write_form(tmp_path, rules), fever=True, next_dose=next_dose)

    assert [(t.kind, t.due) for t in state.conclusions.tasks] == [("dose", due)]


@pytest.mark.parametrize(
    ("due_in_days", "days_before", "send_on"),
    [
        (7, 1, TODAY + timedelta(days=6)),
        (7, 0, TODAY + timedelta(days=7)),
        (2, 5, TODAY),  # the reminder would fall before today: sent today
        (0, 1, TODAY),
    ],
)
def test_a_reminder_is_sent_days_before_the_task(
    tmp_path: Path, due_in_days: int, days_before: int, send_on: date
) -> None:
    reminder = {"template": "followup_due", "days_before": days_before}
    rules = [
        rule(
            "r",
            "fever = true",
            tasks=[task("recheck", due_in_days=due_in_days, reminders=[reminder])],
        )
    ]
    state = filled(write_form(tmp_path, rules), fever=True)

    (planned,) = state.conclusions.tasks

    assert planned.due == TODAY + timedelta(days=due_in_days)
    assert [(r.send_on, r.template) for r in planned.reminders] == [(send_on, "followup_due")]


def test_rules_are_evaluated_again_after_every_answer(tmp_path: Path) -> None:
    state = filled(write_form(tmp_path, URGENCY_RULES), convulsing=True)
    assert state.conclusions.danger_signs == ("Convulsions",)

    state.answer("convulsing", None)

    assert not state.conclusions.danger_signs
    assert state.conclusions.urgency is None
