"""The Messages resource, and the phone network that carries a message either way.

An accepted message plays out in the background as the network would report it: ``sent`` then
``delivered``, or the failure scripted for its phone, each posted to its StatusCallback. An
inbound SMS is recorded here and posted to our webhook by ``LocalTwilio.inbound_sms``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sms.local_twilio.records import Ledger, LocalMessage
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
from sms.segments import count as count_segments


class Messages:
    """``/Accounts/{sid}/Messages``: create, fetch and list, and each message's delivery."""

    list_key = "messages"
    date_parameter = "DateSent"

    def __init__(
        self,
        account_sid: str,
        ledger: Ledger,
        webhooks: Webhooks,
        *,
        clock: Callable[[], datetime],
        stopping: threading.Event,
    ) -> None:
        self._account_sid = account_sid
        self._ledger = ledger
        self._webhooks = webhooks
        self._clock = clock
        self._stopping = stopping

    # -- REST -------------------------------------------------------------------------------

    def create(self, form: dict[str, list[str]]) -> Reply:
        to, from_, body = form_value(form, "To"), form_value(form, "From"), form_value(form, "Body")
        callback = form_value(form, "StatusCallback") or None
        refusal = self._refusal(to, from_, body, callback)
        if refusal is not None:
            return refusal
        message = self._new(
            to, from_, body, status="queued", direction="outbound-api", callback=callback
        )
        payload = self._json(message)
        self._webhooks.submit(self._deliver, message.sid)
        return json_reply(201, payload)

    def _refusal(self, to: str, from_: str, body: str, callback: str | None) -> Reply | None:
        if not to:
            return error_reply(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            return error_reply(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not from_:
            return error_reply(400, 21603, "A 'From' phone number is required.")
        if not body:
            return error_reply(400, 21602, "Message body is required.")
        if callback is not None and not is_web_url(callback):
            return error_reply(400, 21609, "Invalid StatusCallback url")
        with self._ledger.changed:
            opted_out = to in self._ledger.opted_out
        if opted_out:
            return error_reply(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    def find(self, sid: str) -> dict[str, Any] | None:
        with self._ledger.changed:
            message = self._ledger.messages.get(sid)
            return None if message is None else self._json(message)

    def listed(
        self, query: dict[str, list[str]], wanted: list[tuple[str, date]]
    ) -> list[dict[str, Any]]:
        """The messages matching the filters, newest first, as JSON."""
        to, from_ = form_value(query, "To"), form_value(query, "From")
        with self._ledger.changed:
            return [
                self._json(m)
                for m in reversed(self._ledger.messages.values())
                if (not to or m.to == to)
                and (not from_ or m.from_ == from_)
                and dates_match(m.date_sent, wanted)
            ]

    def _json(self, message: LocalMessage) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self._account_sid}/Messages/{message.sid}"
        return {
            "account_sid": self._account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": rfc2822(message.date_created),
            "date_sent": rfc2822(message.date_sent),
            "date_updated": rfc2822(message.date_updated),
            "direction": message.direction,
            "error_code": message.error_code,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(message.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": message.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": message.to,
            "uri": f"{uri}.json",
        }

    # -- the network ------------------------------------------------------------------------

    def receive(self, from_: str, body: str, to: str) -> LocalMessage:
        """Record an SMS a patient sent to ``to``; returns it."""
        return self._new(to, from_, body, status="received", direction="inbound", callback=None)

    def _new(
        self, to: str, from_: str, body: str, *, status: str, direction: str, callback: str | None
    ) -> LocalMessage:
        """A message created now, stored."""
        now = self._clock()
        message = LocalMessage(
            sid=new_sid("SM"),
            to=to,
            from_=from_,
            body=body,
            status=status,
            direction=direction,
            num_segments=count_segments(body).segments,
            status_callback=callback,
            date_created=now,
            date_updated=now,
            date_sent=now,
        )
        self._store(message)
        return message

    def inbound_params(self, message: LocalMessage) -> dict[str, str]:
        """The form Twilio posts to the incoming-message webhook."""
        return {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "SmsMessageSid": message.sid,
            "AccountSid": self._account_sid,
            "From": message.from_,
            "To": message.to,
            "Body": message.body,
            "NumMedia": "0",
            "NumSegments": str(message.num_segments),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }

    def _store(self, message: LocalMessage) -> None:
        with self._ledger.changed:
            self._ledger.messages[message.sid] = message
            self._ledger.changed.notify_all()

    def _deliver(self, sid: str) -> None:
        with self._ledger.changed:
            message = self._ledger.messages[sid]
            error_code, final = self._ledger.failing.get(message.to, (None, "delivered"))
        steps = ["failed"] if final == "failed" else ["sent", final]
        for status in steps:
            if self._stopping.is_set():
                return
            updated = self._set_status(sid, status, error_code)
            if updated.status_callback is not None:
                params = self._status_params(updated)
                self._webhooks.deliver("message-status", sid, updated.status_callback, params)

    def _set_status(self, sid: str, status: str, error_code: int | None) -> LocalMessage:
        with self._ledger.changed:
            message = self._ledger.messages[sid]
            message.status = status
            message.date_updated = self._clock()
            if status in ("failed", "undelivered"):
                message.error_code = error_code
            self._ledger.changed.notify_all()
            return replace(message)

    def _status_params(self, message: LocalMessage) -> dict[str, str]:
        params = {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "AccountSid": self._account_sid,
            "From": message.from_,
            "To": message.to,
            "MessageStatus": message.status,
            "SmsStatus": message.status,
            "ApiVersion": API_VERSION,
        }
        if message.error_code is not None:
            params["ErrorCode"] = str(message.error_code)
        return params
