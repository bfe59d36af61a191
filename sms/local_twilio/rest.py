"""Twilio's REST API (``/2010-04-01``): routing, authentication, errors, list pages and filters.

``RestApi`` answers the same paths, form fields, JSON shapes and error codes as
``api.twilio.com/2010-04-01`` and routes each request to its ``Resource`` (``Messages`` or
``Calls``). The conventions the resources share live here too: form fields, E.164 numbers,
SIDs, RFC 2822 dates and Twilio's error body.
"""

from __future__ import annotations

import base64
import hmac
import http
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from sms.local_twilio.records import Fault, Ledger
from sms.local_twilio.server import Reply, json_reply

API_VERSION = "2010-04-01"
E164 = re.compile(r"\+[0-9]{8,15}")
_RESOURCE = re.compile(
    r"/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<kind>Messages|Calls)(?:/(?P<sid>[^/]+))?\.json"
)


class Resource(Protocol):
    """A resource of the API (Messages or Calls): what ``RestApi`` routes to."""

    list_key: str  # the key of a list page's rows: messages or calls
    date_parameter: str  # the date a list filters on: DateSent or StartTime

    def create(self, form: dict[str, list[str]]) -> Reply: ...

    def find(self, sid: str) -> dict[str, Any] | None:
        """The resource's JSON, or None when there is no such SID."""
        ...

    def listed(
        self, query: dict[str, list[str]], wanted: list[tuple[str, date]]
    ) -> list[dict[str, Any]]:
        """The resources matching the filters, newest first, as JSON."""
        ...


class RestApi:
    """The REST endpoints of one account: create, fetch and list, behind Basic auth.

    A create first answers the next scripted fault, if any; an accepted one sets ``created``
    and waits for ``gate`` (cleared while creates are held) before its answer goes out.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        ledger: Ledger,
        resources: Mapping[str, Resource],
        *,
        created: threading.Event,
        gate: threading.Event,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._ledger = ledger
        self._resources = resources
        self._created = created
        self._gate = gate

    def answer(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes
    ) -> Reply:
        match = _RESOURCE.fullmatch(path)
        if not self._authorised(authorization):
            return error_reply(401, 20003, "Authenticate")
        if match is None or match["account"] != self._account_sid:
            return not_found(path)
        resource, sid = self._resources[match["kind"]], match["sid"]
        if method == "POST" and sid is None:
            return self._create(resource, parse_qs(body.decode(), keep_blank_values=True))
        if method == "GET" and sid is None:
            return self._list(resource, path, parse_qs(query, keep_blank_values=True))
        if method == "GET":
            return self._fetch(resource, sid, path)
        return error_reply(405, 20004, "Method not allowed")

    def _authorised(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return False
        expected = f"{self._account_sid}:{self._auth_token}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _create(self, resource: Resource, form: dict[str, list[str]]) -> Reply:
        fault = self._next_fault()
        if fault is not None:
            return _fault_reply(fault)
        reply = resource.create(form)
        if reply.status == 201:
            self._created.set()
            self._gate.wait()
        return reply

    def _next_fault(self) -> Fault | None:
        with self._ledger.changed:
            return self._ledger.faults.popleft() if self._ledger.faults else None

    def _fetch(self, resource: Resource, sid: str, path: str) -> Reply:
        found = resource.find(sid)
        return not_found(path) if found is None else json_reply(200, found)

    def _list(self, resource: Resource, path: str, query: dict[str, list[str]]) -> Reply:
        try:
            size = min(1000, max(1, int(form_value(query, "PageSize") or 50)))
            page = max(0, int(form_value(query, "Page") or 0))
            wanted = _filters(query, resource.date_parameter)
        except ValueError:
            return error_reply(400, 20001, "Invalid paging or date parameter")
        rows = resource.listed(query, wanted)
        start = _page_start(rows, page, size, form_value(query, "PageToken"))
        chunk = rows[start : start + size]
        kept = {
            k: form_value(query, k) for k in query if k not in ("Page", "PageSize", "PageToken")
        }
        return json_reply(
            200,
            _page(
                resource.list_key,
                path=path,
                kept=kept,
                chunk=chunk,
                page=page,
                size=size,
                start=start,
                total=len(rows),
            ),
        )


# -- list pages and filters -------------------------------------------------------------------


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
        (operators[key], _parse_moment(form_value(query, key)))
        for key in query
        if key in operators and form_value(query, key)
    ]


def _parse_moment(text: str) -> date:
    if "T" in text:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return date.fromisoformat(text)


def dates_match(moment: datetime | None, wanted: list[tuple[str, date]]) -> bool:
    """Whether ``moment`` passes every date filter; no moment passes none."""
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


# -- Twilio's conventions ---------------------------------------------------------------------


def form_value(form: Mapping[str, list[str]], name: str) -> str:
    """The first value of a form or query field; empty when it is missing."""
    values = form.get(name)
    return values[0] if values else ""


def is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment.astimezone(UTC))


def error_reply(status: int, code: int, message: str) -> Reply:
    """Twilio's error body, with its error code and the page that explains it."""
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = (("WWW-Authenticate", 'Basic realm="Twilio API"'),) if status == 401 else ()
    return json_reply(status, payload, headers)


def not_found(path: str) -> Reply:
    return error_reply(404, 20404, f"The requested resource {path} was not found")


def _fault_reply(fault: Fault) -> Reply:
    phrase = http.HTTPStatus(fault.status).phrase
    reply = error_reply(fault.status, fault.code, phrase)
    if fault.retry_after is None:
        return reply
    retry_after = ("Retry-After", f"{fault.retry_after:g}")
    return replace(reply, headers=(*reply.headers, retry_after))
