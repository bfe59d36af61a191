"""The reminder service end to end in one process: FHIR resources as a hub pushes them, the
planner, the outbox, the real twilio client against the local Twilio, and the local Twilio's
signed webhooks arriving at central over HTTP. Time is a FixedClock the tests move."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from central.database import Database
from sms import outbox
from tests.sms.reminder_world import (
    AUTH_TOKEN,
    MONDAY_EARLY,
    World,
    consent,
    patient,
    reminder,
    reminder_world,
    task,
)

PHONE = "+255712000001"


@pytest.fixture
def world(database: Database) -> Iterator[World]:
    with reminder_world(database) as found:
        yield found


def new_id() -> str:
    return str(uuid.uuid4())


def enrol(
    world: World, phone: str = PHONE, *, scopes: tuple[str, ...] = ("sms_reminders",), **kw: Any
) -> tuple[str, str]:
    """A patient with consent to ``scopes`` and one reminder due on Monday: (patient, reminder)."""
    pid, rid = new_id(), new_id()
    world.hub_writes(
        patient(pid, phone, **kw),
        *(consent(pid, scope) for scope in scopes),
        reminder(rid, pid),
    )
    return pid, rid


def send_due(world: World) -> None:
    """Plan, move the clock to 09:00 in Dar es Salaam, send, and wait for Twilio's callbacks."""
    world.service.plan()
    world.clock.at = max(world.clock.at, MONDAY_EARLY + timedelta(hours=1))
    world.service.dispatch(max_seconds=5)
    world.settle()


def sent_messages(world: World) -> list[Any]:
    return [m for m in world.twilio.messages() if m.direction == "outbound-api"]


def outcomes(world: World, reminder_id: str) -> list[dict[str, Any]]:
    return [
        c
        for c in world.resources("Communication")
        if {"reference": f"CommunicationRequest/{reminder_id}"} in c.get("basedOn", [])
        and c["category"][0]["coding"][0]["code"] == "reminder-outcome"
    ]


def replies(world: World) -> list[dict[str, Any]]:
    return [
        c
        for c in world.resources("Communication")
        if c["category"][0]["coding"][0]["code"] == "patient-reply"
    ]


# -- planning and sending -------------------------------------------------------------------------


def test_a_reminder_is_planned_for_nine_in_the_patients_zone_and_sent_once(world: World) -> None:
    pid, rid = enrol(world)
    report = world.service.plan()
    row = world.row(rid)
    assert report.counts is not None
    assert report.counts.planned == 1
    assert row.state == "planned"
    assert row.send_at == MONDAY_EARLY + timedelta(hours=1)  # 09:00 EAT
    assert "Amina" in row.body
    assert "Kilosa" in row.body

    world.service.dispatch(max_seconds=5)
    assert sent_messages(world) == [], "nothing goes out before its time"

    send_due(world)
    sent = sent_messages(world)
    assert [m.to for m in sent] == [PHONE]
    assert sent[0].body == row.body
    assert world.row(rid).state == "delivered"
    assert world.row(rid).twilio_sid == sent[0].sid
    [outcome] = outcomes(world, rid)
    assert outcome["status"] == "completed"
    assert outcome["subject"] == {"reference": f"Patient/{pid}"}

    world.service.plan()
    world.service.dispatch(max_seconds=5)
    world.settle()
    assert len(sent_messages(world)) == 1, "planning and sending again sends nothing new"
    assert len(outcomes(world, rid)) == 1


def test_no_consent_no_phone_and_revoked_reminders_are_cancelled_with_a_reason(
    world: World,
) -> None:
    _, no_consent = enrol(world, scopes=())
    _, no_phone = enrol(world, phone=None)
    pid, revoked = new_id(), new_id()
    world.hub_writes(
        patient(pid, "+255712000009"),
        consent(pid, "sms_reminders"),
        reminder(revoked, pid, status="revoked"),
    )
    send_due(world)
    assert sent_messages(world) == []
    assert world.row(no_consent).error == "no consent to reminders"
    assert world.row(no_phone).error == "no phone number"
    assert world.row(revoked).error == "the reminder was revoked"
    assert {world.row(r).state for r in (no_consent, no_phone, revoked)} == {"cancelled"}


def test_consent_withdrawn_between_planning_and_sending_cancels_the_reminder(
    world: World,
) -> None:
    pid, rid = enrol(world)
    world.service.plan()
    assert world.row(rid).state == "planned"
    world.clock.advance(60)
    world.hub_writes(consent(pid, "sms_reminders", permit=False))
    send_due(world)
    assert sent_messages(world) == []
    assert world.row(rid).state == "cancelled"


def test_voice_only_consent_places_a_call_that_speaks_and_gathers_a_key(world: World) -> None:
    pid, rid = enrol(world, "+255712000002", scopes=("voice_reminders",))
    world.twilio.set_voice_answer("+255712000002", "1")
    send_due(world)
    [call] = world.twilio.calls()
    assert call.digits == "1"
    assert any("Amina" in said for said in call.said)
    assert world.row(rid).state == "delivered"
    [reply] = replies(world)
    assert reply["category"][1]["coding"][0]["code"] == "confirm"
    assert reply["medium"][0]["coding"][0]["code"] == "PHONE"
    assert reply["basedOn"] == [{"reference": f"CommunicationRequest/{rid}"}]
    assert reply["subject"] == {"reference": f"Patient/{pid}"}


def test_twilio_busy_429_is_retried_after_a_backoff_then_sent(world: World) -> None:
    _, rid = enrol(world)
    world.service.plan()
    world.clock.at = MONDAY_EARLY + timedelta(hours=1)
    world.twilio.fail_next(429)
    report = world.service.dispatch(max_seconds=1)
    row = world.row(rid)
    assert report.retried == 1
    assert report.sent == 0
    assert row.state == "planned"
    assert row.attempts == 1
    assert row.send_at > world.clock.now()

    world.clock.at = row.send_at
    world.service.dispatch(max_seconds=5)
    world.settle()
    assert world.row(rid).state == "delivered"
    assert len(sent_messages(world)) == 1


def test_a_4xx_refusal_fails_at_once_without_retry(world: World) -> None:
    _, rid = enrol(world, "+255712000003")
    world.twilio.opt_out("+255712000003")  # Twilio's own opt-out list: error 21610
    send_due(world)
    row = world.row(rid)
    assert row.state == "failed"
    assert "21610" in (row.error or "")
    assert "+255712000003" not in (row.error or "")
    [outcome] = outcomes(world, rid)
    assert outcome["status"] == "not-done"
    world.clock.advance(3600)
    world.service.dispatch(max_seconds=1)
    assert sent_messages(world) == []


def test_quiet_hours_hold_a_late_reminder_until_morning_in_the_patients_zone(
    world: World,
) -> None:
    # 21:00 in Dar es Salaam: planned now, sent at 07:00 the next morning, local time.
    world.clock.at = MONDAY_EARLY + timedelta(hours=13)
    _, rid = enrol(world)
    world.service.plan()
    row = world.row(rid)
    assert row.send_at == MONDAY_EARLY + timedelta(hours=23)  # Tuesday 07:00 EAT
    world.service.dispatch(max_seconds=1)
    assert sent_messages(world) == []


# -- replies ---------------------------------------------------------------------------------------

KEYWORDS = [
    ("CONFIRM", "confirm", "en"),
    ("yes", "confirm", "en"),
    ("STOP", "stop", "en"),
    ("START", "start", "en"),
    ("HELP", "help", "en"),
    ("CALL", "call", "en"),
    ("NDIYO", "confirm", "sw"),
    ("thibitisha", "confirm", "sw"),
    ("ACHA", "stop", "sw"),
    ("ANZA", "start", "sw"),
    ("MSAADA", "help", "sw"),
    ("PIGA", "call", "sw"),
    ("Nitakuja kesho asubuhi", "other", None),
]


@pytest.mark.parametrize(("text", "kind", "language"), KEYWORDS)
def test_each_keyword_in_each_language_becomes_a_reply_for_the_chw(
    world: World, text: str, kind: str, language: str | None
) -> None:
    pid, rid = enrol(world)
    send_due(world)
    answer = world.twilio.inbound_sms(PHONE, text)
    assert answer.status == 200
    [reply] = replies(world)
    assert reply["category"][1]["coding"][0]["code"] == kind
    assert reply["payload"][0]["contentString"] == text
    assert reply["basedOn"] == [{"reference": f"CommunicationRequest/{rid}"}]
    assert reply["sender"] == {"reference": f"Patient/{pid}"}
    assert "<Message>" in answer.answer
    tasks = world.resources("Task")
    assert len(tasks) == (1 if kind == "call" else 0)
    if kind == "call":
        assert tasks[0]["code"]["coding"][0]["code"] == "call_back"
        assert tasks[0]["for"] == {"reference": f"Patient/{pid}"}
    with world.database.read() as session:
        assert bool(outbox.opted_out(session, [PHONE])) == (kind == "stop")


def test_stop_is_honoured_at_once_and_start_brings_reminders_back(world: World) -> None:
    enrol(world)
    send_due(world)
    _, later = new_id(), new_id()
    pid = world.row(world.service.listing()[0].reminder_id).patient_id
    world.hub_writes(reminder(later, pid, day=MONDAY_EARLY.date() + timedelta(days=7)))
    world.service.plan()
    assert world.row(later).state == "planned"

    world.twilio.inbound_sms(PHONE, "STOP")
    assert world.row(later).state == "cancelled", "a STOP cancels what is planned at once"
    world.clock.advance(8 * 86400)
    world.service.dispatch(max_seconds=1)
    assert len(sent_messages(world)) == 1

    world.twilio.inbound_sms(PHONE, "START")
    assert world.row(later).state == "planned"


def test_an_sms_from_an_unknown_phone_is_answered_with_help_and_stored_nowhere(
    world: World,
) -> None:
    answer = world.twilio.inbound_sms("+255799999999", "hello")
    assert answer.status == 200
    assert "<Message>" in answer.answer
    assert world.resources("Communication") == []


# -- webhooks that must be refused ---------------------------------------------------------------


def _post(world: World, path: str, params: dict[str, str], signature: str | None) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return httpx.post(f"{world.url}{path}", data=params, headers=headers, timeout=10)


def _inbound(text: str, sid: str = "SM" + "1" * 32) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "From": PHONE, "To": "+255700000001", "Body": text}


def test_unsigned_and_forged_webhooks_are_refused_and_change_nothing(world: World) -> None:
    enrol(world)
    send_due(world)
    before = (world.resources("Communication"), world.service.counts())
    url = f"{world.url}/sms/inbound"
    params = _inbound("STOP")
    forged = RequestValidator("not-the-auth-token").compute_signature(url, params)
    for signature in (None, "", forged):
        assert _post(world, "/sms/inbound", params, signature).status_code == 403
    status_params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "failed"}
    rid = world.service.listing()[0].reminder_id
    assert _post(world, f"/sms/status?reminder={rid}", status_params, None).status_code == 403
    with world.database.read() as session:
        assert not outbox.opted_out(session, [PHONE])
    assert (world.resources("Communication"), world.service.counts()) == before


def test_a_signature_over_another_url_or_changed_params_is_refused(world: World) -> None:
    enrol(world)
    send_due(world)
    params = _inbound("STOP")
    validator = RequestValidator(AUTH_TOKEN)
    other_url = validator.compute_signature("http://10.0.0.5:8800/sms/inbound", params)
    assert _post(world, "/sms/inbound", params, other_url).status_code == 403
    signed = validator.compute_signature(f"{world.url}/sms/inbound", params)
    assert _post(world, "/sms/inbound", {**params, "Body": "START"}, signed).status_code == 403
    assert _post(world, "/sms/inbound", params, signed).status_code == 200


def test_a_replayed_webhook_changes_nothing(world: World) -> None:
    enrol(world)
    send_due(world)
    params = _inbound("CALL", sid="SM" + "3" * 32)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{world.url}/sms/inbound", params)
    assert _post(world, "/sms/inbound", params, signature).status_code == 200
    after_first = (world.resources("Communication"), world.resources("Task"))
    assert _post(world, "/sms/inbound", params, signature).status_code == 200
    assert (world.resources("Communication"), world.resources("Task")) == after_first
    # A status callback replayed after delivery moves nothing backwards.
    rid = world.service.listing()[0].reminder_id
    row = world.row(rid)
    status_url = f"{world.url}/sms/status?reminder={rid}"
    sent = {"MessageSid": row.twilio_sid, "MessageStatus": "sent"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(status_url, sent)
    assert _post(world, f"/sms/status?reminder={rid}", sent, signature).status_code == 204
    assert world.row(rid).state == "delivered"


def test_behind_a_proxy_the_signature_is_checked_against_the_public_url(
    database: Database,
) -> None:
    public = "https://central.example.org"
    with reminder_world(database, sms_public_url=public) as world:
        params = _inbound("HELP")
        validator = RequestValidator(AUTH_TOKEN)
        as_forwarded = validator.compute_signature(f"{world.url}/sms/inbound", params)
        as_twilio_saw = validator.compute_signature(f"{public}/sms/inbound", params)
        assert _post(world, "/sms/inbound", params, as_forwarded).status_code == 403
        assert _post(world, "/sms/inbound", params, as_twilio_saw).status_code == 200


# -- operator commands -----------------------------------------------------------------------------


def test_operator_opt_out_and_resend(world: World) -> None:
    _, rid = enrol(world)
    send_due(world)
    assert world.row(rid).state == "delivered"
    world.service.resend(rid)
    assert world.row(rid).state == "planned"
    world.service.dispatch(max_seconds=5)
    world.settle()
    assert len(sent_messages(world)) == 2, "an operator's resend sends once more"

    _, second = enrol(world, "+255712000004")
    world.service.plan()
    assert world.service.opt_out("+255712000004") == 1
    assert world.row(second).state == "cancelled"


def test_a_reminder_an_operator_sends_now_is_not_put_back_by_planning(world: World) -> None:
    pid, rid = new_id(), new_id()
    world.hub_writes(
        patient(pid, PHONE),
        consent(pid, "sms_reminders"),
        reminder(rid, pid, day=MONDAY_EARLY.date() + timedelta(days=10)),
    )
    world.service.plan()
    world.service.resend(rid)
    world.hub_writes(patient(pid, PHONE, given="Aminata"))  # a change that plans her again
    world.service.plan()
    assert world.row(rid).send_at == world.clock.now()
    world.service.dispatch(max_seconds=5)
    world.settle()
    assert [m.to for m in sent_messages(world)] == [PHONE]
    assert world.row(rid).state == "delivered"


def test_planning_again_keeps_a_retry_s_back_off(world: World) -> None:
    pid, rid = enrol(world)
    world.service.plan()
    world.clock.at = MONDAY_EARLY + timedelta(hours=1)
    world.twilio.fail_next(503)
    world.service.dispatch(max_seconds=1)
    backed_off = world.row(rid)
    world.hub_writes(patient(pid, PHONE, given="Aminata"))  # a change: she is planned again
    world.service.plan()
    assert world.row(rid).send_at == backed_off.send_at > world.clock.now()
    assert world.row(rid).error == backed_off.error


def test_a_lost_answer_is_left_for_the_callback_or_the_look_up_never_sent_again(
    database: Database,
) -> None:
    with reminder_world(database, sms_lease_seconds=2) as world:
        _, rid = enrol(world)
        world.service.plan()
        world.clock.at = MONDAY_EARLY + timedelta(hours=1)
        world.twilio.hold_creates()  # Twilio accepts it; its answer never comes in time
        report = world.service.dispatch(max_seconds=1)
        assert report.unknown == 1
        # Not planned again: it stays sending, or Twilio's callback has settled it already.
        assert world.row(rid).state in {"sending", "sent", "delivered"}
        world.twilio.release_creates()
        world.settle()
        world.clock.advance(5)  # past the lease
        world.service.reconcile()
        world.service.dispatch(max_seconds=1)
        world.settle()
        assert len(sent_messages(world)) == 1
        assert world.row(rid).state == "delivered"


def test_a_missed_follow_up_gets_a_missed_visit_reminder_until_the_visit_is_done(
    world: World,
) -> None:
    pid, tid, rid = new_id(), new_id(), new_id()
    monday = MONDAY_EARLY.date()
    world.hub_writes(
        patient(pid, PHONE),
        consent(pid, "sms_reminders"),
        task(tid, pid, due=monday),
        reminder(rid, pid, day=monday - timedelta(days=2), task_id=tid),
    )
    # Tuesday 09:00 in Dar es Salaam: the visit of Monday was not recorded.
    world.clock.at = MONDAY_EARLY + timedelta(days=1, hours=1)
    world.service.plan()
    missed = [r for r in world.service.listing() if r.template == "missed_visit"]
    [row] = missed
    assert row.state == "planned"
    assert row.based_on == f"Task/{tid}"
    world.service.dispatch(max_seconds=5)
    world.settle()
    [message] = sent_messages(world)
    assert "Amina" in message.body
    [outcome] = [
        c
        for c in world.resources("Communication")
        if c["category"][0]["coding"][0]["code"] == "reminder-outcome"
    ]
    assert outcome["basedOn"] == [{"reference": f"Task/{tid}"}]


def test_no_missed_visit_reminder_once_the_visit_is_done(world: World) -> None:
    pid, tid, rid = new_id(), new_id(), new_id()
    monday = MONDAY_EARLY.date()
    world.hub_writes(
        patient(pid, PHONE),
        consent(pid, "sms_reminders"),
        task(tid, pid, due=monday),
        reminder(rid, pid, day=monday, task_id=tid),
    )
    world.service.plan()
    world.hub_writes(task(tid, pid, due=monday, status="completed"))
    world.clock.at = MONDAY_EARLY + timedelta(days=1, hours=1)
    world.service.plan()
    [row] = [r for r in world.service.listing() if r.template == "missed_visit"]
    assert row.state == "cancelled"
    assert row.error == "the reminder was revoked"


def test_an_opt_out_landing_after_planning_is_checked_again_before_sending(
    world: World,
) -> None:
    _, rid = enrol(world)
    world.service.plan()
    # Another process records the STOP but has not cancelled this row yet.
    with world.database.write() as session:
        outbox.opt_out(session, PHONE, "STOP", world.clock.now())
    world.clock.at = MONDAY_EARLY + timedelta(hours=1)
    report = world.service.dispatch(max_seconds=5)
    assert report.cancelled == 1
    assert sent_messages(world) == []
    assert world.row(rid).state == "cancelled"
    [outcome] = outcomes(world, rid)
    assert outcome["status"] == "not-done"
