"""The CLI's form commands through ``field_app.cli.main`` on a real encrypted store:
``visit record --form``, ``register`` and ``forms list | show | check``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from field_app.forms import PACKAGED_CONTENT

# START in conftest is 2025-03-01: an LMP 26 weeks and 2 days before it.
LMP_26_WEEKS = "2024-08-29"
ANC_DANGER: dict[str, Any] = {
    "contact_number": 2,
    "lmp": LMP_26_WEEKS,
    "has_danger_sign": True,
    "danger_signs": ["severe_headache", "visual_disturbance"],
    "central_cyanosis": False,
    "bp_taken": True,
    "systolic": 148,
    "diastolic": 96,
    "fetal_movement": True,
    "ifa_daily": True,
    "td_status": "this_pregnancy",
    "itn_last_night": True,
    "birth_plan": True,
}


def answers(tmp_path: Path, data: object, name: str = "answers.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def register_woman(tablet: Any, tmp_path: Path, **extra: Any) -> str:
    data = {
        "given": "Amina",
        "family": "Juma",
        "sex": "female",
        "birth_date": "1994-06-15",
        "language": "sw",
        "pregnancy_status": "pregnant",
        "consent_data_sharing": True,
    } | extra
    return str(
        tablet.ok(
            "register",
            "--form",
            "patient_registration",
            "--answers",
            answers(tmp_path, data, "reg.json"),
        )
    )


def test_an_antenatal_danger_sign_creates_the_referral_and_tasks(
    tablet: Any, tmp_path: Path
) -> None:
    patient = register_woman(tablet, tmp_path)

    out = tablet.ok(
        "visit", "record", "--patient", patient, "--form", "anc_contact",
        "--answers", answers(tmp_path, ANC_DANGER),
    )  # fmt: skip

    assert "DANGER SIGNS: Severe headache; Visual disturbance" in out
    assert "REFERRAL (EMERGENCY): " in out
    chart = json.loads(tablet.ok("patient", "show", patient, "--json"))
    [referral] = chart["referrals"]
    assert referral["urgency"] == "emergency"
    assert referral["status"] == "requested"
    assert "ds_severe_headache" in referral["rules"]
    visit = next(e for e in chart["encounters"] if e["kind"] == "anc_contact")
    assert referral["encounter_id"] == visit["id"]
    assert visit["form"]["questionnaire"].endswith("anc_contact|1.0.0")
    items = json.loads(visit["form"]["items"])
    assert {i["linkId"] for i in items} >= {"pregnancy", "danger", "measurements"}
    codes = {o["code"]: o for o in visit["observations"].values()}
    assert codes["8480-6"]["value"] == 148
    assert codes["18185-9"]["value"] == 26
    # Registration planned the first contact; this visit plans the next one.
    from_visit = {t["kind"]: t for t in chart["tasks"] if t.get("encounter_id") == visit["id"]}
    assert set(from_visit) == {"anc_contact", "referral_check"}
    [reminder] = from_visit["anc_contact"]["reminders"].values()
    # The woman chose Swahili at registration: her reminders are in Swahili.
    assert reminder["language"] == "sw"
    assert reminder["template"] == "anc_contact_due"


def test_the_conclusions_are_in_the_chws_language(tablet: Any, tmp_path: Path) -> None:
    patient = register_woman(tablet, tmp_path)

    out = tablet.ok(
        "visit", "record", "--patient", patient, "--form", "anc_contact",
        "--answers", answers(tmp_path, ANC_DANGER), FIELD_APP_LANGUAGE="sw",
    )  # fmt: skip

    assert "Severe headache" not in out
    assert "REFERRAL (EMERGENCY)" in out


def test_an_incomplete_form_names_each_question_and_writes_nothing(
    tablet: Any, tmp_path: Path, chart_doc: Callable[[str], bytes]
) -> None:
    patient = register_woman(tablet, tmp_path)
    before = chart_doc(patient)
    partial = {k: v for k, v in ANC_DANGER.items() if k not in ("lmp", "birth_plan")}
    partial["systolic"] = 999

    result = tablet(
        "visit", "record", "--patient", patient, "--form", "anc_contact",
        "--answers", answers(tmp_path, partial),
    )  # fmt: skip

    assert result.code == 1
    assert "lmp: is required" in result.err
    assert "birth_plan: is required" in result.err
    assert "systolic: must be at most" in result.err
    assert "999" not in result.err
    assert chart_doc(patient) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "the answers file is not valid JSON (line 1, column 2)"),
        ('["a list"]', "must hold one JSON object"),
        ('{"no_such_question": 1}', "'no_such_question' is not a question of the form anc_contact"),
        ('{"gestational_age": 30}', "'gestational_age' is calculated by the form"),
        ('{"contact_number": [1, 2]}', "takes one answer, not a list"),
    ],
)
def test_a_bad_answers_file_is_refused_without_echoing_it(
    tablet: Any, tmp_path: Path, chart_doc: Callable[[str], bytes], content: str, message: str
) -> None:
    patient = register_woman(tablet, tmp_path)
    before = chart_doc(patient)
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")

    result = tablet(
        "visit", "record", "--patient", patient, "--form", "anc_contact", "--answers", str(path)
    )

    assert result.code == 1
    assert message in result.err
    assert chart_doc(patient) == before


def test_unknown_form_and_missing_answers(tablet: Any, tmp_path: Path) -> None:
    patient = register_woman(tablet, tmp_path)

    unknown = tablet(
        "visit",
        "record",
        "--patient",
        patient,
        "--form",
        "nope",
        "--answers",
        answers(tmp_path, {}),
    )
    no_file = tablet(
        "visit",
        "record",
        "--patient",
        patient,
        "--form",
        "anc_contact",
        "--answers",
        str(tmp_path / "x.json"),
    )
    mixed = tablet(
        "visit", "record", "--patient", patient, "--form", "anc_contact", "--pulse", "80"
    )

    assert "there is no form called 'nope'" in unknown.err
    assert "anc_contact" in unknown.err
    assert "no answers file at" in no_file.err
    assert "not both" in mixed.err


def test_registration_by_form_sets_demographics_consents_and_tasks(
    tablet: Any, tmp_path: Path
) -> None:
    patient = register_woman(
        tablet,
        tmp_path,
        phone="+255712345678",
        consent_sms_reminders=True,
        consent_voice_reminders=False,
    )

    chart = json.loads(tablet.ok("patient", "show", patient, "--json"))

    fields = chart["fields"]
    assert (fields["given"], fields["sex"], fields["language"]) == ("Amina", "female", "sw")
    assert fields["pregnancy_status"] == "pregnant"
    assert fields["consent.sms_reminders"] == "granted"
    assert fields["consent.voice_reminders"] == "refused"
    assert [t["kind"] for t in chart["tasks"]] == ["anc_contact"]
    assert [e["kind"] for e in chart["encounters"]] == ["patient_registration"]


def test_a_household_registers_by_form(tablet: Any, tmp_path: Path) -> None:
    household = tablet.ok(
        "register", "--form", "household_registration",
        "--answers", answers(tmp_path, {"name": "Nyumba ya Juma", "village": "Kilosa"}),
    )  # fmt: skip

    assert len(household) == 36
    refused = tablet("register", "--form", "anc_contact", "--answers", answers(tmp_path, {}))
    assert "records a visit" in refused.err


def test_forms_list_show_and_check_need_no_pin(tablet: Any) -> None:
    listed = tablet.ok("forms", "list", FIELD_APP_PIN=None)
    shown = tablet.ok("forms", "show", "sick_child", FIELD_APP_PIN=None)
    checked = tablet("forms", "check", FIELD_APP_PIN=None)

    names = {line.split()[0] for line in listed.splitlines()}
    assert names == {
        p.name.removesuffix(".questionnaire.json")
        for p in PACKAGED_CONTENT.glob("*.questionnaire.json")
    }
    assert "Rules (" in shown
    assert checked.code == 0, checked.out
    assert "0 problem(s)" in checked.err


def test_forms_check_fails_on_a_broken_content_folder(tablet: Any, tmp_path: Path) -> None:
    folder = tmp_path / "content"
    shutil.copytree(PACKAGED_CONTENT, folder)
    rules = folder / "vital_signs.rules.json"
    data = json.loads(rules.read_text(encoding="utf-8"))
    data["rules"][0]["when"] = "spo2_typo < 90"
    rules.write_text(json.dumps(data), encoding="utf-8")

    result = tablet("forms", "check", FIELD_APP_FORMS_DIR=str(folder), FIELD_APP_PIN=None)

    assert result.code == 1
    assert (
        "vital_signs: rule low_oxygen: names 'spo2_typo', which is not an item of the form"
        in result.out
    )
