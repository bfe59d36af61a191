"""Writing to a patient chart: every write function, the round trip, and refused writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest

from care_record import (
    SCHEMA_VERSION,
    Chart,
    FixedClock,
    InvalidValue,
    RecordLocked,
    UnknownRecord,
    new_id,
    vital_observations,
)
from care_record.chart import PATIENT_COLLECTIONS
from care_record.ids import is_uuid7
from care_record.schema import Demographics, DemographicsUpdate

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
DAR = ZoneInfo("Africa/Dar_es_Salaam")

MakeChart = Callable[..., Chart]


def visit(**changes: Any) -> dict[str, Any]:
    """An antenatal visit at 10:00 in Dar es Salaam (07:00 UTC)."""
    return {
        "kind": "antenatal_care",
        "started_at": datetime(2025, 3, 1, 10, 0, tzinfo=DAR),
        "zone": "Africa/Dar_es_Salaam",
        **changes,
    }


# -- creating a chart ---------------------------------------------------------------------------


def test_new_patient_shows_its_demographics(chart: Chart) -> None:
    view = chart.view()

    assert view.demographics == {
        "given": "Amina",
        "family": "Juma",
        "sex": "female",
        "birth_date": "1994-06-15",
        "phone": "+255712345678",
        "village": "Kijiji cha Mlima",
        "household_id": None,
    }
    assert view.kind == "patient"
    assert view.schema_version == SCHEMA_VERSION
    assert view.id == chart.id
    assert is_uuid7(chart.id)
    assert view.conflicts == []
    assert {name: view.collections[name] for name in PATIENT_COLLECTIONS} == {
        name: {} for name in PATIENT_COLLECTIONS
    }


def test_new_patient_takes_a_model_and_a_given_chart_id(
    clock: FixedClock, amina: dict[str, Any]
) -> None:
    chart_id = new_id(clock)
    demographics = Demographics.model_validate({**amina, "household_id": new_id(clock)})

    chart = Chart.new_patient(demographics, author="chw-1", clock=clock, chart_id=chart_id)

    assert chart.id == chart_id
    assert chart.view().demographics["household_id"] == demographics.household_id
    assert chart.view().demographics["birth_date"] == "1994-06-15"


def test_new_patient_refuses_bad_demographics(make_chart: MakeChart) -> None:
    with pytest.raises(InvalidValue, match="birth_date: cannot be in the future"):
        make_chart(birth_date="2025-03-02")


# -- demographics, consent, pregnancy -----------------------------------------------------------


def test_update_demographics_writes_only_the_fields_given(chart: Chart) -> None:
    chart.update_demographics({"phone": "+255700111222", "village": "  Mto   wa Mbu "})

    assert chart.view().demographics == {
        "given": "Amina",
        "family": "Juma",
        "sex": "female",
        "birth_date": "1994-06-15",
        "phone": "+255700111222",
        "village": "Mto wa Mbu",
        "household_id": None,
    }


def test_update_demographics_with_a_model_writes_only_the_fields_set(chart: Chart) -> None:
    before = chart.view().demographics

    chart.update_demographics(DemographicsUpdate(family="Mushi"))

    assert chart.view().demographics == {**before, "family": "Mushi"}


def test_update_demographics_can_clear_an_optional_field(chart: Chart) -> None:
    chart.update_demographics({"phone": None})

    assert chart.view().demographics["phone"] is None
    assert chart.view().demographics["given"] == "Amina"


def test_set_consent_records_each_scope(chart: Chart) -> None:
    chart.set_consent("sms_reminders", "granted")
    chart.set_consent("data_sharing", "refused")
    chart.set_consent("sms_reminders", "withdrawn")

    view = chart.view()
    assert view.consent("sms_reminders") == "withdrawn"
    assert view.consent("data_sharing") == "refused"
    assert view.consent("voice_reminders") is None
    assert view.conflicts == []


def test_set_pregnancy_status(chart: Chart) -> None:
    chart.set_pregnancy_status("pregnant")
    assert chart.view().fields["pregnancy_status"] == "pregnant"

    chart.set_pregnancy_status("not_pregnant")
    assert chart.view().fields["pregnancy_status"] == "not_pregnant"


# -- allergies and medications ------------------------------------------------------------------


def test_add_allergy_with_defaults(chart: Chart, clock: FixedClock) -> None:
    allergy_id = chart.add_allergy({"substance": "Penicillin"})

    assert is_uuid7(allergy_id)
    assert chart.view().item("allergies", allergy_id) == {
        "substance": "Penicillin",
        "criticality": "unable_to_assess",
        "status": "active",
        "author": "chw-amina",
        "created_at": "2025-03-01T08:30:00.000+00:00",
    }
    assert chart.view().fields[f"allergy.{allergy_id}.substance"] == "Penicillin"


def test_update_allergy_changes_only_the_fields_given(chart: Chart, clock: FixedClock) -> None:
    allergy_id = chart.add_allergy({"substance": "Penicillin", "criticality": "low"})
    clock.advance(timedelta(days=1))

    chart.update_allergy(allergy_id, {"criticality": "high"})
    chart.update_allergy(allergy_id, {"status": "entered_in_error"})

    item = chart.view().item("allergies", allergy_id)
    assert (item["substance"], item["criticality"], item["status"]) == (
        "Penicillin",
        "high",
        "entered_in_error",
    )
    assert chart.view().conflicts == []


def test_add_and_update_medication(chart: Chart) -> None:
    medication_id = chart.add_medication({"name": "Ferrous sulfate", "dosage": "200 mg daily"})
    assert chart.view().item("medications", medication_id)["dosage"] == "200 mg daily"
    assert chart.view().item("medications", medication_id)["status"] == "active"

    chart.update_medication(medication_id, {"dosage": "200 mg twice daily", "status": "inactive"})

    item = chart.view().item("medications", medication_id)
    assert (item["name"], item["dosage"], item["status"]) == (
        "Ferrous sulfate",
        "200 mg twice daily",
        "inactive",
    )


def test_update_of_an_unknown_item_is_refused(chart: Chart, clock: FixedClock) -> None:
    with pytest.raises(UnknownRecord, match="no allerg"):
        chart.update_allergy(new_id(clock), {"status": "inactive"})
    with pytest.raises(UnknownRecord, match="no medication"):
        chart.update_medication(new_id(clock), {"status": "inactive"})


# -- encounters ---------------------------------------------------------------------------------


def test_record_encounter_with_vital_observations(chart: Chart) -> None:
    observations = vital_observations({"systolic": 128, "diastolic": 84, "temperature": 36.8})

    encounter_id = chart.record_encounter(visit(observations=observations, note="Feels well."))

    encounter = chart.view().item("encounters", encounter_id)
    assert encounter["kind"] == "antenatal_care"
    assert encounter["started_at"] == "2025-03-01T07:00:00.000+00:00"
    assert encounter["zone"] == "Africa/Dar_es_Salaam"
    assert encounter["author"] == "chw-amina"
    assert encounter["note"] == "Feels well."
    assert encounter["signed_at"] == "2025-03-01T08:30:00.000+00:00"
    assert "amends" not in encounter
    stored = sorted(
        (o["code"], o["display"], o["value"], o["unit"]) for o in encounter["observations"].values()
    )
    assert stored == [
        ("8310-5", "Body temperature", 36.8, "Cel"),
        ("8462-4", "Diastolic blood pressure", 84.0, "mm[Hg]"),
        ("8480-6", "Systolic blood pressure", 128.0, "mm[Hg]"),
    ]
    assert all(is_uuid7(key) for key in encounter["observations"])


def test_unsigned_encounter_is_signed_once(chart: Chart, clock: FixedClock) -> None:
    encounter_id = chart.record_encounter(visit(), sign=False)
    assert "signed_at" not in chart.view().item("encounters", encounter_id)
    clock.advance(timedelta(minutes=20))

    chart.sign_encounter(encounter_id)

    assert chart.view().item("encounters", encounter_id)["signed_at"] == (
        "2025-03-01T08:50:00.000+00:00"
    )
    heads, saved = chart.heads, chart.save()
    with pytest.raises(RecordLocked, match="amendment"):
        chart.sign_encounter(encounter_id)
    assert chart.heads == heads
    assert chart.save() == saved


def test_signing_a_signed_encounter_is_refused(chart: Chart) -> None:
    encounter_id = chart.record_encounter(visit())
    heads = chart.heads

    with pytest.raises(RecordLocked):
        chart.sign_encounter(encounter_id)

    assert chart.heads == heads


def test_an_amendment_points_at_what_it_corrects(chart: Chart, clock: FixedClock) -> None:
    original = chart.record_encounter(visit(observations=vital_observations({"weight": 6.2})))
    before = chart.view().item("encounters", original)
    clock.advance(timedelta(minutes=5))

    amendment = chart.record_encounter(
        visit(observations=vital_observations({"weight": 62}), amends=original, note="kg typo")
    )

    view = chart.view()
    assert view.item("encounters", amendment)["amends"] == original
    assert view.item("encounters", original) == before
    assert [e["id"] for e in view.records("encounters")] == [original, amendment]


def test_sign_of_an_unknown_encounter_is_refused(chart: Chart, clock: FixedClock) -> None:
    with pytest.raises(UnknownRecord, match="no encounter"):
        chart.sign_encounter(new_id(clock))


# -- tasks, referrals, messages, attachments ----------------------------------------------------


def test_add_task_starts_requested_and_status_changes(chart: Chart) -> None:
    encounter_id = chart.record_encounter(visit())
    task_id = chart.add_task(
        {
            "kind": "follow_up",
            "description": "Check blood pressure",
            "due": date(2025, 3, 8),
            "encounter_id": encounter_id,
        }
    )
    assert chart.view().item("tasks", task_id) == {
        "kind": "follow_up",
        "description": "Check blood pressure",
        "due": "2025-03-08",
        "encounter_id": encounter_id,
        "created_at": "2025-03-01T08:30:00.000+00:00",
        "author": "chw-amina",
        "status": "requested",
    }

    chart.set_task_status(task_id, "completed")

    assert chart.view().item("tasks", task_id)["status"] == "completed"
    assert chart.view().fields[f"task.{task_id}.status"] == "completed"


def test_add_referral_and_set_its_status(chart: Chart) -> None:
    referral_id = chart.add_referral({"urgency": "urgent", "reason": "BP 165/110 at 32 weeks"})
    assert chart.view().item("referrals", referral_id)["status"] == "requested"
    assert chart.view().item("referrals", referral_id)["urgency"] == "urgent"

    chart.set_referral_status(referral_id, "accepted")
    chart.set_referral_status(referral_id, "completed")

    assert chart.view().item("referrals", referral_id)["status"] == "completed"


def test_add_message_keeps_its_own_author(chart: Chart, clock: FixedClock) -> None:
    first = chart.add_message(
        {
            "direction": "from_chw",
            "channel": "app",
            "author": "chw-amina",
            "text": "Headache and swollen feet since yesterday.",
            "sent_at": datetime(2025, 3, 1, 11, 0, tzinfo=DAR),
        }
    )
    clock.advance(timedelta(minutes=45))
    reply = chart.add_message(
        {
            "direction": "to_chw",
            "channel": "console",
            "author": "Dr. Mwangi",
            "text": "Refer to the district hospital today.",
            "sent_at": datetime(2025, 3, 1, 9, 15, tzinfo=UTC),
            "in_reply_to": first,
        }
    )

    message = chart.view().item("messages", reply)
    assert message["author"] == "Dr. Mwangi"
    assert message["in_reply_to"] == first
    assert message["sent_at"] == "2025-03-01T09:15:00.000+00:00"
    assert chart.view().item("messages", first)["sent_at"] == "2025-03-01T08:00:00.000+00:00"
    assert [m["id"] for m in chart.view().records("messages")] == [first, reply]


def test_add_attachment_is_idempotent_by_sha256(chart: Chart, clock: FixedClock) -> None:
    chart.add_attachment({"sha256": SHA, "media_type": "image/jpeg", "size": 48213})
    heads = chart.heads
    clock.advance(timedelta(hours=1))

    chart.add_attachment({"sha256": SHA, "media_type": "image/jpeg", "size": 48213})

    assert chart.heads == heads
    assert chart.view().collections["attachments"] == {
        SHA: {
            "media_type": "image/jpeg",
            "size": 48213,
            "added_at": "2025-03-01T08:30:00.000+00:00",
            "author": "chw-amina",
        }
    }


# -- save and load ------------------------------------------------------------------------------


def test_save_and_load_round_trip(chart: Chart, clock: FixedClock) -> None:
    chart.set_consent("data_sharing", "granted")
    chart.set_pregnancy_status("pregnant")
    chart.add_allergy({"substance": "Sulfonamides", "criticality": "high"})
    chart.add_medication({"name": "Folic acid", "dosage": "400 mcg daily"})
    encounter_id = chart.record_encounter(visit(observations=vital_observations({"pulse": 88})))
    chart.add_task({"kind": "anc_visit", "description": "Second visit", "due": "2025-04-01"})
    chart.add_referral({"urgency": "routine", "reason": "Ultrasound", "encounter_id": encounter_id})
    chart.add_attachment({"sha256": SHA, "media_type": "audio/ogg", "size": 1200})

    loaded = Chart.load(chart.save(), author="nurse-2", clock=clock)

    assert loaded.view() == chart.view()
    assert loaded.heads == chart.heads
    assert loaded.id == chart.id
    assert loaded.author == "nurse-2"


def test_writes_after_load_carry_the_new_author(chart: Chart, clock: FixedClock) -> None:
    loaded = Chart.load(chart.save(), author="nurse-2", clock=clock, actor=b"\x02" * 16)

    task_id = loaded.add_task({"kind": "follow_up", "description": "Call", "due": "2025-03-03"})

    assert loaded.document.get_actor() == b"\x02" * 16
    assert loaded.view().item("tasks", task_id)["author"] == "nurse-2"


# -- refused writes change nothing --------------------------------------------------------------


class Subject(NamedTuple):
    """A chart with a task, referral, allergy, medication and a signed encounter."""

    chart: Chart
    task: str
    referral: str
    allergy: str
    medication: str
    encounter: str


Write = Callable[[Subject], object]


@pytest.fixture
def subject(chart: Chart) -> Subject:
    return Subject(
        chart,
        task=chart.add_task({"kind": "follow_up", "description": "x", "due": "2025-03-05"}),
        referral=chart.add_referral({"urgency": "routine", "reason": "Review"}),
        allergy=chart.add_allergy({"substance": "Penicillin"}),
        medication=chart.add_medication({"name": "Paracetamol"}),
        encounter=chart.record_encounter(visit()),
    )


NAIVE = datetime(2025, 3, 1, 9, 0)  # noqa: DTZ001 - the bad input under test
UNKNOWN = "0195533e-8f00-7abc-8def-0123456789ab"

REFUSED: list[tuple[str, Write, type[Exception], str]] = [
    (
        "bad phone",
        lambda s: s.chart.update_demographics({"phone": "12345abc"}),
        InvalidValue,
        "phone",
    ),
    (
        "phone without +",
        lambda s: s.chart.update_demographics({"phone": "0712345678"}),
        InvalidValue,
        "phone",
    ),
    (
        "future birth date",
        lambda s: s.chart.update_demographics({"birth_date": date(2025, 3, 2)}),
        InvalidValue,
        "birth_date: cannot be in the future",
    ),
    (
        "birth date too long ago",
        lambda s: s.chart.update_demographics({"birth_date": "1880-01-01"}),
        InvalidValue,
        "birth_date",
    ),
    ("unknown sex", lambda s: s.chart.update_demographics({"sex": "alien"}), InvalidValue, "sex"),
    (
        "NUL in a name",
        lambda s: s.chart.update_demographics({"given": "Ami\x00na"}),
        InvalidValue,
        "given: must not contain control characters",
    ),
    (
        "escape in a name",
        lambda s: s.chart.update_demographics({"family": "Ju\x1b[2Jma"}),
        InvalidValue,
        "family: must not contain control characters",
    ),
    (
        "DEL in a village",
        lambda s: s.chart.update_demographics({"village": "Mlima\x7f"}),
        InvalidValue,
        "village",
    ),
    ("empty name", lambda s: s.chart.update_demographics({"given": "   "}), InvalidValue, "given"),
    (
        "unknown field",
        lambda s: s.chart.update_demographics({"nickname": "Mama"}),
        InvalidValue,
        "nickname",
    ),
    (
        "household ID not a UUIDv7",
        lambda s: s.chart.update_demographics({"household_id": "hh-12"}),
        InvalidValue,
        "household_id",
    ),
    (
        "unknown task ID",
        lambda s: s.chart.set_task_status(UNKNOWN, "completed"),
        UnknownRecord,
        "no task",
    ),
    (
        "bad task status",
        lambda s: s.chart.set_task_status(s.task, "done"),  # type: ignore[arg-type]
        InvalidValue,
        "status",
    ),
    (
        "unknown referral ID",
        lambda s: s.chart.set_referral_status(UNKNOWN, "accepted"),
        UnknownRecord,
        "no referral",
    ),
    (
        "bad referral status",
        lambda s: s.chart.set_referral_status(s.referral, "lost"),  # type: ignore[arg-type]
        InvalidValue,
        "status",
    ),
    (
        "bad consent scope",
        lambda s: s.chart.set_consent("email", "granted"),  # type: ignore[arg-type]
        InvalidValue,
        "scope",
    ),
    (
        "bad consent status",
        lambda s: s.chart.set_consent("data_sharing", "yes"),  # type: ignore[arg-type]
        InvalidValue,
        "status",
    ),
    (
        "bad pregnancy status",
        lambda s: s.chart.set_pregnancy_status("maybe"),  # type: ignore[arg-type]
        InvalidValue,
        "status",
    ),
    (
        "naive encounter time",
        lambda s: s.chart.record_encounter(visit(started_at=NAIVE)),
        InvalidValue,
        "started_at: must carry a time zone",
    ),
    (
        "naive message time",
        lambda s: s.chart.add_message(
            {"direction": "to_chw", "channel": "sms", "author": "x", "text": "y", "sent_at": NAIVE}
        ),
        InvalidValue,
        "sent_at: must carry a time zone",
    ),
    (
        "unknown time zone",
        lambda s: s.chart.record_encounter(visit(zone="Africa/Atlantis")),
        InvalidValue,
        "zone",
    ),
    (
        "bad observation code",
        lambda s: s.chart.record_encounter(
            visit(observations=[{"code": "BP", "display": "x", "value": 1, "unit": "mm"}])
        ),
        InvalidValue,
        "observations.0.code",
    ),
    (
        "amendment of an unknown encounter",
        lambda s: s.chart.record_encounter(visit(amends=UNKNOWN)),
        UnknownRecord,
        "no encounter",
    ),
    (
        "sign a signed encounter",
        lambda s: s.chart.sign_encounter(s.encounter),
        RecordLocked,
        "already signed",
    ),
    (
        "bad allergy criticality",
        lambda s: s.chart.update_allergy(s.allergy, {"criticality": "deadly"}),
        InvalidValue,
        "criticality",
    ),
    (
        "allergy substance removed",
        lambda s: s.chart.update_allergy(s.allergy, {"substance": None}),
        InvalidValue,
        "substance",
    ),
    (
        "unknown medication field",
        lambda s: s.chart.update_medication(s.medication, {"route": "oral"}),
        InvalidValue,
        "route",
    ),
    (
        "bad task due date",
        lambda s: s.chart.add_task({"kind": "follow_up", "description": "x", "due": "soon"}),
        InvalidValue,
        "due",
    ),
    (
        "bad referral urgency",
        lambda s: s.chart.add_referral({"urgency": "whenever", "reason": "x"}),
        InvalidValue,
        "urgency",
    ),
    (
        "bad attachment hash",
        lambda s: s.chart.add_attachment({"sha256": "abc", "media_type": "image/png", "size": 1}),
        InvalidValue,
        "sha256",
    ),
    (
        "negative attachment size",
        lambda s: s.chart.add_attachment({"sha256": SHA, "media_type": "image/png", "size": -1}),
        InvalidValue,
        "size",
    ),
    (
        "resolve with an unknown write",
        lambda s: s.chart.resolve("phone", UNKNOWN),
        UnknownRecord,
        "phone",
    ),
]


@pytest.mark.parametrize(
    ("write", "error", "message"),
    [pytest.param(w, e, m, id=name) for name, w, e, m in REFUSED],
)
def test_a_refused_write_changes_nothing(
    subject: Subject, write: Write, error: type[Exception], message: str
) -> None:
    chart = subject.chart
    heads, saved, view = chart.heads, chart.save(), chart.view()

    with pytest.raises(error) as refused:
        write(subject)

    assert message in str(refused.value)
    assert chart.heads == heads
    assert chart.save() == saved
    assert chart.view() == view


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "12345abc"),
        ("phone", "+0255712345678"),
        ("given", "Ami\x00na"),
        ("family", "Juma\x07Juma"),
        ("sex", "hermaphrodite"),
        ("birth_date", "2031-07-19"),
        ("birth_date", "1861-07-19"),
        ("household_id", "12345678-1234-4234-8234-123456789abc"),
        ("village", "V" * 201),
    ],
)
def test_an_invalid_value_message_never_repeats_the_value(
    chart: Chart, field: str, value: str
) -> None:
    with pytest.raises(InvalidValue) as refused:
        chart.update_demographics({field: value})

    message = str(refused.value)
    assert message.startswith(f"{field}: ")
    assert value not in message


def test_an_invalid_value_names_every_bad_field(make_chart: MakeChart) -> None:
    with pytest.raises(InvalidValue) as refused:
        make_chart(phone="12345abc", sex="x", given="")

    message = str(refused.value)
    assert "phone:" in message
    assert "sex:" in message
    assert "given:" in message
    assert "12345abc" not in message
