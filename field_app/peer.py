"""Tablet to tablet, with no hub: one tablet serves, the other syncs with it.

``serve-peer`` prints a one-time pairing code and answers sync requests on the local network
with the same exchange the hub uses (care_record.sync.respond). The other tablet runs
``sync --peer URL --code CODE``. Requests are signed with an HMAC keyed by the pairing code
over the same bytes a hub request signs; the serving tablet refuses old times, repeated nonces
and, after a few bad signatures, everything (so the code cannot be guessed on the network).
Paired tablets share every chart they hold: pairing is done by hand, by two CHWs side by side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from care_record import CareRecordError, Clock
from care_record.sync import SyncRequest, decode_frame, encode_frame, respond, signed_message
from care_record.sync.signing import HEADER_DEVICE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME
from care_record.sync.wire import MalformedFrame
from field_app.errors import FieldAppError
from field_app.replica import StoreReplica
from field_app.session import Session
from field_app.store import DatabaseError

MAX_BODY = 64 * 1024 * 1024
MAX_BAD_SIGNATURES = 5
SKEW_SECONDS = 300

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def pairing_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def _pair_key(code: str) -> bytes:
    return hashlib.sha256(b"field_app/pair/" + code.strip().encode()).digest()


class PairingSigner:
    def __init__(self, store_id: str, code: str, clock: Clock) -> None:
        self.store_id, self.key, self.clock = store_id, _pair_key(code), clock

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        stamp = int(self.clock.now().timestamp())
        nonce = secrets.token_hex(16)
        mac = hmac.new(self.key, signed_message(method, path, stamp, nonce, body), hashlib.sha256)
        return {
            HEADER_DEVICE: self.store_id,
            HEADER_TIME: str(stamp),
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: base64.b64encode(mac.digest()).decode("ascii"),
        }


class PeerServer:
    """A small ASGI app: GET /hello tells who this tablet is; POST /sync answers a sync."""

    def __init__(
        self, session: Session, code: str, clock: Clock, on_sync: Callable[[str], None]
    ) -> None:
        self.session = session
        self.key = _pair_key(code)
        self.clock = clock
        self.on_sync = on_sync
        self.store_id = session.keys.store_id()
        self.nonces: dict[str, int] = {}  # nonce -> its signed time, kept while it could recur
        self.bad = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/hello":
            await _reply(
                send, 200, json.dumps({"store": self.store_id}).encode(), "application/json"
            )
            return
        if scope["method"] != "POST" or scope["path"] != "/sync":
            await _error(send, 404, "not_found", "no such path on this tablet")
            return
        body = await _read_body(receive)
        status, payload, kind = self.handle(_headers(scope), body)
        await _reply(send, status, payload, kind)

    def handle(self, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes, str]:
        """Check, apply and answer one sync request: (status, body, content type)."""
        if body is None:
            return _json_error(413, "too_large", "the request is too large")
        refusal = self._check(headers, body)
        if refusal is not None:
            return refusal
        try:
            request = decode_frame(body, SyncRequest)
        except MalformedFrame as exc:
            return _json_error(400, "malformed_frame", str(exc))
        peer = f"peer:{headers[HEADER_DEVICE.lower()]}"
        store = self.session.store
        try:
            with store.transaction():
                response = respond(
                    StoreReplica(store, initiator=False),
                    peer,
                    request,
                    server_time=self.clock.now().isoformat(),
                )
        except (FieldAppError, CareRecordError) as exc:
            return _json_error(503, "unavailable", str(exc))
        except DatabaseError:
            return _json_error(503, "unavailable", "this tablet's database could not be used")
        self.on_sync(
            f"synced with a peer: {len(request.updates)} charts in, {len(response.updates) + len(response.snapshots)} out"
        )
        return 200, encode_frame(response), "application/x-rcs1"

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str] | None:
        if self.bad >= MAX_BAD_SIGNATURES:
            return _json_error(403, "closed", "too many bad pairing codes: start serve-peer again")
        try:
            stamp = int(headers[HEADER_TIME.lower()])
            nonce = headers[HEADER_NONCE.lower()]
            device = headers[HEADER_DEVICE.lower()]
            signature = base64.b64decode(headers[HEADER_SIGNATURE.lower()], validate=True)
        except (KeyError, ValueError):
            return _json_error(401, "unsigned", "the request is not signed with the pairing code")
        expected = hmac.new(
            self.key, signed_message("POST", "/sync", stamp, nonce, body), hashlib.sha256
        )
        if not device or not hmac.compare_digest(expected.digest(), signature):
            self.bad += 1
            return _json_error(401, "bad_signature", "wrong pairing code")
        if abs(stamp - self.clock.now().timestamp()) > SKEW_SECONDS:
            return _json_error(401, "clock_skew", "the two tablets' clocks differ too much")
        if nonce in self.nonces:
            return _json_error(409, "replayed", "this request was already received")
        now = self.clock.now().timestamp()
        self.nonces = {n: t for n, t in self.nonces.items() if abs(t - now) <= SKEW_SECONDS}
        self.nonces[nonce] = stamp
        return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _json_error(status: int, code: str, detail: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": code, "detail": detail}).encode(), "application/json"


async def _error(send: Send, status: int, code: str, detail: str) -> None:
    await _reply(send, *_json_error(status, code, detail))


async def _reply(send: Send, status: int, body: bytes, kind: str) -> None:
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
