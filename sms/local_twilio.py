"""A local Twilio: the parts of Twilio's REST API and webhooks the reminder service uses.

Nothing in the test suite or the demo may reach the internet, so the real ``twilio`` client is
pointed at this server instead (``TwilioSender(api_url=...)``). It answers the same paths, form
fields, JSON shapes and error codes as ``api.twilio.com/2010-04-01`` for Messages and Calls, and
plays the rest of the world: after accepting a message it posts the status callbacks (``sent``
then ``delivered``, or a scripted failure), after accepting a call it fetches and runs the TwiML
and answers as a scripted patient would, and it delivers inbound SMS to our webhook. Every
webhook is signed with ``X-Twilio-Signature`` exactly as Twilio signs it, and honours Twilio's
connection overrides in the URL fragment (``#rc=3&rp=5xx&ct=500&rt=2000``).

Connection overrides follow Twilio's documented defaults: ``rc`` (retries) defaults to 1 and
``rp`` (retry policy: ``ct``, ``rt``, ``4xx``, ``5xx``, ``all``, comma-separated) to ``ct``, so
without overrides a webhook is retried once when the connection fails and never after an HTTP
error; ``#rc=3&rp=5xx`` retries a 5xx answer three times. The fragment is neither sent nor signed.

Tests and the demo drive it with Python methods or, from another process, with the JSON admin
API under ``/_local/`` (no authentication: it binds 127.0.0.1 only). Run it on its own with
``python -m sms.local_twilio --port 8089 --account-sid AC... --auth-token ... --sms-url URL``.

It logs no message text and no phone number: request lines are not logged at all.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import http
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urldefrag, urlencode, urljoin, urlsplit

from twilio.request_validator import RequestValidator

from sms.segments import count as count_segments

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_NUMBER = "+15005550006"  # the account's own number: the default To of an inbound SMS
_E164 = re.compile(r"\+[0-9]{8,15}")
_RESOURCE = re.compile(
    r"/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<kind>Messages|Calls)(?:/(?P<sid>[^/]+))?\.json"
)
# Twilio's own keywords for its default opt-out handling; the webhook still receives them.
_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
_START_WORDS = frozenset({"START", "YES", "UNSTOP"})
_CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
# What a scripted phone does instead of answering (any other value is the digits it presses).
_UNANSWERED = frozenset({"no-answer", "busy", "failed"})
_FAULT_CODES = {429: 20429, 500: 20500, 503: 20503}
_WEBHOOK_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "TwilioProxy/1.1",
}


@dataclass
class LocalMessage:
    """A message the local Twilio accepted (outbound) or delivered to our webhook (inbound)."""

    sid: str
    to: str
    from_: str
    body: str
    status: str  # queued, sent, delivered, undelivered, failed; received for inbound
    direction: str  # outbound-api or inbound
    num_segments: int
    status_callback: str | None
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None
    error_code: int | None = None


@dataclass
class LocalCall:
    """A call the local Twilio placed, with what the patient heard and pressed."""

    sid: str
    to: str
    from_: str
    twiml: str | None  # the Twiml parameter, when the call was created with one
    url: str | None  # the Url parameter otherwise
    method: str
    status: str  # queued, ringing, in-progress, completed, no-answer, busy, failed
    status_callback: str | None
    events: tuple[str, ...]
    date_created: datetime
    date_updated: datetime
    start_time: datetime | None
    end_time: datetime | None = None
    duration: int | None = None
    digits: str | None = None  # what the scripted patient pressed, if asked
    said: list[str] = field(default_factory=list)  # the text of every <Say>, in order
    played: list[str] = field(default_factory=list)  # the URL of every <Play>
    documents: list[str] = field(default_factory=list)  # every TwiML document the call ran


@dataclass(frozen=True)
class WebhookAttempt:
    """One HTTP request the local Twilio made to a webhook, and what it was answered."""

    kind: str  # message-status, call-status, twiml, gather or inbound
    sid: str  # the message or call it is about
    url: str  # as requested, without the fragment: the URL the signature covers
    method: str
    params: dict[str, str]
    signature: str
    attempt: int  # 1 for the first try, 2 for the first retry...
    status: int | None  # the HTTP status answered; None when nothing was answered
    failure: str | None  # ct, rt, 4xx, 5xx; None when it succeeded
    answer: str  # the body answered: TwiML for inbound SMS and calls


@dataclass(frozen=True)
class _Overrides:
    """Twilio's webhook connection overrides (the URL fragment), with Twilio's defaults."""

    retries: int = 1
    policy: frozenset[str] = frozenset({"ct"})
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_time: float = 15.0


@dataclass(frozen=True)
class _Fault:
    status: int
    code: int
    retry_after: float | None


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Gather:
    action: str | None
    method: str
    num_digits: int | None


class LocalTwilio:
    """Twilio's Messages and Calls API on 127.0.0.1, with the world around it simulated.

    ``voice_answers`` scripts the phones: phone -> the digits the patient presses (``""``
    answers and presses nothing), or ``"no-answer"``, ``"busy"``, ``"failed"``. A phone not
    listed does not answer. ``callback_backoff`` is the wait before a webhook retry (doubling
    each time); ``workers`` the threads that deliver webhooks.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sms_url: str | None = None,
        voice_answers: Mapping[str, str] | None = None,
        number: str = DEFAULT_NUMBER,
        callback_backoff: float = 1.0,
        workers: int = 16,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.sms_url = sms_url
        self.number = number
        self._auth_token = auth_token
        self._validator = RequestValidator(auth_token)
        self._address = (host, port)
        self._backoff = callback_backoff
        self._workers = workers
        self._clock = clock or (lambda: datetime.now(UTC))
        self._changed = threading.Condition()
        self._messages: dict[str, LocalMessage] = {}
        self._calls: dict[str, LocalCall] = {}
        self._attempts: list[WebhookAttempt] = []
        self._running = 0  # background tasks submitted and not yet done
        self._faults: deque[_Fault] = deque()
        self._opted_out: set[str] = set()
        self._failing: dict[str, tuple[int, str]] = {}
        self._answers: dict[str, str] = dict(voice_answers or {})
        self._gate = threading.Event()
        self._gate.set()
        self._stopping = threading.Event()
        self.created_event = threading.Event()  # set on every accepted create; clear it to wait
        self._server: _Server | None = None
        self._serving: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalTwilio:
        """Listen and serve in background threads; returns self."""
        if self._server is not None:
            raise RuntimeError("the local Twilio is already running")
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="local-twilio")
        self._server = _Server(self._address, self._answer)
        self._serving = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon stop() is noticed
            name="local-twilio-http",
            daemon=True,
        )
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop webhooks not yet sent, and join every thread."""
        server, pool, serving = self._server, self._pool, self._serving
        if server is None or pool is None or serving is None:
            return
        self._stopping.set()
        self._gate.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        pool.shutdown(wait=True, cancel_futures=True)
        serving.join()
        self._server = self._pool = self._serving = None

    def __enter__(self) -> LocalTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("the local Twilio is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what happened ----------------------------------------------------------------------

    def messages(self) -> list[LocalMessage]:
        """Every message, oldest first (copies)."""
        with self._changed:
            return [replace(m) for m in self._messages.values()]

    def calls(self) -> list[LocalCall]:
        """Every call, oldest first (copies)."""
        with self._changed:
            return [_copy_call(c) for c in self._calls.values()]

    def callbacks(self) -> list[WebhookAttempt]:
        """Every webhook request made, in the order they finished."""
        with self._changed:
            return list(self._attempts)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every accepted message and call has played out: its webhooks made and
        their retries done. False if that took longer than ``timeout`` seconds."""
        return self.wait_until(lambda: self._running == 0, timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``condition()`` holds, re-checking whenever anything changes here."""
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    # -- the world --------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``count`` creates (messages or calls) with this error status."""
        fault = _Fault(status, code or _FAULT_CODES.get(status, status), retry_after)
        with self._changed:
            self._faults.extend([fault] * count)

    def opt_out(self, phone: str) -> None:
        """The phone texted STOP: sending to it answers 21610 from now on."""
        with self._changed:
            self._opted_out.add(phone)

    def opt_in(self, phone: str) -> None:
        with self._changed:
            self._opted_out.discard(phone)

    def fail_delivery(self, phone: str, code: int, *, status: str = "undelivered") -> None:
        """Messages to ``phone`` end ``undelivered`` (or ``failed``) with ErrorCode ``code``."""
        if status not in ("undelivered", "failed"):
            raise ValueError("a failed delivery ends undelivered or failed")
        with self._changed:
            self._failing[phone] = (code, status)

    def set_voice_answer(self, phone: str, answer: str) -> None:
        """Script a phone: the digits it presses, or no-answer, busy or failed."""
        with self._changed:
            self._answers[phone] = answer

    def hold_creates(self) -> None:
        """Accept and record creates but hold their HTTP answers until ``release_creates``."""
        self._gate.clear()

    def release_creates(self) -> None:
        self._gate.set()

    def inbound_sms(self, from_: str, body: str, to: str | None = None) -> WebhookAttempt:
        """A patient texts us: post Twilio's incoming-message webhook to ``sms_url``.

        STOP and START keywords also opt the phone out and in, as Twilio's default handling
        does. Returns the request made, with the status and TwiML our server answered.
        """
        if self.sms_url is None:
            raise RuntimeError("no sms_url: nowhere to deliver an inbound SMS")
        self._opt_by_keyword(from_, body)
        now = self._clock()
        message = LocalMessage(
            sid=_sid("SM"),
            to=to or self.number,
            from_=from_,
            body=body,
            status="received",
            direction="inbound",
            num_segments=count_segments(body).segments,
            status_callback=None,
            date_created=now,
            date_updated=now,
            date_sent=now,
        )
        self._store(message)
        return self._deliver("inbound", message.sid, self.sms_url, self._inbound_params(message))

    def _opt_by_keyword(self, phone: str, body: str) -> None:
        keyword = body.strip().upper()
        if keyword in _STOP_WORDS:
            self.opt_out(phone)
        elif keyword in _START_WORDS:
            self.opt_in(phone)

    def _inbound_params(self, message: LocalMessage) -> dict[str, str]:
        return {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "SmsMessageSid": message.sid,
            "AccountSid": self.account_sid,
            "From": message.from_,
            "To": message.to,
            "Body": message.body,
            "NumMedia": "0",
            "NumSegments": str(message.num_segments),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }

    # -- HTTP -------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, authorization: str | None, body: bytes) -> _Reply:
        path, _, query = target.partition("?")
        if path.startswith("/_local/"):
            return self._admin(method, path, body)
        match = _RESOURCE.fullmatch(path)
        if not self._authorised(authorization):
            return _error(401, 20003, "Authenticate")
        if match is None or match["account"] != self.account_sid:
            return _not_found(path)
        kind, sid = match["kind"], match["sid"]
        if method == "POST" and sid is None:
            return self._create(kind, parse_qs(body.decode(), keep_blank_values=True))
        if method == "GET" and sid is None:
            return self._list(kind, path, parse_qs(query, keep_blank_values=True))
        if method == "GET":
            return self._fetch(kind, sid, path)
        return _error(405, 20004, "Method not allowed")

    def _authorised(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return False
        expected = f"{self.account_sid}:{self._auth_token}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _create(self, kind: str, form: dict[str, list[str]]) -> _Reply:
        fault = self._next_fault()
        if fault is not None:
            return _fault_reply(fault)
        reply = self._create_message(form) if kind == "Messages" else self._create_call(form)
        if reply.status == 201:
            self.created_event.set()
            self._gate.wait()
        return reply

    def _next_fault(self) -> _Fault | None:
        with self._changed:
            return self._faults.popleft() if self._faults else None

    # -- messages ---------------------------------------------------------------------------

    def _create_message(self, form: dict[str, list[str]]) -> _Reply:
        to, from_, body = _field(form, "To"), _field(form, "From"), _field(form, "Body")
        callback = _field(form, "StatusCallback") or None
        refusal = self._message_refusal(to, from_, body, callback)
        if refusal is not None:
            return refusal
        now = self._clock()
        message = LocalMessage(
            sid=_sid("SM"),
            to=to,
            from_=from_,
            body=body,
            status="queued",
            direction="outbound-api",
            num_segments=count_segments(body).segments,
            status_callback=callback,
            date_created=now,
            date_updated=now,
            date_sent=now,
        )
        self._store(message)
        payload = self._message_json(message)
        self._submit(self._deliver_message, message.sid)
        return _json(201, payload)

    def _message_refusal(
        self, to: str, from_: str, body: str, callback: str | None
    ) -> _Reply | None:
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not from_:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if callback is not None and not _is_web_url(callback):
            return _error(400, 21609, "Invalid StatusCallback url")
        with self._changed:
            opted_out = to in self._opted_out
        if opted_out:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    def _store(self, message: LocalMessage) -> None:
        with self._changed:
            self._messages[message.sid] = message
            self._changed.notify_all()

    def _deliver_message(self, sid: str) -> None:
        with self._changed:
            message = self._messages[sid]
            error_code, final = self._failing.get(message.to, (None, "delivered"))
        steps = ["failed"] if final == "failed" else ["sent", final]
        for status in steps:
            if self._stopping.is_set():
                return
            updated = self._set_message_status(sid, status, error_code)
            if updated.status_callback is not None:
                params = self._message_status_params(updated)
                self._deliver("message-status", sid, updated.status_callback, params)

    def _set_message_status(self, sid: str, status: str, error_code: int | None) -> LocalMessage:
        with self._changed:
            message = self._messages[sid]
            message.status = status
            message.date_updated = self._clock()
            if status in ("failed", "undelivered"):
                message.error_code = error_code
            self._changed.notify_all()
            return replace(message)

    def _message_status_params(self, message: LocalMessage) -> dict[str, str]:
        params = {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "AccountSid": self.account_sid,
            "From": message.from_,
            "To": message.to,
            "MessageStatus": message.status,
            "SmsStatus": message.status,
            "ApiVersion": API_VERSION,
        }
        if message.error_code is not None:
            params["ErrorCode"] = str(message.error_code)
        return params

    def _message_json(self, message: LocalMessage) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": _rfc2822(message.date_created),
            "date_sent": _rfc2822(message.date_sent),
            "date_updated": _rfc2822(message.date_updated),
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

    # -- calls ------------------------------------------------------------------------------

    def _create_call(self, form: dict[str, list[str]]) -> _Reply:
        to, from_ = _field(form, "To"), _field(form, "From")
        twiml, url = _field(form, "Twiml") or None, _field(form, "Url") or None
        callback = _field(form, "StatusCallback") or None
        refusal = _call_refusal(to, from_, twiml, url, callback)
        if refusal is not None:
            return refusal
        events = tuple(e for e in form.get("StatusCallbackEvent", []) if e in _CALL_EVENTS)
        now = self._clock()
        call = LocalCall(
            sid=_sid("CA"),
            to=to,
            from_=from_,
            twiml=twiml,
            url=url,
            method=(_field(form, "Method") or "POST").upper(),
            status="queued",
            status_callback=callback,
            events=events or ("completed",),
            date_created=now,
            date_updated=now,
            start_time=now,
        )
        with self._changed:
            self._calls[call.sid] = call
            self._changed.notify_all()
            payload = self._call_json(call)
        self._submit(self._run_call, call.sid)
        return _json(201, payload)

    def _run_call(self, sid: str) -> None:
        with self._changed:
            call = _copy_call(self._calls[sid])
            answer = self._answers.get(call.to, "no-answer")
        if answer not in ("busy", "failed"):
            self._call_progress(sid, "initiated", "initiated")
            self._call_progress(sid, "ringing", "ringing")
        if answer in _UNANSWERED:
            self._finish_call(sid, answer, duration=0)
            return
        self._call_progress(sid, "answered", "in-progress")
        self._update_call(sid, digits=answer)
        self._play_document(call, self._first_document(call), answer)
        with self._changed:
            heard = sum(len(text) for text in self._calls[sid].said)
        self._finish_call(sid, "completed", duration=max(1, round(heard / 15)))

    def _first_document(self, call: LocalCall) -> str | None:
        if call.twiml is not None:
            return call.twiml
        if call.url is None:
            return None
        attempt = self._deliver(
            "twiml", call.sid, call.url, self._call_params(call, "in-progress"), call.method
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
        if not _is_web_url(action):
            return
        params = {**self._call_params(call, "in-progress"), "Digits": pressed, "FinishedOnKey": ""}
        attempt = self._deliver("gather", call.sid, action, params, gather.method)
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
        with self._changed:
            call = self._calls[sid]
            call.documents.append(document)
            call.said.extend(said)
            call.played.extend(played)
            self._changed.notify_all()
        return gather

    def _call_progress(self, sid: str, event: str, status: str) -> None:
        call = self._update_call(sid, status=status)
        if event in call.events and call.status_callback is not None:
            params = {**self._call_params(call, status), "CallbackSource": "call-progress-events"}
            self._deliver("call-status", sid, call.status_callback, params)

    def _finish_call(self, sid: str, status: str, *, duration: int) -> None:
        call = self._update_call(sid, status=status, duration=duration, ended=True)
        if call.status_callback is None:
            return
        params = {
            **self._call_params(call, status),
            "CallDuration": str(duration),
            "Duration": str((duration + 59) // 60),
            "CallbackSource": "call-progress-events",
        }
        self._deliver("call-status", sid, call.status_callback, params)

    def _update_call(
        self,
        sid: str,
        *,
        status: str | None = None,
        digits: str | None = None,
        duration: int | None = None,
        ended: bool = False,
    ) -> LocalCall:
        with self._changed:
            call = self._calls[sid]
            call.status = status or call.status
            call.digits = call.digits if digits is None else digits
            call.duration = call.duration if duration is None else duration
            call.date_updated = self._clock()
            call.end_time = call.date_updated if ended else call.end_time
            self._changed.notify_all()
            return _copy_call(call)

    def _call_params(self, call: LocalCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    def _call_json(self, call: LocalCall) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": _rfc2822(call.date_created),
            "date_updated": _rfc2822(call.date_updated),
            "direction": "outbound-api",
            "duration": None if call.duration is None else str(call.duration),
            "end_time": _rfc2822(call.end_time),
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
            "start_time": _rfc2822(call.start_time),
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

    # -- reading ----------------------------------------------------------------------------

    def _fetch(self, kind: str, sid: str, path: str) -> _Reply:
        with self._changed:
            if kind == "Messages" and sid in self._messages:
                return _json(200, self._message_json(self._messages[sid]))
            if kind == "Calls" and sid in self._calls:
                return _json(200, self._call_json(self._calls[sid]))
        return _not_found(path)

    def _list(self, kind: str, path: str, query: dict[str, list[str]]) -> _Reply:
        try:
            size = min(1000, max(1, int(_field(query, "PageSize") or 50)))
            page = max(0, int(_field(query, "Page") or 0))
            wanted = _filters(query, "DateSent" if kind == "Messages" else "StartTime")
        except ValueError:
            return _error(400, 20001, "Invalid paging or date parameter")
        rows = self._listed(kind, query, wanted)
        start = _page_start(rows, page, size, _field(query, "PageToken"))
        chunk = rows[start : start + size]
        kept = {k: _field(query, k) for k in query if k not in ("Page", "PageSize", "PageToken")}
        key = "messages" if kind == "Messages" else "calls"
        return _json(
            200,
            _page(
                key,
                path=path,
                kept=kept,
                chunk=chunk,
                page=page,
                size=size,
                start=start,
                total=len(rows),
            ),
        )

    def _listed(
        self, kind: str, query: dict[str, list[str]], wanted: list[tuple[str, date]]
    ) -> list[dict[str, Any]]:
        """The resources matching the filters, newest first, as JSON."""
        to, from_, status = _field(query, "To"), _field(query, "From"), _field(query, "Status")
        with self._changed:
            if kind == "Messages":
                return [
                    self._message_json(m)
                    for m in reversed(self._messages.values())
                    if (not to or m.to == to)
                    and (not from_ or m.from_ == from_)
                    and _dates_match(m.date_sent, wanted)
                ]
            return [
                self._call_json(c)
                for c in reversed(self._calls.values())
                if (not to or c.to == to)
                and (not from_ or c.from_ == from_)
                and (not status or c.status == status)
                and _dates_match(c.start_time, wanted)
            ]

    # -- webhooks ---------------------------------------------------------------------------

    def _submit(self, task: Callable[[str], None], sid: str) -> None:
        pool = self._pool
        if pool is None or self._stopping.is_set():
            return
        with self._changed:
            self._running += 1
        try:
            future = pool.submit(task, sid)
        except RuntimeError:  # the pool shut down between the check and the submit
            self._task_done(None)
            return
        future.add_done_callback(self._task_done)

    def _task_done(self, future: Future[None] | None) -> None:
        if future is not None and not future.cancelled() and future.exception() is not None:
            # The type only: the message of an error deep in a webhook may quote what was sent.
            error = type(future.exception()).__name__
            logger.error("local Twilio: a background task failed with %s", error)
        with self._changed:
            self._running -= 1
            self._changed.notify_all()

    def _deliver(
        self, kind: str, sid: str, target: str, params: dict[str, str], method: str = "POST"
    ) -> WebhookAttempt:
        """Make a webhook request as Twilio does: signed, with the fragment's overrides."""
        url, fragment = urldefrag(target)
        rules = _overrides(fragment)
        if method == "GET":
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            signed: dict[str, str] = {}
        else:
            signed = params
        signature = self._validator.compute_signature(url, signed)
        headers = {
            **_WEBHOOK_HEADERS,
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
        }
        body = urlencode(signed).encode() if method != "GET" else None
        deadline = time.monotonic() + rules.total_time
        number = 0
        while True:
            number += 1
            status, failure, answer = _request(method, url, body, headers, rules)
            attempt = WebhookAttempt(
                kind, sid, url, method, dict(params), signature, number, status, failure, answer
            )
            self._record(attempt)
            if not _should_retry(failure, rules, number, deadline):
                return attempt
            if self._stopping.wait(self._backoff * 2 ** (number - 1)):
                return attempt

    def _record(self, attempt: WebhookAttempt) -> None:
        with self._changed:
            self._attempts.append(attempt)
            self._changed.notify_all()

    # -- admin API --------------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _json(400, {"error": "bad admin request: the body is not JSON"})
        if not isinstance(data, dict):
            return _json(400, {"error": "bad admin request: the body is not a JSON object"})
        try:
            return self._admin_action(method, path, data)
        except (ValueError, TypeError, KeyError) as exc:
            return _json(400, {"error": f"bad admin request: {type(exc).__name__}"})
        except RuntimeError as exc:  # e.g. an inbound SMS without an sms_url
            return _json(409, {"error": str(exc)})

    def _admin_action(self, method: str, path: str, data: dict[str, Any]) -> _Reply:
        reads: dict[str, Callable[[], list[Any]]] = {
            "/_local/messages": self.messages,
            "/_local/calls": self.calls,
            "/_local/callbacks": self.callbacks,
        }
        if method == "GET" and path in reads:
            return _json(200, [_public(record) for record in reads[path]()])
        if method != "POST":
            return _json(404, {"error": "no such admin endpoint"})
        if path == "/_local/inbound":
            sent = self.inbound_sms(str(data["from"]), str(data["body"]), data.get("to"))
            return _json(200, {"status": sent.status, "body": sent.answer})
        action = self._admin_actions().get(path)
        if action is None:
            return _json(404, {"error": "no such admin endpoint"})
        action(data)
        return _json(200, {"ok": True})

    def _admin_actions(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "/_local/fail-next": lambda d: self.fail_next(
                int(d["status"]),
                int(d.get("count", 1)),
                code=d.get("code"),
                retry_after=d.get("retry_after"),
            ),
            "/_local/opt-out": lambda d: self.opt_out(str(d["phone"])),
            "/_local/opt-in": lambda d: self.opt_in(str(d["phone"])),
            "/_local/fail-delivery": lambda d: self.fail_delivery(
                str(d["phone"]), int(d["code"]), status=d.get("status", "undelivered")
            ),
            "/_local/voice-answer": lambda d: self.set_voice_answer(
                str(d["phone"]), str(d["digits"])
            ),
            "/_local/hold": lambda _: self.hold_creates(),
            "/_local/release": lambda _: self.release_creates(),
        }


# -- the HTTP server --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """A threading server that joins its handler threads on close and can cut idle
    keep-alive connections, so that ``stop()`` returns promptly and leaves nothing behind."""

    daemon_threads = False
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], answer: Callable[[str, str, str | None, bytes], _Reply]
    ) -> None:
        self.answer = answer
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up waiting (a held create) leaves a broken pipe: not our failure.
        logger.debug("local Twilio: a connection ended abruptly")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive with the headers and the body in separate segments meets the client's
    # delayed ACK: 40 ms a request. Buffer the answer (flushed whole after each request) and
    # send without Nagle's delay.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def _respond(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.answer(method, self.path, self.headers.get("Authorization"), body)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Request lines carry phone numbers in their query strings (?To=...): log none.
        return


# -- webhook requests -------------------------------------------------------------------------


def _overrides(fragment: str) -> _Overrides:
    """Twilio's connection overrides from a URL fragment; values out of range are clamped."""
    given = dict(parse_qsl(fragment))
    defaults = _Overrides()

    def millis(key: str, default: float, top: int) -> float:
        value = given.get(key, "")
        return min(top, max(100, int(value))) / 1000 if value.isdigit() else default

    retries = given.get("rc", "")
    policy = frozenset(p.strip() for p in given.get("rp", "").split(",") if p.strip())
    return _Overrides(
        retries=min(5, int(retries)) if retries.isdigit() else defaults.retries,
        policy=policy or defaults.policy,
        connect_timeout=millis("ct", defaults.connect_timeout, 10_000),
        read_timeout=millis("rt", defaults.read_timeout, 15_000),
        total_time=millis("tt", defaults.total_time, 15_000),
    )


def _should_retry(failure: str | None, rules: _Overrides, number: int, deadline: float) -> bool:
    if failure is None or number > rules.retries or time.monotonic() >= deadline:
        return False
    return "all" in rules.policy or failure in rules.policy


def _request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], rules: _Overrides
) -> tuple[int | None, str | None, str]:
    """One webhook request: (status, failure kind or None, body answered)."""
    parts = urlsplit(url)
    kind = HTTPSConnection if parts.scheme == "https" else HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=rules.connect_timeout)
    try:
        try:
            connection.connect()
        except OSError:
            return None, "ct", ""
        connection.sock.settimeout(rules.read_timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read().decode("utf-8", "replace")
        except (OSError, HTTPException):
            return None, "rt", ""
        failure = "4xx" if 400 <= response.status < 500 else None
        return response.status, "5xx" if response.status >= 500 else failure, answer
    finally:
        connection.close()


# -- TwiML ------------------------------------------------------------------------------------


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


def _copy_call(call: LocalCall) -> LocalCall:
    return replace(
        call, said=list(call.said), played=list(call.played), documents=list(call.documents)
    )


# -- REST shapes ------------------------------------------------------------------------------


def _call_refusal(
    to: str, from_: str, twiml: str | None, url: str | None, callback: str | None
) -> _Reply | None:
    if not to:
        return _error(400, 21201, "No 'To' number is specified")
    if not _E164.fullmatch(to):
        return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not from_:
        return _error(400, 21213, "No 'From' number is specified")
    if twiml is None and url is None:
        return _error(400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' must be specified")
    if url is not None and not _is_web_url(url):
        return _error(400, 21205, "Url is not a valid URL")
    if callback is not None and not _is_web_url(callback):
        return _error(400, 21609, "Invalid StatusCallback url")
    if twiml is not None:
        try:
            ET.fromstring(twiml)  # noqa: S314 - our own TwiML, checked for form only
        except ET.ParseError:
            return _error(400, 12100, "Document parse failure")
    return None


def _page(
    key: str,
    *,
    path: str,
    kept: dict[str, str],
    chunk: list[dict[str, Any]],
    page: int,
    size: int,
    start: int,
    total: int,
) -> dict[str, Any]:
    """Twilio's v2010 list page around ``chunk``."""

    def uri(number: int, token: str | None = None) -> str:
        params = {**kept, "PageSize": str(size), "Page": str(number)}
        if token is not None:
            params["PageToken"] = token
        return f"{path}?{urlencode(params)}"

    more = start + len(chunk) < total
    return {
        key: chunk,
        "end": start + len(chunk) - 1 if chunk else start,
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, f"PA{chunk[-1]['sid']}") if more and chunk else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": f"{path}?{urlencode({**kept, 'PageSize': str(size), 'Page': str(page)})}",
    }


def _page_start(rows: list[dict[str, Any]], page: int, size: int, token: str) -> int:
    """Where a page starts: after the token's resource, so that new resources arriving at the
    front of the list do not shift the pages a client is walking."""
    if token.startswith("PA"):
        for index, row in enumerate(rows):
            if row["sid"] == token[2:]:
                return index + 1
    return page * size


def _filters(query: dict[str, list[str]], name: str) -> list[tuple[str, date]]:
    """Date filters as (operator, value): ``DateSent>`` is on or after, ``DateSent<`` on or
    before (the client sends these keys; ``>=`` and ``<=`` are accepted as well)."""
    operators = {name: "=", f"{name}>": ">", f"{name}>=": ">", f"{name}<": "<", f"{name}<=": "<"}
    return [
        (operators[key], _parse_moment(_field(query, key)))
        for key in query
        if key in operators and _field(query, key)
    ]


def _parse_moment(text: str) -> date:
    if "T" in text:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return date.fromisoformat(text)


def _dates_match(moment: datetime | None, wanted: list[tuple[str, date]]) -> bool:
    for operator, value in wanted:
        if moment is None:
            return False
        # A date compares by day; a date and time to the second, as Twilio stores them.
        subject = moment.replace(microsecond=0) if isinstance(value, datetime) else moment.date()
        if not _compare(subject, operator, value):
            return False
    return True


def _compare(subject: date, operator: str, value: date) -> bool:
    if operator == ">":
        return subject >= value
    if operator == "<":
        return subject <= value
    return subject == value


def _field(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment.astimezone(UTC))


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    body = json.dumps(payload).encode()
    return _Reply(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


def _error(status: int, code: int, message: str) -> _Reply:
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = (("WWW-Authenticate", 'Basic realm="Twilio API"'),) if status == 401 else ()
    return _json(status, payload, headers)


def _not_found(path: str) -> _Reply:
    return _error(404, 20404, f"The requested resource {path} was not found")


def _fault_reply(fault: _Fault) -> _Reply:
    phrase = http.HTTPStatus(fault.status).phrase
    reply = _error(fault.status, fault.code, phrase)
    if fault.retry_after is None:
        return reply
    retry_after = ("Retry-After", f"{fault.retry_after:g}")
    return replace(reply, headers=(*reply.headers, retry_after))


def _public(record: LocalMessage | LocalCall | WebhookAttempt) -> dict[str, Any]:
    """A record as the admin API shows it: Twilio's ``from`` for ``from_``, ISO dates."""
    shown: dict[str, Any] = {}
    for name, value in vars(record).items():
        key = "from" if name == "from_" else name
        shown[key] = value.isoformat() if isinstance(value, datetime) else value
    return shown


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a local Twilio until SIGTERM or SIGINT; print its URL first."""
    parser = argparse.ArgumentParser(prog="python -m sms.local_twilio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--sms-url", default=None, help="our inbound-SMS webhook")
    parser.add_argument("--callback-backoff", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with LocalTwilio(
        args.account_sid,
        args.auth_token,
        host=args.host,
        port=args.port,
        sms_url=args.sms_url,
        callback_backoff=args.callback_backoff,
    ) as twilio:
        print(twilio.url, flush=True)
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
