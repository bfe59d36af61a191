"""The FHIR R4 JSON the reminder service reads from central and writes back to it.

In: a CommunicationRequest the hub projected from a chart's task (a reminder), the Patient it
is for, and the patient's Consents. Out: the Communications that become chart messages on the
tablet (a patient's reply, a reminder's outcome) and the Task that asks a CHW to call a patient
back. The shapes are those of the hub's projection (docs/fhir.md, "Naming"); this package may
not import the hub, so they are written here as plain dicts, and the tests check them against
the hub's real output and fhir.resources' R4B models.

Readers are lenient about what they do not need and strict about what a reminder cannot go
without; their errors name the element, never its value.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sms.model import Channel, Consents, Recipient, Reminder

Resource = dict[str, Any]

REMINDER_TEMPLATE = "urn:rural-care:reminder-template"
CONSENT_SCOPE_NAME = "urn:rural-care:consent-scope"
MESSAGE_CATEGORY = "urn:rural-care:message"
REPLY_KIND = "urn:rural-care:reply-kind"
TASK_KIND = "urn:rural-care:task-kind"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
# R5's core extension; R4 servers accept it as any other extension.
TIMEZONE = "http://hl7.org/fhir/StructureDefinition/timezone"

CONSENT_SCOPES: dict[str, Channel] = {"sms_reminders": "sms", "voice_reminders": "voice"}
REPLY_KINDS = ("confirm", "stop", "start", "help", "call", "other")
# v3 ParticipationMode as R4 ships it has no SMS code (SMSWRIT came later): the hub writes an
# SMS as WRITTEN, a call or a keypad answer as PHONE (sync_hub.projection.messages).
MEDIUM_CHANNELS: dict[str, Channel] = {
    "WRITTEN": "sms",
    "SMSWRIT": "sms",
    "PHONE": "voice",
    "VERBAL": "voice",
}
MEDIA: dict[Channel, tuple[str, str]] = {
    "sms": ("WRITTEN", "written"),
    "voice": ("PHONE", "telephone"),
}
# Outcome state -> Communication.status. "sent" is Twilio's word for handed to the carrier
# without a delivery receipt yet: under way, not done.
OUTCOME_STATUSES = {
    "sent": "in-progress",
    "delivered": "completed",
    "answered": "completed",
    "failed": "not-done",
    "cancelled": "not-done",
}
OUTCOME_SENTENCES: dict[tuple[Channel, str], str] = {
    ("sms", "sent"): "Reminder SMS sent",
    ("sms", "delivered"): "Reminder SMS delivered",
    ("sms", "answered"): "Reminder SMS answered",
    ("sms", "failed"): "Reminder SMS failed",
    ("sms", "cancelled"): "Reminder not sent",
    ("voice", "sent"): "Reminder call placed",
    ("voice", "delivered"): "Reminder call answered",
    ("voice", "answered"): "Reminder call answered",
    ("voice", "failed"): "Reminder call failed",
    ("voice", "cancelled"): "Reminder not sent",
}
CALL_BACK = "Call the patient back: they asked for a call"
CALL_BACK_KIND = "call_back"
REMINDER_SERVICE = "Reminder service"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_DIGITS = re.compile(r"[0-9]+")
_SEPARATORS = re.compile(r"[\s\-()]")
_DATE_PART = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(T.*)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime.min.replace(tzinfo=UTC)
# Name uses in the order a reminder should greet by; an old name is never used.
_NAME_USES = {"usual": 0, "official": 1}


# -- reading ----------------------------------------------------------------------------------


def reminder_from(resource: Mapping[str, Any]) -> Reminder | None:
    """The reminder a CommunicationRequest is, or None if it is not one (no category in the
    reminder-template system). Raises ValueError, naming the element, for a reminder without
    an ID, a Patient subject or a full date."""
    if resource.get("resourceType") != "CommunicationRequest":
        return None
    template = _code(resource.get("category"), REMINDER_TEMPLATE)
    if template is None:
        return None
    return Reminder(
        id=_id(resource, "CommunicationRequest"),
        patient_id=_patient_id(resource.get("subject"), "CommunicationRequest.subject"),
        template=template,
        language=_text(resource.get("language")),
        send_on=_date_part(resource.get("occurrenceDateTime")),
        active=resource.get("status") == "active",
        medium=_channel(resource.get("medium")),
    )


def recipient_from(patient: Mapping[str, Any]) -> Recipient:
    """What a reminder needs of a Patient. Raises ValueError if it is not a Patient with an ID;
    anything else missing or unusable is None (the planner says why it cannot send)."""
    if patient.get("resourceType") != "Patient":
        raise ValueError("the resource is not a Patient")
    return Recipient(
        patient_id=_id(patient, "Patient"),
        first_name=_first_name(patient.get("name")),
        phone=_phone(patient.get("telecom")),
        language=_preferred_language(patient.get("communication")),
        zone=_zone(patient.get("extension")),
        facility=_display(patient.get("managingOrganization")),
    )


def consents_from(consents: Iterable[Mapping[str, Any]]) -> Consents:
    """The patient's answers to the two reminder consents. A scope is permitted only by an
    active Consent whose provision permits; where several Consents name a scope, the one
    updated last (``meta.lastUpdated``) counts, and of two updated at the same time (or with
    no time) the denial, since the programme is opt-in."""
    latest: dict[Channel, tuple[tuple[datetime, bool], bool]] = {}
    for consent in consents:
        if consent.get("resourceType") != "Consent":
            continue
        provision = _mapping(consent.get("provision"))
        permitted = consent.get("status") == "active" and provision.get("type") == "permit"
        rank = (_last_updated(consent), not permitted)
        for channel in _consent_channels(provision.get("action")):
            if channel not in latest or rank > latest[channel][0]:
                latest[channel] = (rank, permitted)
    found = {channel: permitted for channel, (_rank, permitted) in latest.items()}
    return Consents(sms=found.get("sms"), voice=found.get("voice"))


def normalise_phone(text: str) -> str | None:
    """An E.164 number (``+`` and digits) from a number as typed, without spaces, dashes or
    parentheses; a number without ``+`` comes back (without those) only if it is all digits,
    as a national number is not turned into E.164 here. None if it is neither."""
    stripped = _SEPARATORS.sub("", text)
    if _E164.fullmatch(stripped) or _DIGITS.fullmatch(stripped):
        return stripped
    return None


def _id(resource: Mapping[str, Any], kind: str) -> str:
    found = resource.get("id")
    if not isinstance(found, str) or not found:
        raise ValueError(f"{kind}.id is missing")
    return found


def _patient_id(reference: object, element: str) -> str:
    target = _text(_mapping(reference).get("reference"))
    if target is None:
        raise ValueError(f"{element} is missing")
    patient_id = target.removeprefix("Patient/")
    if patient_id == target or not patient_id or "/" in patient_id:
        raise ValueError(f"{element} is not a Patient reference")
    return patient_id


def _date_part(value: object) -> date:
    """The day of a FHIR date or dateTime, as written (not moved to another zone)."""
    element = "CommunicationRequest.occurrenceDateTime"
    text = _text(value)
    if text is None:
        raise ValueError(f"{element} is missing")
    match = _DATE_PART.fullmatch(text)
    if match is None:
        raise ValueError(f"{element} is not a full date")
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        raise ValueError(f"{element} is not a valid date") from None


MISSED_VISIT = "missed_visit"
# A follow-up missed yesterday is reminded of today: one day's grace for a late visit to sync.
MISSED_AFTER = timedelta(days=1)


def missed_visit_from(
    task: Mapping[str, Any], requests: Iterable[Mapping[str, Any]]
) -> Reminder | None:
    """A missed-visit reminder for a follow-up Task past its day, if the patient was to be
    reminded of it (a reminder CommunicationRequest is based on it, whose language it takes).
    Its ID is derived from the Task's, so deciding it again finds the same reminder; it is
    active only while the Task is still requested (the visit done, it is revoked)."""
    task_id, due = _text(task.get("id")), task_due(task)
    if not task_id or due is None or _code(task.get("code"), TASK_KIND) in (None, CALL_BACK_KIND):
        return None
    asked = [r for r in requests if based_on_task(r) == task_id and reminder_from(r) is not None]
    if not asked:
        return None
    first = reminder_from(asked[0])
    assert first is not None  # noqa: S101 - filtered just above
    return Reminder(
        id=uuid7(datetime.combine(due, time(), UTC), f"missed-visit:{task_id}"),
        patient_id=first.patient_id,
        template=MISSED_VISIT,
        language=first.language,
        send_on=due + MISSED_AFTER,
        active=task.get("status") == "requested",
        medium=first.medium,
        # Its text asks the patient to come on the day it is sent, not the day missed.
        due=None,
        task_id=task_id,
        based_on=f"Task/{task_id}",
    )


def task_due(task: Mapping[str, Any]) -> date | None:
    """The day a follow-up Task is due (``restriction.period.end``, as the hub projects it),
    or None if it names none readable."""
    end = _mapping(_mapping(task.get("restriction")).get("period")).get("end")
    text = _text(end)
    match = _DATE_PART.fullmatch(text) if text else None
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def based_on_task(resource: Mapping[str, Any]) -> str | None:
    """The ID of the Task a CommunicationRequest is based on, if it names one."""
    for ref in _mappings(resource.get("basedOn")):
        target = _text(ref.get("reference")) or ""
        if target.startswith("Task/"):
            return target.removeprefix("Task/")
    return None


def _channel(media: object) -> Channel | None:
    for coding in _codings(media):
        if coding.get("system") == PARTICIPATION_MODE:
            channel = MEDIUM_CHANNELS.get(str(coding.get("code")))
            if channel is not None:
                return channel
    return None


def _first_name(names: object) -> str | None:
    usable = [n for n in _mappings(names) if n.get("use") != "old"]
    for name in sorted(usable, key=lambda n: _NAME_USES.get(str(n.get("use")), 2)):
        given = name.get("given")
        first = given[0] if isinstance(given, list) and given else None
        words = first.split() if isinstance(first, str) else []
        if words:
            return words[0]
    return None


def _phone(telecoms: object) -> str | None:
    """The first usable phone number, a mobile first (it can take an SMS), then by rank."""
    phones = [
        t
        for t in _mappings(telecoms)
        if t.get("system") == "phone" and t.get("use") != "old" and isinstance(t.get("value"), str)
    ]
    phones.sort(key=lambda t: (t.get("use") != "mobile", _rank(t.get("rank"))))
    for telecom in phones:
        number = normalise_phone(telecom["value"])
        if number is not None:
            return number
    return None


def _rank(rank: object) -> int:
    # R4 ContactPoint.rank: 1 is the most preferred; an unranked number comes after ranked ones.
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else 1 << 31


def _preferred_language(communications: object) -> str | None:
    entries = list(_mappings(communications))
    if not entries:
        return None
    chosen = next((e for e in entries if e.get("preferred") is True), entries[0])
    codings = list(_mappings(_mapping(chosen.get("language")).get("coding")))
    return _text(codings[0].get("code")) if codings else None


def _zone(extensions: object) -> str | None:
    for extension in _mappings(extensions):
        value = extension.get("valueCode")
        if extension.get("url") == TIMEZONE and isinstance(value, str) and value:
            return value
    return None


def _display(reference: object) -> str | None:
    display = _mapping(reference).get("display")
    return display if isinstance(display, str) and display.strip() else None


def _consent_channels(actions: object) -> set[Channel]:
    return {
        CONSENT_SCOPES[str(coding.get("code"))]
        for coding in _codings(actions)
        if coding.get("system") == CONSENT_SCOPE_NAME and coding.get("code") in CONSENT_SCOPES
    }


def _last_updated(resource: Mapping[str, Any]) -> datetime:
    """``meta.lastUpdated``; the earliest time there is if it is missing or not an instant."""
    value = _mapping(resource.get("meta")).get("lastUpdated")
    if not isinstance(value, str):
        return _NEVER
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _NEVER
    return moment if moment.tzinfo is not None else _NEVER


def _code(concepts: object, system: str) -> str | None:
    for coding in _codings(concepts):
        code = coding.get("code")
        if coding.get("system") == system and isinstance(code, str) and code:
            return code
    return None


def _codings(concepts: object) -> Iterator[Mapping[str, Any]]:
    """Every coding of a CodeableConcept or of a list of them."""
    for concept in _mappings(concepts if isinstance(concepts, list) else [concepts]):
        yield from _mappings(concept.get("coding"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _mappings(items: object) -> Iterator[Mapping[str, Any]]:
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, Mapping))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# -- writing ----------------------------------------------------------------------------------


def uuid7(at: datetime, key: str) -> str:
    """A UUIDv7 (RFC 9562) for ``at`` whose 74 random bits come from SHA-256 of ``key``: the
    same time and key always give the same ID, so writing a resource again changes nothing.
    The key should hold something unguessable (a Twilio SID, the reminder's ID), not patient
    data alone, since the hash of a phone number can be found by trying them all. Raises
    ValueError for a naive time or one outside UUIDv7's 48-bit millisecond range."""
    millis = (_utc(at) - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= millis < 1 << 48:
        raise ValueError("the time is outside the range of a UUIDv7")
    random = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big") >> 6
    rand_a, rand_b = random >> 62, random & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def reply_communication(
    *,
    communication_id: str,
    patient_id: str,
    reminder_id: str | None,
    text: str,
    channel: Channel,
    received_at: datetime,
    kind: str,
    based_on: str | None = None,
) -> Resource:
    """A patient's reply (an SMS, or a digit pressed in a call, as words) as a Communication
    that becomes a from_patient message in the chart. ``kind`` (one of REPLY_KINDS) is a second
    category, so the console can filter replies by what they asked for. Raises ValueError for
    an ID that is not a UUIDv7 (the hub refuses those), an unknown kind or an empty text."""
    if kind not in REPLY_KINDS:
        raise ValueError("the reply kind is not one of " + ", ".join(REPLY_KINDS))
    return _communication(
        communication_id,
        {
            "basedOn": _reminder_reference(reminder_id, based_on),
            "status": "completed",
            # A second CodeableConcept, not a second coding of the first: codings of one
            # concept say the same thing in different systems, and a kind is another thing.
            "category": [_concept(MESSAGE_CATEGORY, "patient-reply"), _concept(REPLY_KIND, kind)],
            "medium": [_concept(PARTICIPATION_MODE, *MEDIA[channel])],
            "subject": _reference("Patient", patient_id),
            "sent": _instant(received_at),
            "sender": _reference("Patient", patient_id),
            "payload": _payload(text),
        },
    )


def outcome_communication(
    *,
    communication_id: str,
    patient_id: str,
    reminder_id: str,
    channel: Channel,
    state: str,
    detail: str,
    at: datetime,
    based_on: str | None = None,
) -> Resource:
    """What became of a reminder, as a Communication that becomes a to_patient message in the
    chart. ``state`` is sent, delivered, answered (a call picked up), failed or cancelled;
    ``detail`` (operator words, no patient data) finishes the sentence the chart shows and, for
    one that did not go out, is its statusReason. Raises ValueError for an ID that is not a
    UUIDv7 or a state that is not an outcome."""
    status = OUTCOME_STATUSES.get(state)
    if status is None:
        raise ValueError("the state is not an outcome: one of " + ", ".join(OUTCOME_STATUSES))
    detail = " ".join(detail.split())
    sentence = OUTCOME_SENTENCES[(channel, state)]
    reason = {"text": detail} if status == "not-done" and detail else None
    return _communication(
        communication_id,
        {
            "basedOn": _reminder_reference(reminder_id, based_on),
            "status": status,
            "statusReason": reason,
            "category": [_concept(MESSAGE_CATEGORY, "reminder-outcome")],
            "medium": [_concept(PARTICIPATION_MODE, *MEDIA[channel])],
            "subject": _reference("Patient", patient_id),
            "sent": _instant(at),
            "recipient": [_reference("Patient", patient_id)],
            # The tablet shows who wrote a message: here, no person but the service.
            "sender": {"display": REMINDER_SERVICE},
            "payload": _payload(f"{sentence}: {detail}" if detail else sentence),
        },
    )


def callback_task(
    *,
    task_id: str,
    patient_id: str,
    reminder_id: str | None,
    communication_id: str,
    at: datetime,
    based_on: str | None = None,
) -> Resource:
    """A Task asking the patient's CHW to call them back, pointing at the reply that asked.
    It is due on the day of ``at`` as given: pass ``at`` in the patient's zone for their day."""
    _utc(at)
    return _resource(
        "Task",
        task_id,
        {
            "basedOn": _reminder_reference(reminder_id, based_on),
            "status": "requested",
            "intent": "order",
            "code": _concept(TASK_KIND, "call_back"),
            "description": CALL_BACK,
            "focus": _reference("Communication", communication_id),
            "for": _reference("Patient", patient_id),
            "authoredOn": _instant(at),
            "restriction": {"period": {"end": at.date().isoformat()}},
        },
    )


def _communication(communication_id: str, elements: Mapping[str, Any]) -> Resource:
    if not _is_uuid7(communication_id):
        raise ValueError("a Communication's ID must be a UUIDv7 for the hub to take it")
    return _resource("Communication", communication_id, elements)


def _resource(kind: str, resource_id: str, elements: Mapping[str, Any]) -> Resource:
    # FHIR JSON has no nulls: an element without a value is left out.
    present = {k: v for k, v in elements.items() if v is not None}
    return {"resourceType": kind, "id": resource_id, **present}


def _payload(text: str) -> list[dict[str, str]]:
    if not text.strip():
        raise ValueError("a message's text is empty")
    return [{"contentString": text}]


def _reminder_reference(
    reminder_id: str | None, based_on: str | None = None
) -> list[dict[str, str]] | None:
    """What a reply or outcome is about: ``based_on`` (a reference such as ``Task/ID``, for a
    missed-visit reminder central made itself), else the reminder's CommunicationRequest."""
    if based_on:
        return [{"reference": based_on}]
    return [_reference("CommunicationRequest", reminder_id)] if reminder_id else None


def _reference(kind: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{kind}/{resource_id}"}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    return {"coding": [coding | {"display": display} if display else coding]}


def _instant(moment: datetime) -> str:
    """A FHIR instant in UTC, to the millisecond when there is one."""
    utc = _utc(moment)
    spec = "seconds" if utc.microsecond == 0 else "milliseconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a time must be timezone-aware")
    return moment.astimezone(UTC)


def _is_uuid7(text: str) -> bool:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == text
