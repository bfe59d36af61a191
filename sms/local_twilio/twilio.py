"""``LocalTwilio``: the local Twilio as tests, the demo and the benchmark hold it.

It owns the server's lifecycle, shows what happened (messages, calls, webhook requests), lets
a test script the world around the API and posts a patient's SMS to our webhook. Each request
goes to the admin API (``admin``) or the REST API (``rest``), whose resources (``messages``,
``calls``) play out in the background through ``webhooks``; all of them share one ``Ledger``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from sms.local_twilio import admin
from sms.local_twilio.calls import Calls
from sms.local_twilio.messages import Messages
from sms.local_twilio.records import (
    Fault,
    Ledger,
    LocalCall,
    LocalMessage,
    WebhookAttempt,
    copy_call,
)
from sms.local_twilio.rest import RestApi
from sms.local_twilio.server import Reply, Server
from sms.local_twilio.webhooks import Webhooks

DEFAULT_NUMBER = "+15005550006"  # the account's own number: the default To of an inbound SMS
# Twilio's own keywords for its default opt-out handling; the webhook still receives them.
_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
_START_WORDS = frozenset({"START", "YES", "UNSTOP"})
_FAULT_CODES = {429: 20429, 500: 20500, 503: 20503}


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
        self._address = (host, port)
        now = clock or (lambda: datetime.now(UTC))
        self._ledger = Ledger(dict(voice_answers or {}))
        self._gate = threading.Event()
        self._gate.set()
        self._stopping = threading.Event()
        self.created_event = threading.Event()  # set on every accepted create; clear it to wait
        self._webhooks = Webhooks(
            self._ledger,
            auth_token,
            backoff=callback_backoff,
            workers=workers,
            stopping=self._stopping,
        )
        self._messages = Messages(
            account_sid, self._ledger, self._webhooks, clock=now, stopping=self._stopping
        )
        calls = Calls(account_sid, self._ledger, self._webhooks, clock=now)
        self._rest = RestApi(
            account_sid,
            auth_token,
            self._ledger,
            {"Messages": self._messages, "Calls": calls},
            created=self.created_event,
            gate=self._gate,
        )
        self._server: Server | None = None
        self._serving: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalTwilio:
        """Listen and serve in background threads; returns self."""
        if self._server is not None:
            raise RuntimeError("the local Twilio is already running")
        self._stopping.clear()
        self._webhooks.open()
        self._server = Server(self._address, self._answer)
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
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        self._stopping.set()
        self._gate.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        self._webhooks.close()
        serving.join()
        self._server = self._serving = None

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
        with self._ledger.changed:
            return [replace(m) for m in self._ledger.messages.values()]

    def calls(self) -> list[LocalCall]:
        """Every call, oldest first (copies)."""
        with self._ledger.changed:
            return [copy_call(c) for c in self._ledger.calls.values()]

    def callbacks(self) -> list[WebhookAttempt]:
        """Every webhook request made, in the order they finished."""
        with self._ledger.changed:
            return list(self._ledger.attempts)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every accepted message and call has played out: its webhooks made and
        their retries done. False if that took longer than ``timeout`` seconds."""
        return self.wait_until(lambda: self._ledger.running == 0, timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``condition()`` holds, re-checking whenever anything changes here."""
        with self._ledger.changed:
            return self._ledger.changed.wait_for(condition, timeout)

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
        fault = Fault(status, code or _FAULT_CODES.get(status, status), retry_after)
        with self._ledger.changed:
            self._ledger.faults.extend([fault] * count)

    def opt_out(self, phone: str) -> None:
        """The phone texted STOP: sending to it answers 21610 from now on."""
        with self._ledger.changed:
            self._ledger.opted_out.add(phone)

    def opt_in(self, phone: str) -> None:
        with self._ledger.changed:
            self._ledger.opted_out.discard(phone)

    def fail_delivery(self, phone: str, code: int, *, status: str = "undelivered") -> None:
        """Messages to ``phone`` end ``undelivered`` (or ``failed``) with ErrorCode ``code``."""
        if status not in ("undelivered", "failed"):
            raise ValueError("a failed delivery ends undelivered or failed")
        with self._ledger.changed:
            self._ledger.failing[phone] = (code, status)

    def set_voice_answer(self, phone: str, answer: str) -> None:
        """Script a phone: the digits it presses, or no-answer, busy or failed."""
        with self._ledger.changed:
            self._ledger.answers[phone] = answer

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
        message = self._messages.receive(from_, body, to or self.number)
        params = self._messages.inbound_params(message)
        return self._webhooks.deliver("inbound", message.sid, self.sms_url, params)

    def _opt_by_keyword(self, phone: str, body: str) -> None:
        keyword = body.strip().upper()
        if keyword in _STOP_WORDS:
            self.opt_out(phone)
        elif keyword in _START_WORDS:
            self.opt_in(phone)

    # -- HTTP -------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, authorization: str | None, body: bytes) -> Reply:
        path, _, query = target.partition("?")
        if path.startswith("/_local/"):
            return admin.answer(self, method, path, body)
        return self._rest.answer(method, path, query, authorization, body)
