"""The admin API under ``/_local/``: the ``LocalTwilio`` methods as JSON, for other processes.

The demo and the benchmark run the local Twilio as a command and drive it from another process
through these endpoints. There is no authentication: the server binds 127.0.0.1 only.

- ``GET /_local/messages``, ``/_local/calls``, ``/_local/callbacks``: the records, with
  Twilio's ``from`` for ``from_`` and ISO dates;
- ``POST /_local/inbound`` ``{"from", "body", "to"?}``: a patient texts us;
- ``POST /_local/fail-next``, ``opt-out``, ``opt-in``, ``fail-delivery``, ``voice-answer``,
  ``hold``, ``release``: script the world.

A body that is not a JSON object, or lacks a field, answers 400; an inbound SMS without an
``sms_url`` answers 409.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sms.local_twilio.records import LocalCall, LocalMessage, WebhookAttempt
from sms.local_twilio.server import Reply, json_reply

if TYPE_CHECKING:
    from sms.local_twilio.twilio import LocalTwilio


def answer(twilio: LocalTwilio, method: str, path: str, body: bytes) -> Reply:
    """Answer one admin request by calling the matching method of ``twilio``."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return json_reply(400, {"error": "bad admin request: the body is not JSON"})
    if not isinstance(data, dict):
        return json_reply(400, {"error": "bad admin request: the body is not a JSON object"})
    try:
        return _action(twilio, method, path, data)
    except (ValueError, TypeError, KeyError) as exc:
        return json_reply(400, {"error": f"bad admin request: {type(exc).__name__}"})
    except RuntimeError as exc:  # e.g. an inbound SMS without an sms_url
        return json_reply(409, {"error": str(exc)})


def _action(twilio: LocalTwilio, method: str, path: str, data: dict[str, Any]) -> Reply:
    reads: dict[str, Callable[[], list[Any]]] = {
        "/_local/messages": twilio.messages,
        "/_local/calls": twilio.calls,
        "/_local/callbacks": twilio.callbacks,
    }
    if method == "GET" and path in reads:
        return json_reply(200, [_public(record) for record in reads[path]()])
    if method != "POST":
        return json_reply(404, {"error": "no such admin endpoint"})
    if path == "/_local/inbound":
        sent = twilio.inbound_sms(str(data["from"]), str(data["body"]), data.get("to"))
        return json_reply(200, {"status": sent.status, "body": sent.answer})
    action = _actions(twilio).get(path)
    if action is None:
        return json_reply(404, {"error": "no such admin endpoint"})
    action(data)
    return json_reply(200, {"ok": True})


def _actions(twilio: LocalTwilio) -> dict[str, Callable[[dict[str, Any]], None]]:
    return {
        "/_local/fail-next": lambda d: twilio.fail_next(
            int(d["status"]),
            int(d.get("count", 1)),
            code=d.get("code"),
            retry_after=d.get("retry_after"),
        ),
        "/_local/opt-out": lambda d: twilio.opt_out(str(d["phone"])),
        "/_local/opt-in": lambda d: twilio.opt_in(str(d["phone"])),
        "/_local/fail-delivery": lambda d: twilio.fail_delivery(
            str(d["phone"]), int(d["code"]), status=d.get("status", "undelivered")
        ),
        "/_local/voice-answer": lambda d: twilio.set_voice_answer(
            str(d["phone"]), str(d["digits"])
        ),
        "/_local/hold": lambda _: twilio.hold_creates(),
        "/_local/release": lambda _: twilio.release_creates(),
    }


def _public(record: LocalMessage | LocalCall | WebhookAttempt) -> dict[str, Any]:
    """A record as the admin API shows it: Twilio's ``from`` for ``from_``, ISO dates."""
    shown: dict[str, Any] = {}
    for name, value in vars(record).items():
        key = "from" if name == "from_" else name
        shown[key] = value.isoformat() if isinstance(value, datetime) else value
    return shown
