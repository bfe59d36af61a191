"""Every refusal class of a signed request: the right status and error code, the one JSON
error shape, and nothing written to the hub's database."""

from __future__ import annotations

import base64
import sqlite3
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from care_record.sync import SyncRequest, encode_frame
from care_record.sync.wire import MAGIC
from sync_hub import Settings

SKEW = 300


@pytest.fixture
def dump(settings: Settings) -> Callable[[], list[str]]:
    """Every row of every table, as SQL: equal before and after means nothing was written."""

    def read() -> list[str]:
        conn = sqlite3.connect(settings.db)
        try:
            return list(conn.iterdump())
        finally:
            conn.close()

    return read


@pytest.fixture
def loaded(tablet: Any) -> tuple[Any, bytes]:
    """A tablet that has synced once, and the body of its next request (one new chart)."""
    tablet.new_chart()
    tablet.sync()
    tablet.new_chart(given="Neema")
    return tablet, encode_frame(tablet.request())


def _refused(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error", "detail", "server_time", "command"}
    assert body["error"] == code
    assert body["detail"]
    datetime.fromisoformat(body["server_time"])
    return dict(body)


def test_unsigned_request(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    headers = tablet.headers(body)
    del headers["X-Signature"]
    body_json = _refused(tablet.post(body, headers), 401, "unsigned")
    assert "X-Signature" in body_json["detail"]
    assert dump() == before


def test_unknown_device(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    headers = tablet.headers(body)
    headers["X-Device"] = "01954f00-b000-7000-8000-000000000000"
    _refused(tablet.post(body, headers), 401, "unknown_device")
    assert dump() == before


def test_signature_by_another_key(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    impostor = Ed25519PrivateKey.generate()
    headers = tablet.headers(body)
    forged = impostor.sign(b"anything")
    headers["X-Signature"] = base64.b64encode(forged).decode()
    _refused(tablet.post(body, headers), 401, "bad_signature")
    assert dump() == before


def test_body_changed_after_signing(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    headers = tablet.headers(body)
    changed = encode_frame(SyncRequest(dropped=["01954f00-b000-7000-8000-000000000001"]))
    _refused(tablet.post(changed, headers), 401, "bad_signature")
    assert dump() == before


def test_signed_for_another_path(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    _refused(tablet.post(body, tablet.headers(body, path="/enroll")), 401, "bad_signature")
    assert dump() == before


@pytest.mark.parametrize("offset", [-(SKEW + 1), SKEW + 1])
def test_time_outside_the_skew_window(
    loaded: Any, dump: Callable[[], list[str]], offset: int
) -> None:
    tablet, body = loaded
    before = dump()
    now = int(tablet.clock.now().timestamp())
    answer = tablet.post(body, tablet.headers(body, time=now + offset))
    refusal = _refused(answer, 401, "clock_skew")
    # The hub's time lets the tablet correct its offset and try again.
    server = datetime.fromisoformat(refusal["server_time"])
    assert int(server.timestamp()) == now
    assert dump() == before
    fixed = tablet.post(body, tablet.headers(body, time=now - SKEW))
    assert fixed.status_code == 200


def test_replayed_nonce(loaded: Any, rows: Callable[[], dict[str, int]]) -> None:
    tablet, body = loaded
    headers = tablet.headers(body, nonce="the-same-nonce-twice")
    assert tablet.post(body, headers).status_code == 200
    after_first = rows()
    assert after_first["charts"] == 2
    _refused(tablet.post(body, headers), 409, "replayed")
    # The same nonce on a new signature is still a replay.
    again = tablet.headers(body, nonce="the-same-nonce-twice")
    _refused(tablet.post(body, again), 409, "replayed")
    assert rows() == after_first


def test_old_nonces_are_pruned_after_the_skew_window(loaded: Any, hub_db: Any) -> None:
    tablet, body = loaded
    assert tablet.post(body, tablet.headers(body)).status_code == 200
    tablet.clock.advance(timedelta(seconds=SKEW + 5))
    assert tablet.post(body, tablet.headers(body)).status_code == 200
    assert hub_db("SELECT count(*) FROM nonces WHERE device = ?", [tablet.device_id]) == [(1,)]


def test_wrong_media_type(loaded: Any, dump: Callable[[], list[str]]) -> None:
    tablet, body = loaded
    before = dump()
    headers = tablet.headers(body)
    headers["Content-Type"] = "application/json"
    _refused(tablet.post(body, headers), 415, "unsupported_media_type")
    assert dump() == before


def _bomb() -> bytes:
    return MAGIC + bytes([1]) + zlib.compress(b"\0" * (64 * 1024 * 1024 + 1), 9)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 2],
    "wrong magic": lambda good: b"XXXX" + good[4:],
    "unknown codec": lambda good: MAGIC + bytes([9]) + good[5:],
    "zlib bomb": lambda _good: _bomb(),
    "wrong types": lambda _good: (
        MAGIC + bytes([0]) + msgspec.msgpack.encode({"protocol": 1, "updates": "not a list"})
    ),
    "another protocol": lambda _good: MAGIC + bytes([0]) + msgspec.msgpack.encode({"protocol": 9}),
    "empty": lambda _good: b"",
}


@pytest.mark.parametrize("damage", sorted(MALFORMED))
def test_malformed_frames_are_refused_and_nothing_is_written(
    loaded: Any, dump: Callable[[], list[str]], damage: str
) -> None:
    tablet, good = loaded
    before = dump()
    body = MALFORMED[damage](good)
    headers = tablet.headers(body, nonce="nonce-of-the-bad-frame")
    _refused(tablet.post(body, headers), 400, "malformed_frame")
    assert dump() == before
    # The nonce was not spent either: the tablet's next, good request goes through.
    assert (
        tablet.post(good, tablet.headers(good, nonce="nonce-of-the-bad-frame")).status_code == 200
    )


def test_a_body_over_the_limit_is_refused(
    tablet: Any, dump: Callable[[], list[str]], settings: Settings
) -> None:
    before = dump()
    body = MAGIC + bytes([0]) + b"\0" * settings.max_body_bytes
    _refused(tablet.post(body, tablet.headers(body)), 413, "too_large")
    assert dump() == before


def test_unknown_paths_and_bad_enrolment_bodies_use_the_same_error_shape(client: Any) -> None:
    _refused(client.get("/nothing-here"), 404, "not_found")
    _refused(client.get("/sync"), 405, "method_not_allowed")
    missing = _refused(client.post("/enroll", json={"code": "ABCD"}), 400, "bad_request")
    assert "public_key" in missing["detail"]
    _refused(client.post("/enroll", content=b"not json"), 400, "bad_request")
