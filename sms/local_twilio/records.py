"""What the local Twilio keeps: its records, and the ledger that holds them under one lock.

``LocalMessage``, ``LocalCall`` and ``WebhookAttempt`` are what tests read back. The ``Ledger``
holds them with the scripted world (faults, opt-outs, failing phones, voice answers); one
condition guards it all and is notified on every change, so ``LocalTwilio.wait_until`` wakes
whenever anything happens.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime


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
class Fault:
    """An error the next create is scripted to answer (``LocalTwilio.fail_next``)."""

    status: int
    code: int
    retry_after: float | None


def copy_call(call: LocalCall) -> LocalCall:
    return replace(
        call, said=list(call.said), played=list(call.played), documents=list(call.documents)
    )


class Ledger:
    """Everything the local Twilio holds between requests, guarded by ``changed``.

    What happened (messages and calls by SID, oldest first; webhook attempts in the order they
    finished; background tasks still running) and what the world is scripted to do (faults
    for the next creates, opted-out phones, phones whose messages fail, voice answers). Hold
    ``changed`` to read or write any of it, and notify it after a change that someone may be
    waiting for.
    """

    def __init__(self, answers: dict[str, str]) -> None:
        self.changed = threading.Condition()
        self.messages: dict[str, LocalMessage] = {}
        self.calls: dict[str, LocalCall] = {}
        self.attempts: list[WebhookAttempt] = []
        self.running = 0  # background tasks submitted and not yet done
        self.faults: deque[Fault] = deque()
        self.opted_out: set[str] = set()
        self.failing: dict[str, tuple[int, str]] = {}  # phone -> (ErrorCode, final status)
        self.answers = answers  # phone -> digits, or no-answer, busy, failed
