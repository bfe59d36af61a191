"""Tablets: enrolment with a one-time code, request signatures, and a device's life cycle.

A supervisor issues a code (``enroll-code``) for a CHW. The tablet makes an Ed25519 key pair
and sends the code with its public key to ``POST /enroll``; the hub answers with the device's
ID. From then on every request carries::

    X-Device     the device ID
    X-Time       Unix seconds when the tablet signed it
    X-Nonce      8 to 128 characters [A-Za-z0-9._~+/=-], never used twice
    X-Signature  base64 of Ed25519 over care_record.sync.signed_message(method, path, time,
                 nonce, body)

States: ``active`` syncs both ways; ``retiring`` (``retire``) may still push what it holds and
receives nothing, then is told "retired"; ``retired`` and ``revoked`` are refused, and a revoked
tablet is told to crypto-erase itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from care_record import new_id
from care_record.sync import signed_message
from care_record.sync.signing import HEADER_DEVICE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME
from sync_hub import catchments
from sync_hub.catchments import Catchment
from sync_hub.errors import (
    BadPublicKey,
    BadSignature,
    ClockSkew,
    CodeExpired,
    CodeUsed,
    DeviceRetired,
    DeviceRevoked,
    InvalidCode,
    Refused,
    Replayed,
    UnknownDevice,
    Unsigned,
)

# Neither of 0/O, 1/I/L, 2/Z, 5/S, 8/B: a code read aloud over a bad line is typed right.
CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
CODE_GROUPS, CODE_GROUP_LENGTH = 4, 4
ACTIVE, RETIRING, RETIRED, REVOKED = "active", "retiring", "retired", "revoked"
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{8,128}")
_DEVICE_ID = re.compile(r"[0-9a-f-]{36}")


@dataclass(frozen=True)
class Device:
    id: str
    chw: str
    state: str
    public_key: bytes
    label: str = ""
    enrolled_at: str = ""
    state_changed_at: str = ""
    last_seen: str | None = None
    told_at: str | None = None  # when it last heard that it is revoked or retired


@dataclass(frozen=True)
class Signed:
    """The signing headers of one request, checked for form but not yet verified."""

    device: str
    time: int
    nonce: str
    signature: bytes


# -- enrolment codes ---------------------------------------------------------------------------


def issue_code(
    db: sqlite_utils.Database, chw: str, *, now: datetime, hours: int
) -> tuple[str, datetime]:
    """A new single-use code for ``chw``, stored only as its hash: (the code as it is typed,
    when it expires)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LENGTH))
    expires = now + timedelta(hours=hours)
    db.execute(
        "INSERT INTO enroll_codes (code_hash, chw, created_at, expires_at) VALUES (?, ?, ?, ?)",
        [_code_hash(raw), chw, stamp(now), stamp(expires)],
    )
    groups = (raw[i : i + CODE_GROUP_LENGTH] for i in range(0, len(raw), CODE_GROUP_LENGTH))
    return "-".join(groups), expires


def enroll(
    db: sqlite_utils.Database, code: str, public_key_b64: str, label: str, *, now: datetime
) -> tuple[Device, Catchment]:
    """Spend an enrolment code on a new device. Raises InvalidCode, CodeUsed, CodeExpired or
    BadPublicKey; nothing is written when it raises (the caller's transaction rolls back)."""
    key = _public_key(public_key_b64)
    row = db.execute(
        "SELECT chw, expires_at, used_at FROM enroll_codes WHERE code_hash = ?",
        [_code_hash(code)],
    ).fetchone()
    if row is None:
        raise InvalidCode("that enrolment code is not known here: check it, or ask for a new one")
    chw, expires_at, used_at = row
    if used_at is not None:
        raise CodeUsed("that enrolment code was already used; ask your supervisor for a new one")
    if stamp(now) >= expires_at:
        raise CodeExpired("that enrolment code has expired; ask your supervisor for a new one")
    device = Device(
        id=new_id(),
        chw=chw,
        state=ACTIVE,
        public_key=key,
        label=label.strip()[:100],
        enrolled_at=stamp(now),
        state_changed_at=stamp(now),
    )
    db.execute(
        "INSERT INTO devices (id, chw, public_key, label, state, enrolled_at, state_changed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [device.id, chw, key, device.label, ACTIVE, device.enrolled_at, device.enrolled_at],
    )
    db.execute(
        "UPDATE enroll_codes SET used_at = ?, device = ? WHERE code_hash = ?",
        [stamp(now), device.id, _code_hash(code)],
    )
    return device, catchments.catchment_of(db, chw)


def _code_hash(code: str) -> str:
    # A code carries 74 random bits (25^16), so a plain hash is enough: nobody can search them.
    normal = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def _public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise BadPublicKey("public_key must be the base64 of a raw 32-byte Ed25519 key") from None
    return raw


# -- signed requests ---------------------------------------------------------------------------


def signing_headers(headers: Mapping[str, str]) -> Signed:
    """Read the four signing headers. Raises Unsigned if one is missing or malformed."""
    values = {name: headers.get(name) for name in _SIGNING_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise Unsigned(f"the request is not signed: {', '.join(missing)} missing")
    device, time, nonce, signature = (str(values[name]).strip() for name in _SIGNING_HEADERS)
    if not _DEVICE_ID.fullmatch(device):
        raise Unsigned(f"{HEADER_DEVICE} is not a device ID")
    if not time.isdigit() or len(time) > 12:
        raise Unsigned(f"{HEADER_TIME} must be Unix seconds")
    if not _NONCE.fullmatch(nonce):
        raise Unsigned(f"{HEADER_NONCE} must be 8 to 128 letters, digits or ._~+/=-")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise Unsigned(f"{HEADER_SIGNATURE} is not base64") from None
    return Signed(device, int(time), nonce, raw_signature)


_SIGNING_HEADERS = (HEADER_DEVICE, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)


def verify(
    db: sqlite_utils.Database,
    signed: Signed,
    *,
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    skew_seconds: int,
) -> Device:
    """Check who signed the request and that it is fresh; writes nothing.

    Raises UnknownDevice, BadSignature, DeviceRevoked, DeviceRetired or ClockSkew, in that
    order: a revoked or retired tablet hears so even when its clock is wrong.
    """
    device = get_device(db, signed.device)
    message = signed_message(method, path, signed.time, signed.nonce, body)
    try:
        Ed25519PublicKey.from_public_bytes(device.public_key).verify(signed.signature, message)
    except InvalidSignature:
        raise BadSignature(
            "the request's signature does not match this device and request"
        ) from None
    refuse_if_finished(device)
    offset = signed.time - int(now.timestamp())
    if abs(offset) > skew_seconds:
        direction = "ahead of" if offset > 0 else "behind"
        raise ClockSkew(
            f"the tablet's clock is {abs(offset)} s {direction} the hub's; "
            "correct it with server_time and sync again"
        )
    return device


def refuse_if_finished(device: Device) -> None:
    if device.state == REVOKED:
        raise DeviceRevoked("this tablet was revoked: it must erase its data now")
    if device.state == RETIRED:
        raise DeviceRetired("this tablet was retired and may no longer sync")


def use_nonce(
    db: sqlite_utils.Database, signed: Signed, *, now: datetime, skew_seconds: int
) -> None:
    """Record the nonce inside the request's transaction. Raises Replayed if it was used.

    A nonce is kept while its request's time is inside the skew window; after that the time
    check refuses a replay anyway, so the device's older nonces are pruned here.
    """
    db.execute(
        "DELETE FROM nonces WHERE device = ? AND at < ?",
        [signed.device, int(now.timestamp()) - skew_seconds],
    )
    cursor = db.execute(
        "INSERT OR IGNORE INTO nonces (device, nonce, at) VALUES (?, ?, ?)",
        [signed.device, signed.nonce, signed.time],
    )
    if cursor.rowcount == 0:
        raise Replayed("this request was already received (its nonce was used before)")


# -- devices ------------------------------------------------------------------------------------


def get_device(db: sqlite_utils.Database, device_id: str) -> Device:
    row = db.execute(f"{_DEVICE_SQL} WHERE id = ?", [device_id]).fetchone()
    if row is None:
        raise UnknownDevice("this tablet is not enrolled with this hub; enrol it again")
    return _device(row)


def all_devices(db: sqlite_utils.Database) -> list[Device]:
    return [_device(r) for r in db.execute(f"{_DEVICE_SQL} ORDER BY chw, enrolled_at")]


def seen(db: sqlite_utils.Database, device_id: str, now: datetime, *, told: bool = False) -> None:
    """Record a contact; ``told``: the device heard in this answer that it is revoked or
    retired (so the supervisor can see the message was delivered)."""
    db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [stamp(now), device_id])
    if told:
        db.execute("UPDATE devices SET told_at = ? WHERE id = ?", [stamp(now), device_id])


def count_exchange(db: sqlite_utils.Database, device_id: str) -> int:
    """Count one more committed sync of the device; returns the count (it goes in the answer,
    so that a tablet can tell when this database went back in time, see SyncResponse)."""
    row = db.execute(
        "INSERT INTO exchanges (device, count) VALUES (?, 1) ON CONFLICT (device) "
        "DO UPDATE SET count = count + 1 RETURNING count",
        [device_id],
    ).fetchone()
    return int(row[0])


def set_state(db: sqlite_utils.Database, device_id: str, state: str, now: datetime) -> Device:
    """Move a device to ``state``. Raises UnknownDevice, or Refused for a move that makes no
    sense (a revoked tablet cannot retire; a retired one needs no revoking to stop)."""
    device = get_device(db, device_id)
    if device.state == state or (device.state == RETIRED and state == RETIRING):
        raise Refused(f"device {device_id} is already {device.state}")
    if device.state == REVOKED:
        raise Refused(f"device {device_id} is revoked; enrol the tablet again to use it")
    db.execute(
        "UPDATE devices SET state = ?, state_changed_at = ?, told_at = NULL WHERE id = ?",
        [state, stamp(now), device_id],
    )
    if state in (RETIRED, REVOKED):
        # It will not sync again: what it was offered and its recent nonces are of no use.
        db.execute("DELETE FROM offers WHERE device = ?", [device_id])
        db.execute("DELETE FROM nonces WHERE device = ?", [device_id])
    return get_device(db, device_id)


def stamp(moment: datetime) -> str:
    """How the hub writes times: ISO 8601 in UTC, to the second (sorts as it reads)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


_DEVICE_SQL = (
    "SELECT id, chw, state, public_key, label, enrolled_at, state_changed_at, last_seen, "
    "told_at FROM devices"
)


def _device(row: tuple[object, ...]) -> Device:
    id_, chw, state, key, label, enrolled, changed, last, told = row
    return Device(
        id=str(id_),
        chw=str(chw),
        state=str(state),
        public_key=bytes(key),  # type: ignore[call-overload]
        label=str(label),
        enrolled_at=str(enrolled),
        state_changed_at=str(changed),
        last_seen=None if last is None else str(last),
        told_at=None if told is None else str(told),
    )
