"""The hub's HTTP client for central: a bearer token, transaction bundles up, searches down.

Central speaks FHIR R4 at ``{SYNC_HUB_CENTRAL_URL}/fhir`` and issues tokens at
``{SYNC_HUB_CENTRAL_URL}/auth/token`` (docs/fhir.md). Every answer is sorted into what the
caller must do about it:

    2xx                               done
    401 from /fhir                    the token expired early: a new one, then once more
    400/401 from /auth/token          CredentialsRefused (the operator must act)
    429, 5xx, network, timeout        CentralUnavailable (try later; ``retry_after``)
    4xx with an OperationOutcome      BundleRejected (403: OutOfRegion); nothing was written
    anything else                     CentralMisbehaved (a wrong URL, a proxy's error page)

URLs carry only times, resource types and our own codes, never patient data; bodies are
never logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from care_record import Clock
from sync_hub import credentials
from sync_hub.errors import (
    BundleRejected,
    CentralMisbehaved,
    CentralNotConfigured,
    CentralUnavailable,
    CredentialsRefused,
    OutOfRegion,
)
from sync_hub.settings import Settings

FHIR_JSON = "application/fhir+json"
SCOPE = "system/*.read system/*.write"
TOKEN_MARGIN = timedelta(seconds=30)  # a token this close to its end is not used again
SEARCH_PAGE_SIZE = 100
DIAGNOSTICS_CHARS = 500
_REJECTIONS = {400, 403, 404, 409, 410, 412, 413, 422}
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: datetime


class CentralClient:
    """Talks to one central server as one hub client.

    ``http`` is an ``httpx.Client`` (tests give it a ``MockTransport``); its timeout bounds
    every request. The client is not shared between threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str,
        key: ec.EllipticCurvePrivateKey,
        http: httpx.Client,
        clock: Clock,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.key = key
        self.http = http
        self.clock = clock
        self._token: Token | None = None

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/auth/token"

    @property
    def fhir_url(self) -> str:
        return f"{self.base_url}/fhir"

    def close(self) -> None:
        self.http.close()

    # -- the token ------------------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token, reused until 30 s before it expires. Raises CredentialsRefused,
        CentralUnavailable or CentralMisbehaved."""
        now = self.clock.now()
        if self._token is None or now >= self._token.expires_at - TOKEN_MARGIN:
            self._token = self._new_token(now)
        return self._token.value

    def _new_token(self, now: datetime) -> Token:
        assertion = credentials.client_assertion(
            self.key, client_id=self.client_id, token_url=self.token_url, now=now
        )
        form = {
            "grant_type": "client_credentials",
            "scope": SCOPE,
            "client_assertion_type": credentials.ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        answer = self._send("POST", self.token_url, data=form)
        if answer.status_code in (400, 401):
            raise CredentialsRefused(f"central refused the hub's credentials: {_oauth(answer)}")
        self._raise_if_unavailable(answer)
        body = _json(answer)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if answer.status_code != 200 or not isinstance(token, str) or not isinstance(lifetime, int):
            raise CentralMisbehaved(
                f"central's token endpoint answered {answer.status_code} without a token"
            )
        return Token(token, now + timedelta(seconds=lifetime))

    # -- FHIR -----------------------------------------------------------------------------------

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction bundle; return central's transaction-response, one entry per
        request, each 2xx. Raises BundleRejected (nothing written), CentralUnavailable,
        CentralMisbehaved or CredentialsRefused."""
        body = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode()
        answer = self._fhir("POST", self.fhir_url, body=body)
        result = _json(answer)
        entries = result.get("entry")
        expected = len(bundle.get("entry", []))
        if result.get("type") != "transaction-response" or not isinstance(entries, list):
            raise CentralMisbehaved("central answered a transaction without a transaction-response")
        if len(entries) != expected or not all(_succeeded(e) for e in entries):
            raise CentralMisbehaved(
                f"central's transaction-response has {len(entries)} entries for {expected} "
                "requests, or an entry that did not succeed"
            )
        return result

    def communications_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        """The searchset pages of Communications updated at or after ``since``."""
        return self.updated_since("Communication", since)

    def updated_since(
        self, resource_type: str, since: datetime, criteria: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The searchset pages of the resources of a type that match ``criteria`` (search
        parameters, such as ``{"code": "system|code"}``) and were updated at or after
        ``since``, oldest first, following each ``next`` link. Raises like ``transaction``."""
        params = {
            **(criteria or {}),
            "_lastUpdated": f"ge{since.astimezone(UTC).isoformat()}",
            "_sort": "_lastUpdated",
            "_count": str(SEARCH_PAGE_SIZE),
        }
        url: str | None = str(httpx.URL(f"{self.fhir_url}/{resource_type}", params=params))
        while url is not None:
            page = _json(self._fhir("GET", url))
            if page.get("resourceType") != "Bundle" or page.get("type") != "searchset":
                raise CentralMisbehaved("central answered a search without a searchset bundle")
            yield page
            url = self._next_link(page)

    def _next_link(self, page: dict[str, Any]) -> str | None:
        links = page.get("link") or []
        found = [
            link.get("url")
            for link in links
            if isinstance(link, dict) and link.get("relation") == "next"
        ]
        if not found or not isinstance(found[0], str):
            return None
        # The bearer token goes with the request: never to a host other than central's.
        if _origin(found[0]) != _origin(self.fhir_url):
            raise CentralMisbehaved("central's next link points to another server")
        return found[0]

    def _fhir(self, method: str, url: str, *, body: bytes | None = None) -> httpx.Response:
        answer = self._authorized(method, url, body)
        if answer.status_code == 401:
            # The token may have been revoked or central restarted with new keys: one new
            # token, one more try; a second 401 is a refusal of the hub itself.
            self._token = None
            answer = self._authorized(method, url, body)
            if answer.status_code == 401:
                raise CredentialsRefused("central refused a fresh token of the hub")
        self._raise_if_unavailable(answer)
        if answer.is_success:
            return answer
        outcome = _outcome(answer)
        if outcome is None:
            raise CentralMisbehaved(
                f"central answered {answer.status_code} to {method} {urlsplit(url).path} "
                "without an OperationOutcome; is SYNC_HUB_CENTRAL_URL right?"
            )
        if answer.status_code not in _REJECTIONS:
            raise CentralMisbehaved(f"central answered {answer.status_code}: {outcome}")
        error = OutOfRegion if answer.status_code == 403 else BundleRejected
        raise error(
            f"central refused the request ({answer.status_code}): {outcome}",
            http_status=answer.status_code,
            diagnostics=outcome,
        )

    def _authorized(self, method: str, url: str, body: bytes | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": FHIR_JSON}
        if body is None:
            return self._send(method, url, headers=headers)
        headers["Content-Type"] = FHIR_JSON
        return self._send(method, url, headers=headers, content=body)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise CentralUnavailable(
                f"central did not answer in time ({method} {urlsplit(url).path})"
            ) from None
        except httpx.TransportError as exc:
            raise CentralUnavailable(
                f"central could not be reached: {type(exc).__name__}"
            ) from None

    def _raise_if_unavailable(self, answer: httpx.Response) -> None:
        if answer.status_code == 429 or answer.status_code >= 500:
            raise CentralUnavailable(
                f"central answered {answer.status_code}; trying again later",
                retry_after=self._retry_after(answer.headers.get("Retry-After")),
            )

    def _retry_after(self, header: str | None) -> float | None:
        """Retry-After as seconds from now: a number, or an HTTP date (RFC 9110)."""
        if not header:
            return None
        header = header.strip()
        if header.isdigit():
            seconds = float(header)
        else:
            try:
                when = parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - self.clock.now()).total_seconds()
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def connect(settings: Settings, *, clock: Clock, http: httpx.Client | None = None) -> CentralClient:
    """A client for the central server the settings name, signing with the hub's key.

    Raises CentralNotConfigured if SYNC_HUB_CENTRAL_URL is empty or the key file is missing.
    """
    if not settings.central_url:
        raise CentralNotConfigured(
            "SYNC_HUB_CENTRAL_URL is not set: the hub does not know where central is"
        )
    key = credentials.load_key(settings.central_key)
    return CentralClient(
        settings.central_url,
        client_id=settings.central_client_id,
        key=key,
        http=http or httpx.Client(timeout=settings.central_timeout_seconds),
        clock=clock,
    )


def _succeeded(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    status = (entry.get("response") or {}).get("status")
    return isinstance(status, str) and status.strip().startswith("2")


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        raise CentralMisbehaved(
            f"central answered {answer.status_code} with a body that is not JSON"
        ) from None
    if not isinstance(body, dict):
        raise CentralMisbehaved(
            f"central answered {answer.status_code} with JSON that is not an object"
        )
    return body


def _outcome(answer: httpx.Response) -> str | None:
    """An OperationOutcome's issues as one short line, or None if the body is not one."""
    try:
        body = answer.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
    said = [_issue(i) for i in issues] or ["no issue given"]
    return "; ".join(said)[:DIAGNOSTICS_CHARS]


def _issue(issue: dict[str, Any]) -> str:
    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
    where = ", ".join(str(e) for e in issue.get("expression") or [])
    head = f"{issue.get('severity', 'error')} {issue.get('code', 'unknown')}"
    return " ".join(part for part in (head, f"at {where}" if where else "", str(text)) if part)


def _oauth(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {answer.status_code}"
    said = " ".join(str(body.get(k, "")) for k in ("error", "error_description")).strip()
    return (said or f"HTTP {answer.status_code}")[:DIAGNOSTICS_CHARS]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
