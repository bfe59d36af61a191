"""The webhooks Twilio calls, as a Litestar router that central mounts.

    POST /sms/inbound                    an SMS from a patient          -> TwiML reply
    POST /sms/voice/gather?reminder=ID   the key pressed in a call      -> TwiML reply
    POST /sms/status?reminder=ID         a message's or call's status   -> 204

Each handler checks Twilio's signature over central's public URL of the request before it
acts on anything (``BadWebhook``, which central's one error handler answers with 403), then
does its work in one write transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, Router, post
from litestar.params import RawBody

from sms.config import GATHER_PATH, INBOUND_PATH, STATUS_PATH
from sms.errors import BadWebhook
from sms.service import ReminderService
from sms.webhooks import check_signature

XML = "application/xml"


def sms_router(service: ReminderService) -> Router:
    def signed(request: Request[Any, Any, Any], body: bytes) -> dict[str, str]:
        query = request.url.query
        url = service.config.webhook(request.url.path + (f"?{query}" if query else ""))
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        check_signature(service.config, url, params, request.headers.get("x-twilio-signature"))
        return params

    def reminder_of(request: Request[Any, Any, Any]) -> str:
        reminder = request.query_params.get("reminder")
        if not reminder:
            raise BadWebhook("the webhook URL names no reminder")
        return str(reminder)

    def in_transaction(work: Callable[[Any], str | None]) -> str | None:
        with service.database.write() as session:
            return work(session)

    @post(INBOUND_PATH, sync_to_thread=True, status_code=200)
    def inbound(request: Request[Any, Any, Any], body: RawBody) -> Response[str]:
        params = signed(request, body)
        answer = in_transaction(
            lambda session: service.webhooks.inbound_sms(session, params, service.now())
        )
        return Response(answer or "", media_type=XML)

    @post(GATHER_PATH, sync_to_thread=True, status_code=200)
    def gather(request: Request[Any, Any, Any], body: RawBody) -> Response[str]:
        params = signed(request, body)
        reminder = reminder_of(request)
        answer = in_transaction(
            lambda session: service.webhooks.gather(session, reminder, params, service.now())
        )
        return Response(answer or "", media_type=XML)

    @post(STATUS_PATH, sync_to_thread=True, status_code=204)
    def status(request: Request[Any, Any, Any], body: RawBody) -> None:
        params = signed(request, body)
        reminder = reminder_of(request)
        in_transaction(
            lambda session: service.webhooks.status(session, reminder, params, service.now())
        )

    return Router(path="/", route_handlers=[inbound, gather, status])
