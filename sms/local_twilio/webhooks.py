"""Webhooks as Twilio makes them: signed, with the URL's connection overrides and retries.

Every request is signed with ``X-Twilio-Signature`` exactly as Twilio signs it and honours
Twilio's connection overrides in the URL fragment (``#rc=3&rp=5xx&ct=500&rt=2000``), with
Twilio's documented defaults: ``rc`` (retries) 1 and ``rp`` (retry policy: ``ct``, ``rt``,
``4xx``, ``5xx``, ``all``, comma-separated) ``ct``. The fragment is neither sent nor signed.

``Webhooks`` also runs the background tasks that play a message or a call out, and counts them
so that ``LocalTwilio.drain`` can wait until every one is done.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import parse_qsl, urldefrag, urlencode, urlsplit

from twilio.request_validator import RequestValidator

from sms.local_twilio.records import Ledger, WebhookAttempt

logger = logging.getLogger(__name__)

_WEBHOOK_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "TwilioProxy/1.1",
}


@dataclass(frozen=True)
class _Overrides:
    """Twilio's webhook connection overrides (the URL fragment), with Twilio's defaults."""

    retries: int = 1
    policy: frozenset[str] = frozenset({"ct"})
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_time: float = 15.0


class Webhooks:
    """Makes webhook requests, recorded in the ledger, and runs the tasks that make them.

    ``backoff`` is the wait before a retry (doubling each time); ``workers`` the threads of the
    task pool, which exists between ``open()`` and ``close()``. Once ``stopping`` is set no task
    is started and no retry waited for.
    """

    def __init__(
        self,
        ledger: Ledger,
        auth_token: str,
        *,
        backoff: float,
        workers: int,
        stopping: threading.Event,
    ) -> None:
        self._ledger = ledger
        self._validator = RequestValidator(auth_token)
        self._backoff = backoff
        self._workers = workers
        self._stopping = stopping
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        """Start a fresh task pool."""
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="local-twilio")

    def close(self) -> None:
        """Drop the tasks not yet started and join every pool thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def submit(self, task: Callable[[str], None], sid: str) -> None:
        """Run ``task(sid)`` in the background, unless the pool is closed or closing."""
        pool = self._pool
        if pool is None or self._stopping.is_set():
            return
        with self._ledger.changed:
            self._ledger.running += 1
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
        with self._ledger.changed:
            self._ledger.running -= 1
            self._ledger.changed.notify_all()

    def deliver(
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
        with self._ledger.changed:
            self._ledger.attempts.append(attempt)
            self._ledger.changed.notify_all()


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
