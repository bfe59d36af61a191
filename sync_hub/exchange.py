"""One sync request, from its signature to the committed answer, and one enrolment.

The order matters. Checks that write nothing come first (headers, device, signature, time),
then the frame is decoded and the device's changes are applied to the charts as they stand
(Automerge's load, the costliest part of a sync), all outside the write lock, so that
concurrent requests do that side by side. Then one ``BEGIN IMMEDIATE`` transaction records the
nonce, takes the device's changes (using each chart applied beforehand only if its heads are
still the ones it was applied to, applying it again otherwise), builds the answer and commits.
Only then is the answer sent: whatever the tablet hears about has been stored. Any refusal
before the commit leaves the database as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from care_record import Clock
from care_record.sync import (
    MalformedFrame,
    SyncRequest,
    SyncResponse,
    columns,
    decode_frame,
    encode_frame,
    respond,
)
from care_record.sync.engine import Prepared, prepare
from sync_hub import devices
from sync_hub.catchments import Catchment
from sync_hub.chart_cache import ChartCache
from sync_hub.devices import RETIRED, RETIRING, Device, stamp
from sync_hub.errors import DeviceRefused, MalformedRequest, WrongMediaType
from sync_hub.replica import HubReplica
from sync_hub.settings import Settings
from sync_hub.store import Store

log = logging.getLogger(__name__)

FRAME_TYPE = "application/x-rcs1"
RETIRED_COMMAND = "retired"


@dataclass(frozen=True)
class Hub:
    """What every request needs: the settings, the database, the clock, and the charts kept
    loaded (None: each sync loads the charts it touches)."""

    settings: Settings
    store: Store
    clock: Clock
    charts: ChartCache | None = None


@dataclass(frozen=True)
class SyncCall:
    """A sync request as it arrived over HTTP."""

    method: str
    path: str
    headers: Mapping[str, str]
    content_type: str
    body: bytes


def sync(hub: Hub, call: SyncCall) -> bytes:
    """Answer one sync request with a frame, after committing what it brought.

    Raises WrongMediaType, Unsigned, UnknownDevice, BadSignature, DeviceRevoked, DeviceRetired,
    ClockSkew, MalformedRequest, Replayed or Busy; none of them leaves anything written, except
    that a revoked or retired tablet's contact is recorded as its last_seen.
    """
    if call.content_type.split(";")[0].strip().lower() != FRAME_TYPE:
        raise WrongMediaType(f"a sync request's body must be {FRAME_TYPE}")
    now = hub.clock.now()
    signed = devices.signing_headers(call.headers)
    device = _authenticate(hub, call, signed, now)
    request = _decode(call.body, hub.settings.max_frame_bytes)
    request.max_snapshot_bytes = max(
        1, min(request.max_snapshot_bytes, hub.settings.max_snapshot_bytes)
    )
    prepared = _prepare(hub, device, request)
    with hub.store.write() as db:
        # Read again under the write lock: a `revoke` may have landed since the check above.
        device = devices.get_device(db, signed.device)
        devices.refuse_if_finished(device)
        devices.use_nonce(db, signed, now=now, skew_seconds=hub.settings.clock_skew_seconds)
        devices.seen(db, device.id, now)
        number = devices.count_exchange(db, device.id)
        replica = HubReplica(
            db,
            device=device.id,
            chw=device.chw,
            at=stamp(now),
            receive_only=device.state == RETIRING,
            exchange=number,
        )
        if request.heard > 0:
            replica.forget_since(request.heard)
        replica.read_ahead(_named(request))
        response = respond(
            replica,
            device.id,
            request,
            server_time=stamp(now),
            prepared=prepared,
            append=True,
            cache=hub.charts,
        )
        replica.offered(s.doc for s in response.snapshots)
        response.exchange = number
        if device.state == RETIRING and _nothing_in_flight(request, response):
            response.command = RETIRED_COMMAND
            devices.set_state(db, device.id, RETIRED, now)
            devices.seen(db, device.id, now, told=True)
    _log(device, request, response)
    # New charts go down with their columns uncompressed, outside the write transaction: the
    # frame's compressor then sees the whole page at once (see care_record/sync/columns.py).
    for snapshot in response.snapshots:
        snapshot.data = columns.uncompressed(snapshot.data)
    return encode_frame(response)


def _authenticate(hub: Hub, call: SyncCall, signed: devices.Signed, now: datetime) -> Device:
    try:
        with hub.store.connect() as db:
            return devices.verify(
                db,
                signed,
                method=call.method,
                path=call.path,
                body=call.body,
                now=now,
                skew_seconds=hub.settings.clock_skew_seconds,
            )
    except DeviceRefused:
        # The signature was good: this is the tablet itself, hearing that it must erase itself
        # or stop. Its last contact tells the supervisor the message was delivered.
        with hub.store.write() as db:
            devices.seen(db, signed.device, now, told=True)
        raise


def _prepare(hub: Hub, device: Device, request: SyncRequest) -> dict[int, Prepared]:
    """The request's updates applied to the charts as they stand, nothing written: the rows
    are read in one short read transaction, and Automerge does its work after it, on no
    connection and under no lock. Whether the device may write each chart is decided later,
    under the write lock; nothing prepared here is stored unless that allows it."""
    # What the device acknowledges in this request is what its updates build on, as respond
    # takes the acks first: without them here, its changes' dependencies would not resolve.
    acked = {ack.doc: ack.heads for ack in request.acks}
    with hub.store.read() as db:
        reader = HubReplica(db, device=device.id, chw=device.chw, at="")
        reader.read_ahead([u.doc for u in request.updates])
        rows = [
            (u, reader.get(u.doc), reader.peer_heads(device.id, u.doc)) for u in request.updates
        ]
    ready = {}
    for index, (update, stored, known) in enumerate(rows):
        also_known = [*(known or []), *acked.get(update.doc, [])]
        done = prepare(update, stored, also_known, append=True, cache=hub.charts)
        if done is not None:
            ready[index] = done
    return ready


def _named(request: SyncRequest) -> list[str]:
    """The charts a request names: its updates', acknowledgements' and syncs' documents."""
    return [
        *(u.doc for u in request.updates),
        *(a.doc for a in request.acks),
        *(s.doc for s in request.syncs),
    ]


def _decode(body: bytes, limit: int) -> SyncRequest:
    try:
        return decode_frame(body, SyncRequest, limit=limit)
    except MalformedFrame as exc:
        raise MalformedRequest(str(exc)) from None


def _nothing_in_flight(request: SyncRequest, response: SyncResponse) -> bool:
    """A retiring tablet has pushed everything once no chart is still being reconciled.

    Every update it sent was acknowledged, or kept in quarantine for review, or refused as not
    its to change (retrying would never change that); a chart under Automerge's sync protocol
    (``resync``) still has to finish.
    """
    return not (request.syncs or response.syncs or response.resync)


def _log(device: Device, request: SyncRequest, response: SyncResponse) -> None:
    # Counts and the device ID only: no chart IDs, no contents.
    log.info(
        "sync device=%s up=%d applied=%d down=%d new=%d remaining=%d resync=%d "
        "quarantined=%d dropped=%d command=%s",
        device.id,
        len(request.updates),
        len(response.applied),
        len(response.updates),
        len(response.snapshots),
        response.remaining,
        len(response.resync),
        len(response.quarantined),
        len(response.dropped),
        response.command or "-",
    )


@dataclass(frozen=True)
class Enrolled:
    device: Device
    catchment: Catchment


def enroll(hub: Hub, code: str, public_key: str, label: str) -> Enrolled:
    """Spend a one-time code on a new device (see ``devices.enroll`` for what it raises)."""
    with hub.store.write() as db:
        device, catchment = devices.enroll(db, code, public_key, label, now=hub.clock.now())
    log.info("enrolled device %s for %s", device.id, device.chw)
    return Enrolled(device, catchment)
