"""What sends SMS and places calls: the ``Sender`` protocol and its Twilio implementation.

``TwilioSender`` is a thin layer over the official ``twilio`` client: one request per call, no
retry loop (the outbox dispatcher decides when to try again), and Twilio's failures turned into
the two errors the dispatcher acts on:

- ``TwilioBusy``: 429, any 5xx, a connection that failed or timed out. Try again later;
  ``retry_after`` carries Twilio's Retry-After header in seconds when it sent one.
- ``TwilioRefused``: any other 4xx (bad number, opted out, bad credentials). Retrying will not
  help; ``code`` is Twilio's error code.

The client logs whole requests (the patient's number and the message text) at INFO through
``twilio.http_client``, and urllib3 logs request URLs (with ``?To=...``) at DEBUG, so building
a sender raises both loggers to WARNING. Error messages name Twilio's code, never the number
or the text.

``api_url`` points the client at another API host (the local Twilio of the tests and the demo):
the client builds every Messages and Calls URL from its ``api`` domain's ``base_url``.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from sms.errors import TwilioBusy, TwilioError, TwilioRefused, TwilioUnknown

# Loggers that would write patient data: the client's request log and urllib3's request lines.
_CHATTY_LOGGERS = ("twilio.http_client", "urllib3.connectionpool")
_POOL_SIZE = 32  # connections kept to the API, enough for a dispatcher's threads

# Twilio's codes a refusal is most likely to carry, in words an operator understands.
_REASONS = {
    20003: "authentication failed: check the account SID and auth token",
    20404: "no such resource",
    21211: "invalid 'To' number",
    21212: "invalid 'From' number",
    21408: "sending to this region is not enabled",
    21601: "the 'To' number cannot receive SMS",
    21602: "message body is required",
    21603: "'From' number is required",
    21604: "'To' number is required",
    21606: "the 'From' number cannot send this message",
    21610: "the recipient has opted out (STOP)",
    21612: "the 'To' number cannot be reached from the 'From' number",
    21614: "the 'To' number is not a mobile number",
    21617: "the message body is too long",
    21201: "'To' number is required",
    21205: "invalid TwiML URL or TwiML",
    21213: "'From' number is required",
    21215: "calls to this region are not enabled",
}


class Sender(Protocol):
    """Sends reminders; raises ``TwilioBusy`` (try later) or ``TwilioRefused`` (give up)."""

    def send_sms(self, *, to: str, body: str, status_callback: str) -> str:
        """Send ``body`` to ``to``; returns the Message SID."""
        ...

    def place_call(self, *, to: str, twiml: str, status_callback: str) -> str:
        """Call ``to`` and run ``twiml``; returns the Call SID."""
        ...

    def find_message(self, *, to: str, body: str, since: datetime) -> str | None:
        """The SID of a message to ``to`` with this body sent on or after ``since``, if any."""
        ...

    def find_calls(self, *, to: str, since: datetime) -> list[str]:
        """The SIDs of calls to ``to`` started on or after ``since``."""
        ...


class TwilioSender:
    """``Sender`` over the official ``twilio`` client."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        api_url: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        _quiet_request_logs()
        self._from = from_number
        self._last = threading.local()  # the Retry-After of this thread's last answer
        http_client = TwilioHttpClient(
            timeout=timeout_seconds, request_hooks={"response": [self._remember_retry_after]}
        )
        if http_client.session is not None:
            # The client enlarges only its https pool; a local API is plain http.
            http_client.session.mount("http://", HTTPAdapter(pool_maxsize=_POOL_SIZE))
        self._client = Client(account_sid, auth_token, http_client=http_client)
        if api_url is not None:
            self._client.api.base_url = api_url.rstrip("/")
            # An edge or region (from the environment) would rewrite the API's host name.
            self._client.edge = None
            self._client.region = None

    def send_sms(self, *, to: str, body: str, status_callback: str) -> str:
        self._last.retry_after = None
        try:
            message = self._client.messages.create(
                to=to, from_=self._from, body=body, status_callback=status_callback
            )
        except (TwilioException, requests.RequestException) as exc:
            raise self._translated(exc, "message") from None
        return str(message.sid)

    def place_call(self, *, to: str, twiml: str, status_callback: str) -> str:
        self._last.retry_after = None
        try:
            call = self._client.calls.create(
                to=to,
                from_=self._from,
                twiml=twiml,
                status_callback=status_callback,
                status_callback_event=["completed"],
            )
        except (TwilioException, requests.RequestException) as exc:
            raise self._translated(exc, "call") from None
        return str(call.sid)

    def find_message(self, *, to: str, body: str, since: datetime) -> str | None:
        """The newest message to ``to`` with this body created on or after ``since``."""
        self._last.retry_after = None
        since = _utc(since)
        try:
            # Newest first, by creation: a message still queued at Twilio has no send time
            # yet, so a filter on DateSent would miss exactly the one being looked for.
            for message in self._client.messages.stream(to=to, page_size=100):
                created = message.date_created
                if created is not None and created < since:
                    break
                if message.body == body:
                    return str(message.sid)
        except (TwilioException, requests.RequestException) as exc:
            raise self._translated(exc, "message lookup") from None
        return None

    def find_calls(self, *, to: str, since: datetime) -> list[str]:
        self._last.retry_after = None
        try:
            calls = self._client.calls.stream(to=to, start_time_after=_utc(since), page_size=100)
            return [str(call.sid) for call in calls]
        except (TwilioException, requests.RequestException) as exc:
            raise self._translated(exc, "call lookup") from None

    def _remember_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # The client's exceptions carry no headers; this requests hook runs in the calling
        # thread just before the client raises, so a thread-local keeps answers apart.
        self._last.retry_after = _retry_after(response.headers.get("Retry-After"))

    def _translated(self, exc: Exception, what: str) -> TwilioError:
        """Twilio's failure as ``TwilioBusy`` or ``TwilioRefused``, without patient data
        (Twilio's own messages quote the number)."""
        if isinstance(exc, requests.RequestException):
            if what in _CREATES and _may_have_arrived(exc):
                return TwilioUnknown(
                    f"Twilio's answer to the {what} was lost ({type(exc).__name__})"
                )
            return TwilioBusy(f"Twilio could not be reached ({type(exc).__name__})")
        status, code = _status_and_code(exc)
        if status is None:
            return TwilioBusy(f"Twilio's answer to the {what} could not be read")
        if status == 429 or status >= 500:
            retry_after: float | None = getattr(self._last, "retry_after", None)
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            return TwilioBusy(
                f"Twilio is busy (HTTP {status}, code {code}){wait}",
                status=status,
                code=code,
                retry_after=retry_after,
            )
        reason = _REASONS.get(code or 0, f"see https://www.twilio.com/docs/errors/{code}")
        return TwilioRefused(
            f"Twilio refused the {what} (code {code}: {reason})", status=status, code=code
        )


# What a lost answer leaves unknown: a create may have been accepted; a lookup can be asked again.
_CREATES = ("message", "call")


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """Whether the request may have reached Twilio before it failed: not when the connection
    could not even be opened."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ReadTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause = repr(exc.args)
        return not any(word in cause for word in ("NewConnectionError", "Connection refused"))
    return False


def _status_and_code(exc: Exception) -> tuple[int | None, int | None]:
    """The HTTP status and Twilio code of a client exception, as far as it carries them."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        return int(exc.status), None if exc.code is None else int(exc.code)
    # A list page that is not 200 raises a bare TwilioException("Unable to fetch page", response).
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None, None
    try:
        code = json.loads(getattr(response, "text", "")).get("code")
    except (ValueError, AttributeError):
        code = None
    return status, code if isinstance(code, int) else None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _utc(moment: datetime) -> datetime:
    # The client formats the time as "%Y-%m-%dT%H:%M:%SZ" without converting it to UTC.
    if moment.tzinfo is None:
        raise ValueError("a time zone is required")
    return moment.astimezone(UTC)


def _quiet_request_logs() -> None:
    for name in _CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        if chatty.level < logging.WARNING:  # NOTSET included; a stricter level is kept
            chatty.setLevel(logging.WARNING)
