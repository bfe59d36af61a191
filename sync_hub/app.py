"""The hub's HTTP face: ``create_app(settings) -> Litestar``.

    POST /enroll   JSON {code, public_key, label}  -> JSON {device_id, chw, catchment, hub}
    POST /sync     a signed sync frame (application/x-rcs1) -> a sync frame
    GET  /health   -> {"status": "ok"}

With SYNC_HUB_CENTRAL_URL set, the app's lifespan also runs the push loop
(``sync_hub.pusher.PushLoop``): a sync that commits wakes it, so a visit reaches central
within a second or two.

Handlers are synchronous and run in worker threads (``sync_to_thread``, on the event loop's
default executor: ``SYNC_HUB_WORKERS`` threads), each on its own database connection, so the
event loop never waits on SQLite. Every error, ours or the framework's, leaves through one
handler as the one JSON shape ``care_record.sync.ErrorBody``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody, RawBody

from care_record import Clock, SystemClock
from care_record.sync import ErrorBody
from care_record.sync.signing import HEADER_DEVICE
from sync_hub import exchange, pusher
from sync_hub.chart_cache import ChartCache
from sync_hub.devices import stamp
from sync_hub.errors import Busy, HubError
from sync_hub.exchange import FRAME_TYPE, Hub, SyncCall
from sync_hub.settings import Settings
from sync_hub.store import Store

log = logging.getLogger(__name__)

ENROLL_MAX_BODY_BYTES = 4096
RETRY_AFTER_SECONDS = 5

_FRAMEWORK_CODES = {
    400: ("bad_request", None),
    404: ("not_found", "there is nothing at this path on the hub"),
    405: ("method_not_allowed", "this path does not take that method"),
    413: ("too_large", "the request body is larger than the hub accepts"),
}


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=False):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""


class CatchmentBody(msgspec.Struct):
    villages: list[str]
    households: list[str]


class EnrollResponse(msgspec.Struct):
    device_id: str
    chw: str
    catchment: CatchmentBody
    hub: str


def create_app(
    settings: Settings, *, clock: Clock | None = None, central_http: httpx.Client | None = None
) -> Litestar:
    """The hub as an ASGI app. Creates the database file and its tables if missing.

    ``central_http``: the HTTP client for central (tests pass one with their own transport).
    Raises CentralNotConfigured if SYNC_HUB_CENTRAL_URL is set but the hub's key is missing.
    """
    store = Store(settings.db, busy_timeout_seconds=settings.busy_timeout_seconds)
    store.create()
    hub = Hub(settings, store, clock or SystemClock(), ChartCache(settings.chart_cache))
    loop = _push_loop(settings, store, hub.clock, central_http)

    @post(
        "/enroll", sync_to_thread=True, status_code=200, request_max_body_size=ENROLL_MAX_BODY_BYTES
    )
    def enroll(data: JSONBody[EnrollRequest]) -> EnrollResponse:
        done = exchange.enroll(hub, data.code, data.public_key, data.label)
        return EnrollResponse(
            device_id=done.device.id,
            chw=done.device.chw,
            catchment=CatchmentBody(done.catchment.villages, done.catchment.households),
            hub=settings.name,
        )

    @post("/sync", sync_to_thread=True, status_code=200)
    def sync(request: Request[Any, Any, Any], body: RawBody) -> Response[bytes]:
        call = SyncCall(
            method=request.method,
            path=request.url.path,
            headers=request.headers,
            content_type=request.headers.get("content-type", ""),
            body=body,
        )
        answer = exchange.sync(hub, call)
        if loop is not None:
            loop.wake()  # committed: whatever this sync changed is in the outbox now
        return Response(answer, media_type=FRAME_TYPE)

    @get("/health", sync_to_thread=True)
    def health() -> dict[str, str]:
        with store.read() as db:
            db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        return {"status": "ok"}

    def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        answer = error_response(exc, server_time=stamp(hub.clock.now()))
        if isinstance(exc, HubError):
            # The path, the device and the code: enough to follow a tablet's trouble, and
            # nothing of the charts.
            device = request.headers.get(HEADER_DEVICE, "-")[:40]
            log.info(
                "refused %s %s device=%s: %s", request.method, request.url.path, device, exc.code
            )
        return answer

    @asynccontextmanager
    async def worker_threads(_app: Litestar) -> AsyncIterator[None]:
        # Litestar runs synchronous handlers on the loop's default executor, whose own size
        # (the cores plus four) only adds threads waiting for the interpreter lock.
        workers = ThreadPoolExecutor(settings.workers, thread_name_prefix="sync-hub")
        asyncio.get_running_loop().set_default_executor(workers)
        yield

    @asynccontextmanager
    async def push_to_central(_app: Litestar) -> AsyncIterator[None]:
        if loop is None:
            yield
            return
        loop.start()
        try:
            yield
        finally:
            await loop.stop()
            loop.pusher.central.close()

    return Litestar(
        route_handlers=[enroll, sync, health],
        exception_handlers={Exception: handle_error},
        request_max_body_size=settings.max_body_bytes,
        lifespan=[worker_threads, push_to_central],
    )


def _push_loop(
    settings: Settings, store: Store, clock: Clock, http: httpx.Client | None
) -> pusher.PushLoop | None:
    if not settings.central_url:
        return None
    link = pusher.link(settings, store, clock, http=http)
    return pusher.PushLoop(
        link.pusher,
        link.fetcher.fetch,
        push_interval=settings.push_interval_seconds,
        fetch_interval=settings.fetch_interval_seconds,
    )


def error_response(exc: Exception, *, server_time: str) -> Response[bytes]:
    """The one error shape: {error, detail, server_time, command}, with the error's status."""
    status, code, detail, command = _describe(exc)
    body = ErrorBody(error=code, detail=detail, server_time=server_time, command=command)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if isinstance(exc, Busy) else None
    return Response(
        msgspec.json.encode(msgspec.structs.asdict(body)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _describe(exc: Exception) -> tuple[int, str, str, str | None]:
    if isinstance(exc, HubError):
        return exc.status, exc.code, str(exc), exc.command
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code, detail = _FRAMEWORK_CODES.get(status, ("http_error", None))
        if detail is None:
            detail = _framework_detail(exc)
        return status, code, detail, None
    # A fault of the hub's own: the transaction was rolled back. The log keeps the trace
    # (exception messages here name tables and rules, not patients).
    log.error("unexpected error while answering a request", exc_info=exc)
    return 500, "internal", "the hub could not handle this request; try again later", None


def _framework_detail(exc: HTTPException) -> str:
    """The framework's words, with which field of a JSON body is wrong and how. msgspec's
    messages name fields and types, never the values sent."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    said = [
        f"{p.get('key') or 'body'}: {p.get('message')}"
        for p in problems
        if isinstance(p, dict) and p.get("message")
    ]
    return "; ".join([str(exc.detail), *said])
