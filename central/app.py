"""Central's HTTP face: ``create_app(settings) -> Litestar``.

    GET  /fhir/metadata                    CapabilityStatement (no token needed)
    GET  /fhir/.well-known/smart-configuration
    POST /auth/token                       SMART Backend Services: JWT assertion -> bearer token
    POST /fhir                             transaction or batch Bundle
    GET  /fhir/_history                    history of everything the caller may see
    GET  /fhir/{type}?...                  search (also POST /fhir/{type}/_search, form body)
    POST /fhir/{type}                      create (If-None-Exist: conditional create)
    PUT  /fhir/{type}?...                  conditional update
    GET  /fhir/{type}/_history             history of a type
    GET  /fhir/{type}/{id}                 read;  PUT update (If-Match);  DELETE delete
    GET  /fhir/{type}/{id}/_history[/{v}]  history of a resource; vread
    GET  /health
    POST /sms/inbound, /sms/voice/gather, /sms/status   Twilio's webhooks, with CENTRAL_SMS=on
                                           (sms.routes; their signature is checked first)

Handlers are synchronous and run in worker threads. Every error, ours or the framework's,
leaves through one handler as an OperationOutcome (the token endpoint answers in OAuth's shape).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar import Litestar, MediaType, Request, Response, Router, get, post, route
from litestar.exceptions import HTTPException
from litestar.params import FromPath, RawBody

from central import auth, reminders
from central.clock import Clock, SystemClock, instant
from central.database import Database, open_database
from central.errors import (
    CentralError,
    InvalidResource,
    InvalidSearch,
    NotAllowed,
    NotAuthenticated,
    NotFound,
    TokenRefused,
    UnsupportedMediaType,
)
from central.fhir import bundles, interactions, search
from central.fhir.capability import capability_statement
from central.fhir.interactions import Context
from central.fhir.outcome import operation_outcome, outcome
from central.fhir.store import HistoryEntry, Outcome, Stored
from central.fhir.validation import ID_PATTERN, require_accepted
from central.settings import Settings
from sms import SmsError, sms_router
from sms.errors import BadWebhook

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = ("application/fhir+json", "application/json")
_FRAMEWORK_ISSUES = {
    400: ("invalid", "the request is malformed"),
    404: ("not-found", "there is nothing at this path"),
    405: ("not-supported", "this path does not take that method"),
    413: ("too-costly", "the request body is larger than central accepts"),
}


def create_app(
    settings: Settings, *, clock: Clock | None = None, database: Database | None = None
) -> Litestar:
    """Central as an ASGI app. Creates the database's tables if missing."""
    clock = clock or SystemClock()
    database = database or open_database(settings.database_url, pool_size=settings.pool_size)
    database.create()
    published = instant(clock.now())

    def context(request: Request[Any, Any, Any]) -> Context:
        caller = auth.authenticate(database, settings, request.headers.get("authorization"), clock)
        return Context(database, settings, clock, caller)

    @get("/fhir/metadata", sync_to_thread=False)
    def metadata() -> Response[bytes]:
        return _fhir(capability_statement(settings, published=published))

    @get("/fhir/.well-known/smart-configuration", sync_to_thread=False)
    def smart_configuration() -> dict[str, Any]:
        return {
            "token_endpoint": settings.token_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": sorted(auth.ASSERTION_ALGORITHMS),
            "scopes_supported": ["system/*.read", "system/*.write", "system/*.rs", "system/*.cud"],
            "capabilities": ["client-confidential-asymmetric"],
        }

    @post("/auth/token", sync_to_thread=True, status_code=200)
    def token(body: RawBody) -> Response[bytes]:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        answer = auth.issue_token(database, settings, form, clock)
        return Response(
            msgspec.json.encode(answer),
            media_type=MediaType.JSON,
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    @post("/fhir", sync_to_thread=True, status_code=200)
    def bundle(request: Request[Any, Any, Any], body: RawBody) -> Response[bytes]:
        ctx = context(request)
        return _fhir(bundles.process(ctx, _json(request, body)))

    @route("/fhir/{path:path}", http_method=["GET", "POST", "PUT", "DELETE"], sync_to_thread=True)
    def fhir(
        request: Request[Any, Any, Any], path: FromPath[str], body: RawBody
    ) -> Response[bytes]:
        ctx = context(request)
        parts = [p for p in path.strip("/").split("/") if p]
        return _dispatch(ctx, request, parts, body)

    @get("/health", sync_to_thread=True)
    def health() -> dict[str, str]:
        with database.read() as session:
            session.execute("SELECT 1")
        return {"status": "ok"}

    def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        return error_response(request, exc)

    handlers: list[Any] = [metadata, smart_configuration, token, bundle, fhir, health]
    on_startup: list[Any] = []
    on_shutdown: list[Any] = []
    if settings.sms == "on":
        handlers.append(_mount_sms(settings, database, clock, on_startup, on_shutdown))
    return Litestar(
        route_handlers=handlers,
        exception_handlers={Exception: handle_error},
        request_max_body_size=settings.max_body_bytes,
        on_startup=on_startup,
        on_shutdown=[*on_shutdown, database.close],
    )


def _mount_sms(
    settings: Settings,
    database: Database,
    clock: Clock,
    on_startup: list[Any],
    on_shutdown: list[Any],
) -> Router:
    """The reminder service's webhooks, and its scheduler when this process runs one."""
    service = reminders.reminder_service(settings, database, clock)
    if settings.sms_scheduler == "on":
        running: list[Any] = []
        on_startup.append(lambda: running.append(reminders.start(service, settings)))
        on_shutdown.append(lambda: [scheduler.shutdown(wait=True) for scheduler in running])
    return sms_router(service)


# -- dispatch ---------------------------------------------------------------------------------------


def _dispatch(
    ctx: Context, request: Request[Any, Any, Any], parts: list[str], body: bytes
) -> Response[bytes]:
    method = request.method
    query = request.scope.get("query_string", b"").decode("utf-8", "replace")
    params = parse_qsl(query, keep_blank_values=True)
    if parts == ["_history"] and method == "GET":
        return _history(ctx, None, None, params)
    if not parts:
        raise NotFound("there is nothing at this path")
    kind = parts[0]
    if not kind.isalpha() or not kind[0].isupper():
        raise NotFound("there is nothing at this path")
    require_accepted(kind)
    if len(parts) == 1:
        return _type_level(ctx, request, kind, (query, params), body)
    if parts[1] == "_search" and len(parts) == 2 and method == "POST":
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return _search(ctx, request, kind, [*params, *form])
    if parts[1] == "_history" and len(parts) == 2 and method == "GET":
        return _history(ctx, kind, None, params)
    rid = parts[1]
    if not ID_PATTERN.match(rid):
        raise NotFound(f"there is no {kind} with this ID")
    if len(parts) == 2:
        return _instance_level(ctx, request, kind, rid, body)
    if parts[2] == "_history" and method == "GET":
        if len(parts) == 3:
            return _history(ctx, kind, rid, params)
        if len(parts) == 4 and parts[3].isdigit():
            return _read(interactions.read(ctx, kind, rid, int(parts[3])))
    raise NotFound("there is nothing at this path")


def _type_level(
    ctx: Context,
    request: Request[Any, Any, Any],
    kind: str,
    criteria: tuple[str, list[tuple[str, str]]],
    body: bytes,
) -> Response[bytes]:
    query, params = criteria
    if request.method == "GET":
        return _search(ctx, request, kind, params)
    if request.method == "POST":
        created = interactions.create(
            ctx, kind, _json(request, body), if_none_exist=request.headers.get("if-none-exist")
        )
        return _written(ctx, request, created)
    if request.method == "PUT":
        if not params:
            raise NotAllowed("PUT on a type needs search criteria (a conditional update)")
        return _written(
            ctx, request, interactions.conditional_update(ctx, kind, query, _json(request, body))
        )
    raise NotAllowed("DELETE needs a resource ID (conditional delete is not supported)")


def _instance_level(
    ctx: Context, request: Request[Any, Any, Any], kind: str, rid: str, body: bytes
) -> Response[bytes]:
    if request.method == "GET":
        return _read(interactions.read(ctx, kind, rid))
    if request.method == "PUT":
        if_match = _if_match(request.headers.get("if-match"))
        updated = interactions.update(ctx, kind, rid, _json(request, body), if_match=if_match)
        return _written(ctx, request, updated)
    if request.method == "DELETE":
        interactions.delete(ctx, kind, rid)
        return Response(b"", status_code=204)
    raise NotAllowed("POST to a resource ID is not a FHIR interaction; use PUT")


def _search(
    ctx: Context, request: Request[Any, Any, Any], kind: str, params: list[tuple[str, str]]
) -> Response[bytes]:
    lenient = "handling=lenient" in request.headers.get("prefer", "")
    query, page = interactions.run_search(ctx, kind, params, lenient=lenient)
    return _fhir(
        search.bundle(
            page,
            base_url=ctx.settings.fhir_base,
            resource_type=kind,
            params=query.params,
            self_url=f"{ctx.settings.fhir_base}/{kind}?{urlencode(query.params)}",
        )
    )


def _history(
    ctx: Context, kind: str | None, rid: str | None, params: list[tuple[str, str]]
) -> Response[bytes]:
    given = dict(params)
    unknown = set(given) - {"_since", "_count", "_format"}
    if unknown:
        raise InvalidSearch("_history takes only the parameters _since and _count")
    count = _count(given.get("_count"), ctx.settings)
    since = _instant_param("_since", given.get("_since"))
    entries = interactions.history(
        ctx, resource_type=kind, rid=rid, since=since, before=None, count=count
    )
    return _fhir(
        {
            "resourceType": "Bundle",
            "type": "history",
            "entry": [_history_entry(ctx, e) for e in entries],
        }
    )


def _history_entry(ctx: Context, entry: HistoryEntry) -> dict[str, Any]:
    s = entry.stored
    url = f"{s.resource_type}/{s.id}"
    item: dict[str, Any] = {"fullUrl": f"{ctx.settings.fhir_base}/{url}"}
    if s.content is not None:
        item["resource"] = s.content
    item["request"] = {
        "method": entry.method,
        "url": url if entry.method != "POST" else s.resource_type,
    }
    item["response"] = {
        "status": "200 OK" if entry.method != "POST" else "201 Created",
        "etag": s.etag,
        "lastModified": s.last_updated,
    }
    return item


# -- requests and responses -------------------------------------------------------------------------


def _json(request: Request[Any, Any, Any], body: bytes) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise UnsupportedMediaType("send FHIR resources as application/fhir+json")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidResource("the body is not valid JSON") from None


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidResource('If-Match: must be a version tag such as W/"3"')
    return int(text)


def _count(value: str | None, settings: Settings) -> int:
    if value is None:
        return settings.page_size
    if not value.isdigit() or int(value) > settings.max_page_size:
        raise InvalidSearch(f"_count: must be a whole number from 0 to {settings.max_page_size}")
    return int(value)


def _instant_param(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSearch(f"{name}: must be an instant such as 2026-11-21T08:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidSearch(f"{name}: the instant needs a time zone")
    return instant(moment)


def _read(stored: Stored) -> Response[bytes]:
    return _fhir(stored.content, headers=_version_headers(stored))


def _written(ctx: Context, request: Request[Any, Any, Any], done: Outcome) -> Response[bytes]:
    s = done.stored
    headers = _version_headers(s)
    headers["Location"] = f"{ctx.settings.fhir_base}/{s.resource_type}/{s.id}/_history/{s.version}"
    status = 201 if done.created else 200
    if "return=minimal" in request.headers.get("prefer", ""):
        return Response(b"", status_code=status, headers=headers)
    return _fhir(s.content, status=status, headers=headers)


def _version_headers(stored: Stored) -> dict[str, str]:
    moment = datetime.strptime(stored.last_updated, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return {"ETag": stored.etag, "Last-Modified": format_datetime(moment, usegmt=True)}


def _fhir(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=FHIR_JSON, headers=headers
    )


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The one error path: OperationOutcome with the error's status (OAuth's shape at /auth)."""
    if isinstance(exc, TokenRefused):
        body = {"error": exc.oauth_error, "error_description": str(exc)}
        return Response(
            msgspec.json.encode(body), status_code=exc.status, media_type=MediaType.JSON
        )
    if isinstance(exc, CentralError):
        headers = (
            {"WWW-Authenticate": 'Bearer realm="central"'}
            if isinstance(exc, NotAuthenticated)
            else None
        )
        log.info(
            "refused %s %s: %s (%d)",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc.status,
        )
        return _fhir(operation_outcome(exc), status=exc.status, headers=headers)
    if isinstance(exc, BadWebhook):
        # Twilio reads only the status; the reason is for whoever sent a forged request.
        log.info("refused a webhook at %s: %s", request.url.path, exc)
        return Response(str(exc).encode(), status_code=403, media_type=MediaType.TEXT)
    if isinstance(exc, SmsError):
        return Response(str(exc).encode(), status_code=400, media_type=MediaType.TEXT)
    if isinstance(exc, HTTPException):
        code, detail = _FRAMEWORK_ISSUES.get(exc.status_code, ("invalid", str(exc.detail)))
        return _fhir(outcome("error", code, detail), status=exc.status_code)
    # A fault of central's own: the transaction was rolled back. The log keeps the trace.
    log.error("unexpected error while answering a request", exc_info=exc)
    return _fhir(
        outcome("fatal", "exception", "central could not handle this request; try again later"),
        status=500,
    )
