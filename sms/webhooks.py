"""What Twilio tells central: incoming SMS, the key pressed in a reminder call, and the status
of each message and call.

Every request is checked first: its ``X-Twilio-Signature`` must be Twilio's signature, with
the account's auth token, of the URL as Twilio called it (central's public URL, not the one the
reverse proxy forwards to) and the form parameters. A request that fails is refused
(``BadWebhook``, 403) before any parameter is acted on.

Each webhook is handled once: a replay (same MessageSid, same CallSid's key press, a status
already passed) changes nothing. Every reply and outcome becomes a FHIR Communication about
the patient and the reminder, which the hub brings down to the CHW's tablet; a patient who
asks for a call gets a call-back Task for the CHW as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from sms import fhir, keywords, outbox, templates
from sms.config import SmsConfig
from sms.database import Session
from sms.dispatch import settle_and_tell
from sms.errors import BadWebhook
from sms.model import Channel, State
from sms.outcomes import outcome_for
from sms.planning import plan_patients
from sms.records import Records, Resource
from sms.voice import reply_twiml

log = logging.getLogger(__name__)

# Twilio's message and call statuses -> the outbox state they mean.
MESSAGE_STATES: dict[str, State] = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
CALL_STATES: dict[str, State] = {
    "queued": "sent",
    "initiated": "sent",
    "ringing": "sent",
    "in-progress": "sent",
    "completed": "delivered",
    "busy": "failed",
    "no-answer": "failed",
    "failed": "failed",
    "canceled": "failed",
}
# A reply's kind -> the words sent back.
ANSWERS = {
    "confirm": "confirmed",
    "stop": "stopped",
    "start": "started",
    "help": "help",
    "call": "call_back",
    "other": "received",
}
# Keys of a reminder call.
DIGITS = {"1": "confirm", "2": "call"}


def check_signature(
    config: SmsConfig, url: str, params: Mapping[str, str], signature: str | None
) -> None:
    """Raise BadWebhook unless ``signature`` is Twilio's for ``url`` and ``params``."""
    if not signature:
        raise BadWebhook("the request has no Twilio signature")
    if not RequestValidator(config.auth_token).validate(url, dict(params), signature):
        raise BadWebhook("the request's Twilio signature does not match")


@dataclass(frozen=True)
class Webhooks:
    records: Records
    config: SmsConfig

    def status(
        self, session: Session, reminder_id: str, params: Mapping[str, str], now: datetime
    ) -> None:
        """A message's or call's status callback."""
        sid = params.get("MessageSid") or params.get("CallSid")
        state = _state_of(params)
        if state is None or not sid:
            log.info("a status callback without a status Twilio documents was ignored")
            return
        row = outbox.get(session, reminder_id)
        if row is None:
            log.warning("a status callback named a reminder central does not hold")
            return
        if row.twilio_sid is not None and row.twilio_sid != sid:
            # About an earlier send of a reminder an operator sent again: not this one's.
            log.info("a status callback about an earlier send of a reminder was ignored")
            return
        if state == "sent":
            outbox.mark_sent(session, [(reminder_id, sid)], now)
            return
        why = _failure(params) if state == "failed" else ""
        outbox.mark_sent(session, [(reminder_id, sid)], now)
        settle_and_tell(session, self.records, reminder_id, state, why=why, now=now)

    def inbound_sms(self, session: Session, params: Mapping[str, str], now: datetime) -> str:
        """An SMS from a patient; returns the TwiML that answers it."""
        phone = params.get("From", "")
        key = params.get("MessageSid") or params.get("SmsSid") or ""
        if not key or not outbox.first_time(session, f"sms:{key}", now):
            return str(MessagingResponse())
        reply = keywords.parse(params.get("Body", ""))
        kind = reply.kind
        latest = outbox.latest_to(session, phone)
        language = reply.language or (latest.language if latest else None)
        language = templates.language_for(language, self.config.policy.default_language)
        self._act(session, phone, kind, now)
        if latest is None:
            log.info("an SMS came from a phone no reminder went to; it was answered with help")
            return _sms_answer(templates.reply_text("help", language))
        text = params.get("Body", "").strip()
        self.records.write(
            session,
            _reply_resources(
                key,
                latest.patient_id,
                latest.reminder_id,
                based_on=latest.based_on,
                text=text,
                channel="sms",
                kind=kind,
                now=now,
            ),
        )
        return _sms_answer(templates.reply_text(ANSWERS[kind], language))

    def gather(
        self, session: Session, reminder_id: str, params: Mapping[str, str], now: datetime
    ) -> str:
        """The key a patient pressed in a reminder call; returns the TwiML that answers it."""
        row = outbox.get(session, reminder_id)
        digits = params.get("Digits", "")
        kind = DIGITS.get(digits, "other")
        language = row.language if row else self.config.policy.default_language
        key = f"gather:{params.get('CallSid', '')}"
        if row is not None and params.get("CallSid") and outbox.first_time(session, key, now):
            text = f"Pressed {digits}" if digits else "Pressed no key"
            self.records.write(
                session,
                _reply_resources(
                    key,
                    row.patient_id,
                    reminder_id,
                    based_on=row.based_on,
                    text=text,
                    channel="voice",
                    kind=kind,
                    now=now,
                ),
            )
        return reply_twiml(templates.reply_text(ANSWERS[kind], language), language)

    def _act(self, session: Session, phone: str, kind: str, now: datetime) -> None:
        """STOP and START take effect at once, for every reminder to that phone."""
        if kind == "stop":
            self.opt_out(session, phone, "STOP", "the patient opted out (STOP)", now)
        elif kind == "start":
            outbox.opt_in(session, phone)
            patients = outbox.patients_of_phone(session, phone)
            plan_patients(session, self.records, patients, self.config, now)

    def opt_out(
        self, session: Session, phone: str, source: str, why: str, now: datetime
    ) -> list[str]:
        """No more reminders to ``phone``: record it and cancel what is planned, each with its
        outcome for the patient's chart. Returns the reminders cancelled."""
        outbox.opt_out(session, phone, source, now)
        cancelled = outbox.cancel_for_phone(session, phone, why, now)
        for reminder_id in cancelled:
            row = outbox.get(session, reminder_id)
            if row is not None:
                self.records.write(session, [outcome_for(row, row.error, now)])
        return cancelled


def _state_of(params: Mapping[str, str]) -> State | None:
    if "MessageStatus" in params or "SmsStatus" in params:
        status = params.get("MessageStatus") or params.get("SmsStatus") or ""
        return MESSAGE_STATES.get(status)
    return CALL_STATES.get(params.get("CallStatus", ""))


def _failure(params: Mapping[str, str]) -> str:
    code = params.get("ErrorCode")
    status = params.get("MessageStatus") or params.get("CallStatus") or "failed"
    return f"Twilio reported {status}" + (f" (error {code})" if code else "")


def _sms_answer(text: str) -> str:
    response = MessagingResponse()
    response.message(text)
    return str(response)


def _reply_resources(
    key: str,
    patient_id: str,
    reminder_id: str | None,
    *,
    based_on: str | None,
    text: str,
    channel: Channel,
    kind: str,
    now: datetime,
) -> list[Resource]:
    communication_id = fhir.uuid7(now, f"reply:{key}")
    resources = [
        fhir.reply_communication(
            communication_id=communication_id,
            patient_id=patient_id,
            reminder_id=reminder_id,
            text=text or "(empty message)",
            channel=channel,
            received_at=now,
            kind=kind,
            based_on=based_on,
        )
    ]
    if kind == "call":
        resources.append(
            fhir.callback_task(
                task_id=fhir.uuid7(now, f"call-back:{key}"),
                patient_id=patient_id,
                reminder_id=reminder_id,
                communication_id=communication_id,
                at=now,
                based_on=based_on,
            )
        )
    return resources
