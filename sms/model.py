"""The values the reminder service passes between its parts.

The planner reads a ``Reminder`` (from a FHIR CommunicationRequest), the ``Recipient`` it is
for (from the Patient) and the patient's ``Consents``, and returns a ``Decision``. The outbox
keeps one ``OutboxRow`` per reminder and moves it through the states below. Only these go
back to planned: a retry, a lost send that Twilio does not hold, a cancelled reminder decided
again, and an operator's resend.

    planned --claim--> sending --Twilio accepted--> sent --callback--> delivered
       |                  |  \\--Twilio refused (4xx)--> failed        \\--> failed
       |                  \\--429/5xx, lease expired, nothing at Twilio--> planned (retry)
       \\--revoked, opted out, consent withdrawn, too late--> cancelled (planned again if
                                                              that changes)

A ``sending`` row whose process died is settled by Twilio's status callback, which carries the
reminder's ID, or, failing that, by asking Twilio what it holds (``sms.outbox``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

Channel = Literal["sms", "voice"]
State = Literal["planned", "sending", "sent", "delivered", "failed", "cancelled"]
STATES: tuple[State, ...] = ("planned", "sending", "sent", "delivered", "failed", "cancelled")
# States in which nothing more happens to a reminder on its own (only new planning or an
# operator's resend plans it again).
FINAL_STATES: frozenset[State] = frozenset({"delivered", "failed", "cancelled"})

# The reminder templates the hub's projection names in CommunicationRequest.category
# (system urn:rural-care:reminder-template); the forms' rules pick one per follow-up
# (field_app/forms/content/*.json), and a missed visit has its own.
TEMPLATES = (
    "followup_due",
    "anc_contact_due",
    "immunisation_due",
    "medicine_reminder",
    "missed_visit",
)


@dataclass(frozen=True)
class Reminder:
    """One reminder to send: a CommunicationRequest the hub projected from a chart's task."""

    id: str  # the CommunicationRequest's ID; also the outbox row's key
    patient_id: str
    template: str
    language: str | None  # BCP-47, e.g. "sw"; the patient's own if None
    send_on: date  # the day the patient should hear it, in the patient's own zone
    active: bool  # False once revoked or completed: must not go out
    medium: Channel | None = None  # a channel the request asks for, if it names one
    due: date | None = None  # the day of the visit it reminds of (its Task's), if known
    task_id: str | None = None  # the follow-up Task it is based on
    based_on: str | None = None  # what replies and outcomes point at, if not this request


@dataclass(frozen=True)
class Recipient:
    """What the reminder needs of the patient (from the Patient resource)."""

    patient_id: str
    first_name: str | None
    phone: str | None  # E.164, e.g. "+255712345678"
    language: str | None
    zone: str | None  # IANA time zone, e.g. "Africa/Dar_es_Salaam"
    facility: str | None  # the health facility's name, for the message text


@dataclass(frozen=True)
class Consents:
    """The patient's answers to the two reminder consents: True permit, False deny, None
    never asked (which is a no: the programme is opt-in)."""

    sms: bool | None = None
    voice: bool | None = None


@dataclass(frozen=True)
class Send:
    """Send ``reminder`` by ``channel`` to ``phone`` at ``send_at`` (UTC) or as soon after as
    quiet hours allow."""

    channel: Channel
    phone: str
    language: str
    send_at: datetime


@dataclass(frozen=True)
class Skip:
    """Do not send; ``reason`` says why in words an operator understands (never patient data)."""

    reason: str


Decision = Send | Skip


@dataclass(frozen=True)
class OutboxRow:
    reminder_id: str
    patient_id: str
    channel: Channel
    phone: str
    language: str
    zone: str  # the patient's IANA time zone: quiet hours are checked again before sending
    template: str
    body: str  # the SMS text, or the words a voice call speaks
    send_at: datetime
    state: State
    attempts: int
    twilio_sid: str | None
    error: str | None  # why it failed or was cancelled, for the operator
    updated_at: datetime
    based_on: str | None = None  # e.g. Task/ID for a missed visit; else its CommunicationRequest
