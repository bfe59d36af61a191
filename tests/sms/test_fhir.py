"""The reminder service's FHIR JSON: reading the hub's real projection of a real chart (the
reminders, the Patient, the Consents), and writing Communications and Tasks that fhir.resources'
R4B models and central's validation accept and that the hub turns into chart messages."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from care_record import Chart, FixedClock
from care_record.ids import id_time_ms, is_uuid7
from central.fhir.validation import validate
from sms.fhir import (
    CALL_BACK,
    callback_task,
    consents_from,
    normalise_phone,
    outcome_communication,
    recipient_from,
    reminder_from,
    reply_communication,
    uuid7,
)
from sms.model import Consents, Recipient, Reminder
from sync_hub.downstream.messages import message as hub_message
from sync_hub.downstream.tasks import task as hub_task
from sync_hub.projection import project_chart
from sync_hub.projection.fhir import Region

Json = dict[str, Any]

START = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
REGION = Region(code="arusha", timezone="America/Lima", facility="Mlima Dispensary")
PATIENT = "019550d3-9b40-7222-b398-705c1bb73a16"
REMINDER = "019550d3-9b40-71ca-8fdd-14479d9efb45"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
TEMPLATE = "urn:rural-care:reminder-template"
SCOPE = "urn:rural-care:consent-scope"
TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"
AMINA: Json = {
    "given": "Amina Zawadi",
    "family": "Juma",
    "sex": "female",
    "birth_date": "1994-06-15",
    "phone": "+255712345678",
    "language": "sw",
}


def valid(resource: Json) -> Json:
    """``resource`` after both checks: the R4B model, and central's own (R4, bindings)."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return validate(resource)


# -- the hub's projection of a real chart -------------------------------------------------------


def hub_chart() -> tuple[Chart, str, str]:
    """A chart with a follow-up whose reminder is due, and a cancelled one whose is revoked."""
    clock = FixedClock(START)
    chart = Chart.new_patient(AMINA, author="chw-amina", clock=clock)
    chart.set_consent("sms_reminders", "granted")
    chart.set_consent("voice_reminders", "refused")
    chart.set_consent("data_sharing", "granted")
    due = chart.add_task(
        {
            "kind": "follow_up",
            "description": "Check the fever has gone",
            "due": "2025-03-04",
            "reminders": [{"send_on": "2025-03-03", "template": "follow_up", "language": "sw"}],
        }
    )
    gone = chart.add_task(
        {
            "kind": "home_visit",
            "description": "Visit after the rains",
            "due": "2025-04-01",
            "reminders": [{"send_on": "2025-03-30", "template": "missed_visit", "language": "en"}],
        }
    )
    chart.set_task_status(gone, "cancelled")
    return chart, due, gone


def of_type(resources: list[Json], kind: str) -> list[Json]:
    return [r for r in resources if r["resourceType"] == kind]


def test_the_hubs_projection_reads_back_as_reminders_a_recipient_and_consents() -> None:
    chart, due, gone = hub_chart()
    projected = project_chart(chart.view(), region=REGION)
    requests = of_type(projected, "CommunicationRequest")
    reminders = sorted((r for r in map(reminder_from, requests) if r is not None), key=str)
    task_reminders = {t["id"]: list(t["reminders"]) for t in chart.view().records("tasks")}
    assert reminders == sorted(
        [
            Reminder(
                id=task_reminders[due][0],
                patient_id=chart.id,
                template="follow_up",
                language="sw",
                send_on=date(2025, 3, 3),
                active=True,
            ),
            Reminder(
                id=task_reminders[gone][0],
                patient_id=chart.id,
                template="missed_visit",
                language="en",
                send_on=date(2025, 3, 30),
                active=False,
            ),
        ],
        key=str,
    )
    others = [r for r in projected if r["resourceType"] != "CommunicationRequest"]
    assert others
    assert [reminder_from(r) for r in others] == [None] * len(others)
    [patient] = of_type(projected, "Patient")
    assert recipient_from(patient) == Recipient(
        patient_id=chart.id,
        first_name="Amina",
        phone="+255712345678",
        language="sw",
        zone="America/Lima",  # the region's zone, as the chart has no visit yet
        facility="Mlima Dispensary",
    )
    assert consents_from(of_type(projected, "Consent")) == Consents(sms=True, voice=False)


def test_a_withdrawn_consent_in_the_chart_reads_as_no() -> None:
    chart, _due, _gone = hub_chart()
    chart.set_consent("sms_reminders", "withdrawn")
    chart.set_consent("voice_reminders", "granted")
    projected = project_chart(chart.view(), region=REGION)
    assert consents_from(of_type(projected, "Consent")) == Consents(sms=False, voice=True)
    no_consents = [r for r in projected if r["resourceType"] != "Consent"]
    assert consents_from(no_consents) == Consents(sms=None, voice=None)


# -- reminders ----------------------------------------------------------------------------------


def request(**elements: Any) -> Json:
    base: Json = {
        "resourceType": "CommunicationRequest",
        "id": REMINDER,
        "language": "sw",
        "status": "active",
        "category": [{"coding": [{"system": TEMPLATE, "code": "anc_contact"}]}],
        "subject": {"reference": f"Patient/{PATIENT}"},
        "occurrenceDateTime": "2025-03-03",
        "recipient": [{"reference": f"Patient/{PATIENT}"}],
    }
    return {k: v for k, v in (base | elements).items() if v is not None}


def test_a_reminder_with_every_element() -> None:
    resource = valid(
        request(medium=[{"coding": [{"system": MODE, "code": "PHONE", "display": "telephone"}]}])
    )
    assert reminder_from(resource) == Reminder(
        id=REMINDER,
        patient_id=PATIENT,
        template="anc_contact",
        language="sw",
        send_on=date(2025, 3, 3),
        active=True,
        medium="voice",
    )


@pytest.mark.parametrize(
    ("occurrence", "day"),
    [
        ("2025-03-03", date(2025, 3, 3)),
        ("2025-03-03T10:00:00Z", date(2025, 3, 3)),
        # The day as written, not as UTC would have it.
        ("2025-03-03T23:30:00-05:00", date(2025, 3, 3)),
        ("2025-03-03T00:30:00+03:00", date(2025, 3, 3)),
        ("2024-02-29T09:00:00.123+03:00", date(2024, 2, 29)),
    ],
)
def test_the_day_is_the_date_part_of_the_occurrence(occurrence: str, day: date) -> None:
    reminder = reminder_from(valid(request(occurrenceDateTime=occurrence)))
    assert reminder is not None
    assert reminder.send_on == day


@pytest.mark.parametrize(
    ("code", "system", "medium"),
    [
        ("PHONE", MODE, "voice"),
        ("VERBAL", MODE, "voice"),
        ("WRITTEN", MODE, "sms"),
        ("SMSWRIT", MODE, "sms"),
        ("ONLINEWRIT", MODE, None),
        ("PHONE", "urn:other", None),
    ],
)
def test_the_medium_a_request_names(code: str, system: str, medium: str | None) -> None:
    reminder = reminder_from(request(medium=[{"coding": [{"system": system, "code": code}]}]))
    assert reminder is not None
    assert reminder.medium == medium
    plain = reminder_from(request())
    assert plain is not None
    assert plain.medium is None


@pytest.mark.parametrize("status", ["revoked", "completed", "on-hold", "draft", None])
def test_only_an_active_request_is_an_active_reminder(status: str | None) -> None:
    reminder = reminder_from(request(status=status))
    assert reminder is not None
    assert reminder.active is False


def test_what_is_not_a_reminder_is_none() -> None:
    other = [{"coding": [{"system": "urn:other", "code": "anc_contact"}]}]
    assert reminder_from(request(category=other)) is None
    assert reminder_from(request(category=None)) is None
    assert reminder_from(request(resourceType="Communication")) is None
    assert reminder_from({"resourceType": "Patient", "id": PATIENT}) is None


@pytest.mark.parametrize(
    ("elements", "named"),
    [
        ({"subject": None}, "CommunicationRequest.subject is missing"),
        ({"subject": {"display": "Amina"}}, "CommunicationRequest.subject is missing"),
        ({"subject": {"reference": "Group/g1"}}, "subject is not a Patient reference"),
        ({"subject": {"reference": "Patient/"}}, "subject is not a Patient reference"),
        ({"occurrenceDateTime": None}, "occurrenceDateTime is missing"),
        ({"occurrenceDateTime": "2025-03"}, "occurrenceDateTime is not a full date"),
        ({"occurrenceDateTime": "2025-02-30"}, "occurrenceDateTime is not a valid date"),
        ({"occurrenceDateTime": "03/03/2025"}, "occurrenceDateTime is not a full date"),
        ({"id": None}, "CommunicationRequest.id is missing"),
    ],
)
def test_a_reminder_without_what_it_needs_is_refused_by_name(elements: Json, named: str) -> None:
    with pytest.raises(ValueError, match=named) as raised:
        reminder_from(request(**elements))
    for value in elements.values():
        for text in value.values() if isinstance(value, dict) else [value]:
            assert not text or str(text) not in str(raised.value)


# -- the patient --------------------------------------------------------------------------------


def patient(**elements: Any) -> Json:
    base: Json = {
        "resourceType": "Patient",
        "id": PATIENT,
        "extension": [{"url": TIMEZONE, "valueCode": "Africa/Dar_es_Salaam"}],
        "name": [
            {"use": "official", "family": "Juma", "given": ["Amina Zawadi"]},
            {"use": "usual", "given": ["Mama Baraka"]},
        ],
        "telecom": [
            {"system": "email", "value": "amina@example.org"},
            {"system": "phone", "value": "+255 22 211 0000", "use": "home", "rank": 1},
            {"system": "phone", "value": "+255 (712) 345-678", "use": "mobile"},
        ],
        "communication": [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "sw-TZ"}]},
                "preferred": True,
            },
        ],
        "managingOrganization": {"reference": "Organization/o1", "display": "Mlima Dispensary"},
    }
    return {k: v for k, v in (base | elements).items() if v is not None}


def test_a_patient_with_every_element() -> None:
    assert recipient_from(valid(patient())) == Recipient(
        patient_id=PATIENT,
        first_name="Mama",
        phone="+255712345678",
        language="sw-TZ",
        zone="Africa/Dar_es_Salaam",
        facility="Mlima Dispensary",
    )


def test_a_patient_with_nothing_but_an_id() -> None:
    assert recipient_from({"resourceType": "Patient", "id": PATIENT}) == Recipient(
        patient_id=PATIENT, first_name=None, phone=None, language=None, zone=None, facility=None
    )


@pytest.mark.parametrize(
    ("names", "first"),
    [
        ([{"given": ["Amina Zawadi"]}, {"given": ["Zawadi"]}], "Amina"),
        (
            [{"use": "nickname", "given": ["Mimi"]}, {"use": "official", "given": ["Amina"]}],
            "Amina",
        ),
        ([{"use": "old", "given": ["Rehema"]}, {"given": ["Amina"]}], "Amina"),
        ([{"use": "usual", "family": "Juma"}, {"given": ["  Amina  Z"]}], "Amina"),
        ([{"family": "Juma"}], None),
        ([{"given": [""]}], None),
    ],
)
def test_the_first_name(names: list[Json], first: str | None) -> None:
    assert recipient_from(patient(name=names)).first_name == first


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("+255712345678", "+255712345678"),
        ("+255 712 345 678", "+255712345678"),
        ("+255-712-345-678", "+255712345678"),
        ("+1 (555) 010-0199", "+15550100199"),
        ("0712 345 678", "0712345678"),  # national: left for the caller, not guessed at
        ("00255712345678", "00255712345678"),
        ("+0712345678", None),
        ("+25571234567890123", None),
        ("+255 712 345 678 ext 2", None),
        ("0712.345.678", None),
        ("tel:+255712345678", None),
        ("", None),
        ("+", None),
        ("٠٧١٢٣٤٥٦٧٨", None),  # digits, but not ASCII ones
    ],
)
def test_normalising_a_phone_number(text: str, number: str | None) -> None:
    assert normalise_phone(text) == number


@pytest.mark.parametrize(
    ("telecom", "phone"),
    [
        ([{"system": "phone", "value": "+255222110000", "use": "home"}], "+255222110000"),
        (
            [
                {"system": "phone", "value": "+255222110000", "use": "work", "rank": 1},
                {"system": "phone", "value": "+255712345678", "use": "mobile", "rank": 2},
            ],
            "+255712345678",
        ),
        (
            [
                {"system": "phone", "value": "+255700000002", "use": "mobile", "rank": 2},
                {"system": "phone", "value": "+255700000001", "use": "mobile", "rank": 1},
            ],
            "+255700000001",
        ),
        (
            [
                {"system": "phone", "value": "call me", "use": "mobile"},
                {"system": "phone", "value": "+255222110000", "use": "home"},
            ],
            "+255222110000",
        ),
        ([{"system": "phone", "value": "+255712345678", "use": "old"}], None),
        ([{"system": "sms", "value": "+255712345678"}], None),
        ([{"system": "phone", "value": "unknown"}], None),
    ],
)
def test_the_phone_number(telecom: list[Json], phone: str | None) -> None:
    assert recipient_from(patient(telecom=telecom)).phone == phone


def test_the_language_is_the_preferred_one_else_the_first() -> None:
    def language(code: str, **more: Any) -> Json:
        return {"language": {"coding": [{"code": code}]}, **more}

    assert recipient_from(patient(communication=[language("en"), language("sw")])).language == "en"
    chosen = [language("en"), language("sw", preferred=True)]
    assert recipient_from(patient(communication=chosen)).language == "sw"
    text_only = [{"language": {"text": "Swahili"}}]
    assert recipient_from(patient(communication=text_only)).language is None


def test_the_zone_is_the_timezone_extension_only() -> None:
    other = [{"url": "http://example.org/zone", "valueCode": "America/Lima"}]
    assert recipient_from(patient(extension=other)).zone is None
    as_string = [{"url": TIMEZONE, "valueString": "America/Lima"}]
    assert recipient_from(patient(extension=as_string)).zone is None


def test_what_is_not_a_patient_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Patient"):
        recipient_from(request())
    with pytest.raises(ValueError, match=r"Patient\.id is missing"):
        recipient_from({"resourceType": "Patient"})


# -- consents -----------------------------------------------------------------------------------


def consent(scope: str, status: str, provision: str, updated: str | None = None) -> Json:
    resource: Json = {
        "resourceType": "Consent",
        "id": f"{scope}-{status}-{provision}".replace("_", "-"),
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{PATIENT}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": provision,
            "action": [{"coding": [{"system": SCOPE, "code": scope}]}],
        },
    }
    if updated is not None:
        resource["meta"] = {"lastUpdated": updated}
    return resource


@pytest.mark.parametrize(
    ("status", "provision", "permitted"),
    [
        ("active", "permit", True),
        ("active", "deny", False),
        ("rejected", "deny", False),
        ("inactive", "deny", False),
        ("inactive", "permit", False),
        ("proposed", "permit", False),
        ("draft", "permit", False),
        ("entered-in-error", "permit", False),
    ],
)
def test_only_an_active_permit_permits(status: str, provision: str, permitted: bool) -> None:
    found = consents_from([valid(consent("voice_reminders", status, provision))])
    assert found == Consents(sms=None, voice=permitted)


def test_the_consent_updated_last_counts() -> None:
    older = consent("sms_reminders", "active", "permit", "2025-03-01T08:00:00Z")
    newer = consent("sms_reminders", "inactive", "deny", "2025-03-02T08:00:00Z")
    assert consents_from([older, newer]).sms is False
    assert consents_from([newer, older]).sms is False
    granted_again = consent("sms_reminders", "active", "permit", "2025-03-03T08:00:00.5Z")
    assert consents_from([older, newer, granted_again]).sms is True


def test_last_updated_compares_instants_not_text() -> None:
    # 10:00 at +03:00 is 07:00 UTC: earlier than 08:00 UTC although it sorts later as text.
    permit = consent("sms_reminders", "active", "permit", "2025-03-01T10:00:00+03:00")
    deny = consent("sms_reminders", "inactive", "deny", "2025-03-01T08:00:00Z")
    assert consents_from([deny, permit]).sms is False


def test_of_two_consents_at_the_same_time_or_without_one_the_denial_counts() -> None:
    at = "2025-03-01T08:00:00Z"
    permit, deny = (
        consent("sms_reminders", "active", "permit", at),
        consent("sms_reminders", "inactive", "deny", at),
    )
    assert consents_from([permit, deny]).sms is False
    assert consents_from([deny, permit]).sms is False
    bare_permit, bare_deny = (
        consent("sms_reminders", "active", "permit"),
        consent("sms_reminders", "rejected", "deny"),
    )
    assert consents_from([bare_permit, bare_deny]).sms is False
    # A Consent with a time beats one without: an unknown time counts as the earliest.
    assert consents_from([bare_deny, permit]).sms is True


def test_other_scopes_and_other_resources_are_ignored() -> None:
    sharing = consent("data_sharing", "active", "permit")
    not_consent = {"resourceType": "Patient", "id": PATIENT, "provision": sharing["provision"]}
    assert consents_from([sharing, not_consent]) == Consents()
    voice = consent("voice_reminders", "active", "permit")
    assert consents_from([sharing, voice]) == Consents(sms=None, voice=True)


# -- IDs ----------------------------------------------------------------------------------------


def test_uuid7_is_a_uuid7_of_the_time_and_the_same_for_the_same_key() -> None:
    at = datetime(2025, 3, 3, 7, 15, 30, 123456, tzinfo=UTC)
    found = uuid7(at, "reply:SM0123")
    parsed = uuid.UUID(found)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert is_uuid7(found)
    assert id_time_ms(found) == 1740986130123
    assert uuid7(at, "reply:SM0123") == found
    assert uuid7(at.astimezone(timezone(timedelta(hours=3))), "reply:SM0123") == found
    assert uuid7(at, "reply:SM0124") != found
    assert uuid7(at + timedelta(milliseconds=1), "reply:SM0123") != found
    assert found[14:] == uuid7(at + timedelta(days=3), "reply:SM0123")[14:]


def test_uuid7_refuses_a_time_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        uuid7(datetime(2025, 3, 3), "k")  # noqa: DTZ001 - the case under test
    with pytest.raises(ValueError, match="range"):
        uuid7(datetime(1969, 12, 31, tzinfo=UTC), "k")


@given(
    at=st.datetimes(
        min_value=datetime(1970, 1, 1),  # noqa: DTZ001 - bounds; the values are UTC
        max_value=datetime(9999, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    key=st.text(),
)
def test_every_uuid7_has_its_version_variant_and_time(at: datetime, key: str) -> None:
    found = uuid7(at, key)
    assert is_uuid7(found)
    assert uuid.UUID(found).variant == uuid.RFC_4122
    assert id_time_ms(found) == (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# -- what the service writes --------------------------------------------------------------------

RECEIVED = datetime(2025, 3, 3, 7, 15, tzinfo=UTC)
REPLY = uuid7(RECEIVED, "reply:SM0123")


def as_chart_message(communication: Json) -> Json:
    """The chart message the hub makes of a Communication fetched from central (its own
    mapping), after a real chart has taken it under the Communication's ID."""
    message = hub_message(communication, set(), now=START)
    assert message is not None, "the hub would refuse this Communication"
    chart = Chart.new_patient(AMINA, author="hub:test", clock=FixedClock(START))
    chart.add_message(message, message_id=communication["id"])
    return dict(chart.view().collections["messages"][communication["id"]])


def test_a_reply_by_sms() -> None:
    resource = reply_communication(
        communication_id=REPLY,
        patient_id=PATIENT,
        reminder_id=REMINDER,
        text="NDIYO nitakuja",
        channel="sms",
        received_at=RECEIVED,
        kind="confirm",
    )
    assert resource == {
        "resourceType": "Communication",
        "id": REPLY,
        "basedOn": [{"reference": f"CommunicationRequest/{REMINDER}"}],
        "status": "completed",
        "category": [
            {"coding": [{"system": "urn:rural-care:message", "code": "patient-reply"}]},
            {"coding": [{"system": "urn:rural-care:reply-kind", "code": "confirm"}]},
        ],
        "medium": [{"coding": [{"system": MODE, "code": "WRITTEN", "display": "written"}]}],
        "subject": {"reference": f"Patient/{PATIENT}"},
        "sent": "2025-03-03T07:15:00Z",
        "sender": {"reference": f"Patient/{PATIENT}"},
        "payload": [{"contentString": "NDIYO nitakuja"}],
    }
    valid(resource)
    message = as_chart_message(resource)
    assert (message["direction"], message["channel"], message["author"], message["text"]) == (
        "from_patient",
        "sms",
        "patient",
        "NDIYO nitakuja",
    )
    assert datetime.fromisoformat(message["sent_at"]) == RECEIVED


def test_a_reply_by_keypad_without_a_known_reminder() -> None:
    resource = reply_communication(
        communication_id=REPLY,
        patient_id=PATIENT,
        reminder_id=None,
        text="Pressed 2: call back",
        channel="voice",
        received_at=RECEIVED + timedelta(microseconds=250_000),
        kind="call",
    )
    assert "basedOn" not in resource
    assert resource["sent"] == "2025-03-03T07:15:00.250Z"
    assert resource["medium"][0]["coding"][0]["code"] == "PHONE"
    valid(resource)
    assert as_chart_message(resource)["channel"] == "voice"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "maybe"}, "reply kind"),
        ({"communication_id": str(uuid.uuid4())}, "UUIDv7"),
        ({"communication_id": "reply-1"}, "UUIDv7"),
        ({"text": "  "}, "empty"),
        ({"received_at": datetime(2025, 3, 3, 7, 15)}, "timezone-aware"),  # noqa: DTZ001
    ],
)
def test_a_reply_that_cannot_be_written(changes: Json, problem: str) -> None:
    arguments: Json = {
        "communication_id": REPLY,
        "patient_id": PATIENT,
        "reminder_id": REMINDER,
        "text": "YES",
        "channel": "sms",
        "received_at": RECEIVED,
        "kind": "confirm",
    }
    with pytest.raises(ValueError, match=problem):
        reply_communication(**(arguments | changes))


@pytest.mark.parametrize(
    ("channel", "state", "detail", "status", "text"),
    [
        ("sms", "delivered", "", "completed", "Reminder SMS delivered"),
        (
            "voice",
            "answered",
            "pressed 1 (confirmed)",
            "completed",
            "Reminder call answered: pressed 1 (confirmed)",
        ),
        ("voice", "delivered", "", "completed", "Reminder call answered"),
        ("sms", "sent", "", "in-progress", "Reminder SMS sent"),
        ("sms", "failed", "the number is not a mobile", "not-done", None),
        ("voice", "failed", "no answer", "not-done", "Reminder call failed: no answer"),
        ("sms", "cancelled", "the patient opted out", "not-done", None),
        ("voice", "cancelled", "", "not-done", "Reminder not sent"),
    ],
)
def test_a_reminders_outcome(
    channel: Any, state: str, detail: str, status: str, text: str | None
) -> None:
    at = datetime(2025, 3, 3, 9, 0, tzinfo=timezone(timedelta(hours=3)))
    outcome_id = uuid7(at, f"outcome:{REMINDER}:{state}")
    resource = outcome_communication(
        communication_id=outcome_id,
        patient_id=PATIENT,
        reminder_id=REMINDER,
        channel=channel,
        state=state,
        detail=detail,
        at=at,
    )
    valid(resource)
    assert resource["status"] == status
    assert resource["category"] == [
        {"coding": [{"system": "urn:rural-care:message", "code": "reminder-outcome"}]}
    ]
    assert resource["basedOn"] == [{"reference": f"CommunicationRequest/{REMINDER}"}]
    assert resource["recipient"] == [{"reference": f"Patient/{PATIENT}"}]
    assert resource["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert resource["sent"] == "2025-03-03T06:00:00Z"
    if status == "not-done" and detail:
        assert resource["statusReason"] == {"text": detail}
    else:
        assert "statusReason" not in resource
    said = resource["payload"][0]["contentString"]
    if text is not None:
        assert said == text
    message = as_chart_message(resource)
    assert (message["direction"], message["channel"], message["text"]) == (
        "to_patient",
        channel,
        said,
    )


def test_the_sentences_for_every_outcome() -> None:
    said = {
        (channel, state): outcome_communication(
            communication_id=REPLY,
            patient_id=PATIENT,
            reminder_id=REMINDER,
            channel=channel,
            state=state,
            detail="the patient opted out" if state == "cancelled" else "",
            at=RECEIVED,
        )["payload"][0]["contentString"]
        for channel in ("sms", "voice")
        for state in ("sent", "delivered", "answered", "failed", "cancelled")
    }
    assert said[("sms", "failed")] == "Reminder SMS failed"
    assert said[("sms", "cancelled")] == "Reminder not sent: the patient opted out"
    assert said[("voice", "sent")] == "Reminder call placed"
    assert len(set(said.values())) == 8  # cancelled is the same sentence by either channel


@pytest.mark.parametrize("state", ["planned", "sending", "unknown"])
def test_a_state_that_is_not_an_outcome_is_refused(state: str) -> None:
    with pytest.raises(ValueError, match="not an outcome"):
        outcome_communication(
            communication_id=REPLY,
            patient_id=PATIENT,
            reminder_id=REMINDER,
            channel="sms",
            state=state,
            detail="",
            at=RECEIVED,
        )


def test_a_call_back_task() -> None:
    # 01:00 on 4 March in Dar es Salaam is still 3 March in UTC: the task is due on the
    # patient's day, the day of ``at`` as given.
    at = datetime(2025, 3, 4, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    task_id = uuid7(at, "call-back:CA0123")
    resource = callback_task(
        task_id=task_id,
        patient_id=PATIENT,
        reminder_id=REMINDER,
        communication_id=REPLY,
        at=at,
    )
    assert resource == {
        "resourceType": "Task",
        "id": task_id,
        "basedOn": [{"reference": f"CommunicationRequest/{REMINDER}"}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "urn:rural-care:task-kind", "code": "call_back"}]},
        "description": CALL_BACK,
        "focus": {"reference": f"Communication/{REPLY}"},
        "for": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": "2025-03-03T22:00:00Z",
        "restriction": {"period": {"end": "2025-03-04"}},
    }
    valid(resource)
    found = hub_task(resource, today=date(2025, 3, 1))
    assert found == {"kind": "call_back", "description": CALL_BACK, "due": date(2025, 3, 4)}
    chart = Chart.new_patient(AMINA, author="hub:test", clock=FixedClock(START))
    chart.add_task(found)
    no_reminder = callback_task(
        task_id=task_id, patient_id=PATIENT, reminder_id=None, communication_id=REPLY, at=at
    )
    assert "basedOn" not in valid(no_reminder)
