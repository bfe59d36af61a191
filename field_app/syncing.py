"""Syncing the tablet with its hub, or with a peer tablet: enrolment, signing, retries, rounds.

The usual sync is one round trip: every changed chart goes up in one request, every chart the
hub changed comes back in its answer. More rounds happen only on a first sync or a new
catchment (pages of charts, with progress) and when the two sides' memory of each other was
wrong (Automerge's own sync protocol for those charts). Each answer is stored in one
transaction, so a cut anywhere leaves the tablet consistent and the next sync carries on.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from care_record import Clock
from care_record.sync import (
    DocNotice,
    Session,
    SyncResponse,
    absorb,
    build_request,
    decode_frame,
    encode_frame,
    signed_message,
)
from care_record.sync.signing import HEADER_DEVICE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME
from care_record.sync.wire import MalformedFrame
from field_app.errors import HubUnreachable, NotEnrolled, SyncRefused
from field_app.replica import StoreReplica
from field_app.store import Store

FRAME_TYPE = "application/x-rcs1"
HUB_PEER = "hub"
MAX_ROUNDS = 10_000
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class Signer(Protocol):
    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]: ...


@dataclass
class Identity:
    """This tablet's standing with its hub, kept in the encrypted store."""

    device_id: str
    hub_url: str
    chw: str
    key: Ed25519PrivateKey
    clock_offset: int = 0


class DeviceSigner:
    """Ed25519 over method, path, time, nonce and body digest (see care_record/sync/signing.py)."""

    def __init__(self, identity: Identity, clock: Clock) -> None:
        self.identity = identity
        self.clock = clock

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        stamp = int(self.clock.now().timestamp()) + self.identity.clock_offset
        nonce = secrets.token_hex(16)
        signature = self.identity.key.sign(signed_message(method, path, stamp, nonce, body))
        return {
            HEADER_DEVICE: self.identity.device_id,
            HEADER_TIME: str(stamp),
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
        }


# -- identity ---------------------------------------------------------------------------------


def load_identity(store: Store) -> Identity | None:
    values = dict(store.db.execute("SELECT key, value FROM meta WHERE key LIKE 'hub.%'").fetchall())
    if "hub.device_id" not in values:
        return None
    return Identity(
        device_id=values["hub.device_id"],
        hub_url=values["hub.url"],
        chw=values.get("hub.chw", ""),
        key=Ed25519PrivateKey.from_private_bytes(bytes.fromhex(values["hub.key"])),
        clock_offset=int(values.get("hub.clock_offset", "0")),
    )


def _save_meta(store: Store, values: dict[str, str]) -> None:
    with store.transaction():
        for key, value in values.items():
            store.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )


def enroll(store: Store, client: httpx.Client, hub_url: str, code: str, label: str) -> Identity:
    """Enrol this tablet with a hub using a supervisor's one-time code. Raises SyncRefused."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = {"code": code.strip(), "public_key": base64.b64encode(public).decode(), "label": label}
    try:
        answer = client.post(f"{hub_url.rstrip('/')}/enroll", json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise HubUnreachable(f"could not reach the hub to enrol: {_why(exc)}") from None
    if answer.status_code != 200:
        raise _refusal(answer)
    reply = answer.json()
    identity = Identity(reply["device_id"], hub_url.rstrip("/"), str(reply.get("chw", "")), key)
    raw = key.private_bytes_raw().hex()
    _save_meta(
        store,
        {
            "hub.device_id": identity.device_id,
            "hub.url": identity.hub_url,
            "hub.chw": identity.chw,
            "hub.key": raw,
        },
    )
    return identity


# -- the sync loop ----------------------------------------------------------------------------


@dataclass
class SyncReport:
    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    sent: int = 0
    received: int = 0
    new: int = 0
    dropped: list[DocNotice] = field(default_factory=list)
    kept: list[DocNotice] = field(default_factory=list)
    quarantined: list[DocNotice] = field(default_factory=list)
    command: str | None = None


@dataclass
class Link:
    """Where and how to send frames: the HTTP client, the base URL, who signs, retry policy."""

    client: httpx.Client
    base_url: str
    signer: Signer
    attempts: int = 6
    first_wait: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    on_skew: Callable[[str], None] | None = None  # told the hub's time when it says clock_skew
    timeout: float = 60.0


def sync(
    store: Store,
    link: Link,
    *,
    peer: str = HUB_PEER,
    progress: Callable[[str], None] = lambda _text: None,
    max_snapshot_bytes: int = 1024 * 1024,
) -> SyncReport:
    """Sync every chart with ``peer`` until neither side has anything left for the other."""
    replica = StoreReplica(store, initiator=True)
    session = Session(peer)
    report = SyncReport()
    total_new = 0
    for _ in range(MAX_ROUNDS):
        with store.transaction():
            request = build_request(replica, session, max_snapshot_bytes=max_snapshot_bytes)
            # Lets the hub see that this tablet went back in time (restored from a backup).
            request.heard = replica.heard_exchange(peer)
        body = encode_frame(request)
        answer = post_frame(link, "/sync", body)
        report.round_trips += 1
        report.bytes_sent += len(body)
        report.bytes_received += len(answer)
        try:
            response = decode_frame(answer, SyncResponse)
        except MalformedFrame as exc:
            raise SyncRefused(
                f"the hub's answer was damaged in transit ({exc}); sync again", "malformed"
            ) from None
        with store.transaction():
            outcome = absorb(replica, session, request, response)
            # The hub went back in time (restored from a backup): send everything again.
            went_back = replica.note_exchange(peer, response.exchange)
        _add(report, outcome.sent, outcome.received, outcome.new, outcome)
        total_new = max(total_new, report.new + outcome.remaining)
        if outcome.remaining:
            progress(f"received {report.new} of {total_new} new charts")
        if outcome.command:
            report.command = outcome.command
            return report
        if not (outcome.more or went_back):
            return report
    raise SyncRefused("the sync did not finish after many rounds; ask for help", "no_progress")


def _add(report: SyncReport, sent: int, received: int, new: int, outcome: Any) -> None:
    report.sent += sent
    report.received += received
    report.new += new
    report.dropped += outcome.dropped
    report.kept += outcome.kept
    report.quarantined += outcome.quarantined


def post_frame(link: Link, path: str, body: bytes) -> bytes:
    """POST a frame, retrying with back-off on lost connections and busy servers."""
    wait = link.first_wait
    last = ""
    for attempt in range(link.attempts):
        headers = {"Content-Type": FRAME_TYPE, **link.signer.headers("POST", path, body)}
        try:
            answer = link.client.post(
                link.base_url + path, content=body, headers=headers, timeout=link.timeout
            )
        except httpx.HTTPError as exc:
            last = _why(exc)
        else:
            if answer.status_code == 200:
                return answer.content
            if answer.status_code not in RETRY_STATUSES:
                refusal = _refusal(answer)
                if refusal.code == "clock_skew" and link.on_skew and attempt == 0:
                    link.on_skew(refusal.server_time)
                    continue
                raise refusal
            last = f"the hub answered {answer.status_code}"
        if attempt + 1 < link.attempts:
            link.sleep(wait)
            wait = min(wait * 2, 60.0)
    raise HubUnreachable(
        f"could not sync after {link.attempts} tries ({last}). "
        "Your work is safe on this tablet; sync again when the network is better."
    )


def _refusal(answer: httpx.Response) -> SyncRefused:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return SyncRefused(f"the hub refused the sync ({answer.status_code})")
    detail = str(body.get("detail") or f"the hub refused the sync ({answer.status_code})")
    command = body.get("command")
    return SyncRefused(
        detail,
        str(body.get("error", "")),
        command=str(command) if command else None,
        server_time=str(body.get("server_time", "")),
    )


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:120]


def hub_link(store: Store, client: httpx.Client, clock: Clock, **options: Any) -> Link:
    """A link to the enrolled hub; remembers a clock correction the hub asks for."""
    identity = load_identity(store)
    if identity is None:
        raise NotEnrolled(
            "this tablet is not enrolled with a hub: run 'enroll --hub URL --code CODE'"
        )

    def correct_clock(server_time: str) -> None:
        try:
            server = datetime.fromisoformat(server_time)
        except ValueError:
            return
        identity.clock_offset = int(server.timestamp() - clock.now().timestamp())
        _save_meta(store, {"hub.clock_offset": str(identity.clock_offset)})

    return Link(
        client, identity.hub_url, DeviceSigner(identity, clock), on_skew=correct_clock, **options
    )
