"""The Calls resource, and the scripted patient who answers each call.

An accepted call plays out in the background: it rings, and the phone does what it is scripted
to (``LocalTwilio`` ``voice_answers``): presses digits (``""`` answers and presses nothing),
or ends ``no-answer``, ``busy`` or ``failed``. An answered call fetches its TwiML (signed, from
its Url) or runs the Twiml it was given, records every <Say> and <Play>, posts the digits to
the <Gather> action and hears the answer. Its progress goes to its StatusCallback for the
events asked for.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urljoin

from sms.local_twilio.records import Ledger, LocalCall, copy_call
from sms.local_twilio.rest import (
    API_VERSION,
    E164,
    dates_match,
    error_reply,
    form_value,
    is_web_url,
    new_sid,
    rfc2822,
)
from sms.local_twilio.server import Reply, json_reply
from sms.local_twilio.webhooks import Webhooks

_CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
# What a scripted phone does instead of answering (any other value is the digits it presses).
_UNANSWERED = frozenset({"no-answer", "busy", "failed"})


@dataclass(frozen=True)
class _Gather:
    action: str | None
    method: str
    num_digits: int | None


class Calls:
    """``/Accounts/{sid}/Calls``: create, fetch and list, and each call as the patient hears it."""

    list_key = "calls"
    date_parameter = "StartTime"

    def __init__(
        self,
        account_sid: str,
        ledger: Ledger,
        webhooks: Webhooks,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._account_sid = account_sid
        self._ledger = ledger
        self._webhooks = webhooks
        self._clock = clock

    # -- REST -------------------------------------------------------------------------------

    def create(self, form: dict[str, list[str]]) -> Reply:
        to, from_ = form_value(form, "To"), form_value(form, "From")
        twiml, url = form_value(form, "Twiml") or None, form_value(form, "Url") or None
        callback = form_value(form, "StatusCallback") or None
        refusal = _refusal(to, from_, twiml, url, callback)
        if refusal is not None:
            return refusal
        events = tuple(e for e in form.get("StatusCallbackEvent", []) if e in _CALL_EVENTS)
        now = self._clock()
        call = LocalCall(
            sid=new_sid("CA"),
            to=to,
            from_=from_,
            twiml=twiml,
            url=url,
            method=(form_value(form, "Method") or "POST").upper(),
            status="queued",
            status_callback=callback,
            events=events or ("completed",),
            date_created=now,
            date_updated=now,
            start_time=now,
        )
        with self._ledger.changed:
            self._ledger.calls[call.sid] = call
            self._ledger.changed.notify_all()
            payload = self._json(call)
        self._webhooks.submit(self._run, call.sid)
        return json_reply(201, payload)

    def find(self, sid: str) -> dict[str, Any] | None:
        with self._ledger.changed:
            call = self._ledger.calls.get(sid)
            return None if call is None else self._json(call)

    def listed(
        self, query: dict[str, list[str]], wanted: list[tuple[str, date]]
    ) -> list[dict[str, Any]]:
        """The calls matching the filters, newest first, as JSON."""
        to, from_ = form_value(query, "To"), form_value(query, "From")
        status = form_value(query, "Status")
        with self._ledger.changed:
            return [
                self._json(c)
                for c in reversed(self._ledger.calls.values())
                if (not to or c.to == to)
                and (not from_ or c.from_ == from_)
                and (not status or c.status == status)
                and dates_match(c.start_time, wanted)
            ]

    def _json(self, call: LocalCall) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self._account_sid}/Calls/{call.sid}"
        return {
            "account_sid": self._account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(call.date_created),
            "date_updated": rfc2822(call.date_updated),
            "direction": "outbound-api",
            "duration": None if call.duration is None else str(call.duration),
            "end_time": rfc2822(call.end_time),
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call.sid,
            "start_time": rfc2822(call.start_time),
            "status": call.status,
            "subresource_uris": {
                "notifications": f"{uri}/Notifications.json",
                "recordings": f"{uri}/Recordings.json",
                "events": f"{uri}/Events.json",
            },
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    # -- the scripted patient ---------------------------------------------------------------

    def _run(self, sid: str) -> None:
        with self._ledger.changed:
            call = copy_call(self._ledger.calls[sid])
            answer = self._ledger.answers.get(call.to, "no-answer")
        if answer not in ("busy", "failed"):
            self._progress(sid, "initiated", "initiated")
            self._progress(sid, "ringing", "ringing")
        if answer in _UNANSWERED:
            self._finish(sid, answer, duration=0)
            return
        self._progress(sid, "answered", "in-progress")
        self._update(sid, digits=answer)
        self._play_document(call, self._first_document(call), answer)
        with self._ledger.changed:
            heard = sum(len(text) for text in self._ledger.calls[sid].said)
        self._finish(sid, "completed", duration=max(1, round(heard / 15)))

    def _first_document(self, call: LocalCall) -> str | None:
        if call.twiml is not None:
            return call.twiml
        if call.url is None:
            return None
        attempt = self._webhooks.deliver(
            "twiml", call.sid, call.url, self._params(call, "in-progress"), call.method
        )
        return attempt.answer if attempt.failure is None else None

    def _play_document(self, call: LocalCall, document: str | None, digits: str) -> None:
        """Run a TwiML document as the patient hears it; on <Gather>, post the digits."""
        if document is None:
            return
        gather = self._hear(call.sid, document, bool(digits))
        if gather is None or not digits:
            return
        pressed = digits[: gather.num_digits] if gather.num_digits else digits
        action = urljoin(call.url or "", gather.action or "")
        if not is_web_url(action):
            return
        params = {**self._params(call, "in-progress"), "Digits": pressed, "FinishedOnKey": ""}
        attempt = self._webhooks.deliver("gather", call.sid, action, params, gather.method)
        if attempt.failure is None:
            self._hear(call.sid, attempt.answer, False)

    def _hear(self, sid: str, document: str, will_press: bool) -> _Gather | None:
        """Record what a document says and plays, up to the <Gather> the patient answers."""
        try:
            # The TwiML comes from the application under test; expat expands no external
            # entities.
            root = ET.fromstring(document)  # noqa: S314
        except ET.ParseError:
            return None
        said: list[str] = []
        played: list[str] = []
        gather = _walk(root, said, played, will_press)
        with self._ledger.changed:
            call = self._ledger.calls[sid]
            call.documents.append(document)
            call.said.extend(said)
            call.played.extend(played)
            self._ledger.changed.notify_all()
        return gather

    def _progress(self, sid: str, event: str, status: str) -> None:
        call = self._update(sid, status=status)
        if event in call.events and call.status_callback is not None:
            params = {**self._params(call, status), "CallbackSource": "call-progress-events"}
            self._webhooks.deliver("call-status", sid, call.status_callback, params)

    def _finish(self, sid: str, status: str, *, duration: int) -> None:
        call = self._update(sid, status=status, duration=duration, ended=True)
        if call.status_callback is None:
            return
        params = {
            **self._params(call, status),
            "CallDuration": str(duration),
            "Duration": str((duration + 59) // 60),
            "CallbackSource": "call-progress-events",
        }
        self._webhooks.deliver("call-status", sid, call.status_callback, params)

    def _update(
        self,
        sid: str,
        *,
        status: str | None = None,
        digits: str | None = None,
        duration: int | None = None,
        ended: bool = False,
    ) -> LocalCall:
        with self._ledger.changed:
            call = self._ledger.calls[sid]
            call.status = status or call.status
            call.digits = call.digits if digits is None else digits
            call.duration = call.duration if duration is None else duration
            call.date_updated = self._clock()
            call.end_time = call.date_updated if ended else call.end_time
            self._ledger.changed.notify_all()
            return copy_call(call)

    def _params(self, call: LocalCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": self._account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }


def _refusal(
    to: str, from_: str, twiml: str | None, url: str | None, callback: str | None
) -> Reply | None:
    if not to:
        return error_reply(400, 21201, "No 'To' number is specified")
    if not E164.fullmatch(to):
        return error_reply(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not from_:
        return error_reply(400, 21213, "No 'From' number is specified")
    if twiml is None and url is None:
        return error_reply(
            400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' must be specified"
        )
    if url is not None and not is_web_url(url):
        return error_reply(400, 21205, "Url is not a valid URL")
    if callback is not None and not is_web_url(callback):
        return error_reply(400, 21609, "Invalid StatusCallback url")
    if twiml is not None:
        try:
            ET.fromstring(twiml)  # noqa: S314 - our own TwiML, checked for form only
        except ET.ParseError:
            return error_reply(400, 12100, "Document parse failure")
    return None


def _walk(root: ET.Element, said: list[str], played: list[str], will_press: bool) -> _Gather | None:
    """Collect <Say> and <Play> in order; stop at a <Gather> the patient answers."""
    for verb in root:
        if verb.tag == "Say":
            said.append("".join(verb.itertext()).strip())
        elif verb.tag == "Play":
            played.append((verb.text or "").strip())
        elif verb.tag == "Gather":
            _walk(verb, said, played, will_press=False)
            if will_press:
                num_digits = verb.get("numDigits", "")
                return _Gather(
                    action=verb.get("action"),
                    method=verb.get("method", "POST").upper(),
                    num_digits=int(num_digits) if num_digits.isdigit() else None,
                )
        elif verb.tag in ("Hangup", "Reject", "Redirect"):
            break
    return None
