"""The sync wire format: frames round-trip, and every kind of bad input is a MalformedFrame.

A frame is ``b"RCS1"``, one codec byte (0 raw, 1 zlib, 2 raw LZMA2) and a msgpack message.
Each test for a bad input builds the bytes a damaged link, an old app or a hostile client would
send, and checks that decoding refuses them with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import lzma
import zlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from care_record.sync import (
    PROTOCOL,
    DocHeads,
    DocNotice,
    DocSnapshot,
    DocSync,
    DocUpdate,
    MalformedFrame,
    SyncRequest,
    SyncResponse,
    decode_frame,
    encode_frame,
)
from care_record.sync.wire import (
    _LZMA_FILTERS,
    COMPRESS_ABOVE,
    LZMA,
    MAGIC,
    MAX_FRAME_BYTES,
    RAW,
    ZLIB,
)

DOC = "01950000-0000-7000-8000-000000000001"
HEAD = hashlib.sha256(b"head").digest()
CODECS = [RAW, ZLIB, LZMA]
COMPRESSED = [ZLIB, LZMA]

Message = SyncRequest | SyncResponse


def payload_of(body: Any) -> bytes:
    return msgspec.msgpack.encode(body)


def framed(codec: int, payload: bytes) -> bytes:
    """``payload`` in a frame with ``codec``, compressed as a sender would."""
    if codec == ZLIB:
        payload = zlib.compress(payload)
    elif codec == LZMA:
        payload = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return MAGIC + bytes([codec]) + payload


def raw_frame(body: Any) -> bytes:
    """A frame holding ``body`` encoded as msgpack as it is, uncompressed."""
    return framed(RAW, payload_of(body))


def codec_of(frame: bytes) -> int:
    return frame[len(MAGIC)]


def a_request() -> SyncRequest:
    return SyncRequest(
        updates=[
            DocUpdate(DOC, "patient", [b"change-1", b"change-2"], [HEAD]),
            DocUpdate(DOC, "household", [b"change-3"]),
        ],
        syncs=[DocSync(DOC, "household", [b"message"])],
        acks=[DocHeads(DOC, [HEAD, HEAD[::-1]])],
        dropped=[DOC],
        max_snapshot_bytes=4096,
    )


def a_response() -> SyncResponse:
    return SyncResponse(
        applied=[0, 2],
        updates=[DocUpdate(DOC, "patient", [b"c" * 400], [HEAD])],
        snapshots=[DocSnapshot(DOC, "patient", b"saved" * 100, [HEAD])],
        syncs=[DocSync(DOC, "patient", [b"m1", b"m2"])],
        resync=[DOC],
        quarantined=[DocNotice(DOC, "quarantined", "changes that cannot be read")],
        dropped=[DocNotice(DOC, "reassigned", "moved to another health worker")],
        remaining=12,
        command="erase",
        server_time="2025-03-01T08:30:00+00:00",
    )


def request_of_size(size: int) -> SyncRequest:
    """A request whose msgpack encoding is exactly ``size`` bytes (a highly compressible one)."""
    request = SyncRequest(dropped=[""])
    while (short := size - len(payload_of(request))) != 0:
        # A longer string may need a longer length prefix: adjust until it fits exactly.
        request.dropped = ["x" * (len(request.dropped[0]) + short)]
    return request


def refused(frame: bytes, kind: type[Message] = SyncRequest, **limit: int) -> str:
    """Decode a frame that must be refused; the message it was refused with."""
    with pytest.raises(MalformedFrame) as caught:
        decode_frame(frame, kind, **limit)
    return str(caught.value)


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_every_field_of_a_request_survives_the_round_trip(codec: int) -> None:
    request = a_request()
    assert decode_frame(encode_frame(request, codec=codec), SyncRequest) == request


@pytest.mark.parametrize("codec", CODECS)
def test_every_field_of_a_response_survives_the_round_trip(codec: int) -> None:
    response = a_response()
    assert decode_frame(encode_frame(response, codec=codec), SyncResponse) == response


def test_empty_messages_survive_the_round_trip() -> None:
    assert decode_frame(encode_frame(SyncRequest()), SyncRequest) == SyncRequest()
    assert decode_frame(encode_frame(SyncResponse()), SyncResponse) == SyncResponse()


ids = st.text(min_size=1, max_size=40)
kinds = st.sampled_from(["patient", "household"])
heads = st.lists(st.binary(min_size=32, max_size=32), max_size=3)
blobs = st.lists(st.binary(max_size=600), max_size=4)
updates = st.builds(DocUpdate, ids, kinds, blobs, heads)
notices = st.builds(DocNotice, ids, st.text(max_size=20), st.text(max_size=200))
requests = st.builds(
    SyncRequest,
    updates=st.lists(updates, max_size=3),
    syncs=st.lists(st.builds(DocSync, ids, kinds, blobs), max_size=3),
    acks=st.lists(st.builds(DocHeads, ids, heads), max_size=3),
    dropped=st.lists(ids, max_size=3),
    max_snapshot_bytes=st.integers(0, 2**40),
)
responses = st.builds(
    SyncResponse,
    applied=st.lists(st.integers(0, 10_000), max_size=5),
    updates=st.lists(updates, max_size=3),
    snapshots=st.lists(st.builds(DocSnapshot, ids, kinds, st.binary(max_size=2000), heads)),
    resync=st.lists(ids, max_size=3),
    quarantined=st.lists(notices, max_size=2),
    dropped=st.lists(notices, max_size=2),
    remaining=st.integers(0, 10**6),
    command=st.sampled_from([None, "erase", "retired"]),
    server_time=st.text(max_size=40),
)


@settings(max_examples=100, deadline=None)
@given(request=requests, response=responses, codec=st.sampled_from(CODECS))
def test_any_message_survives_the_round_trip(
    request: SyncRequest, response: SyncResponse, codec: int
) -> None:
    assert decode_frame(encode_frame(request, codec=codec), SyncRequest) == request
    assert decode_frame(encode_frame(response, codec=codec), SyncResponse) == response


# -- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_a_frame_under_the_threshold_is_sent_raw(codec: int) -> None:
    request = request_of_size(COMPRESS_ABOVE - 1)
    frame = encode_frame(request, codec=codec)
    assert frame == MAGIC + bytes([RAW]) + payload_of(request)
    assert decode_frame(frame, SyncRequest) == request


def test_a_frame_at_or_over_the_threshold_is_compressed_with_lzma_by_default() -> None:
    for size in (COMPRESS_ABOVE, 10 * COMPRESS_ABOVE, 100_000):
        request = request_of_size(size)
        frame = encode_frame(request)
        assert codec_of(frame) == LZMA
        assert frame == framed(LZMA, payload_of(request))
        assert decode_frame(frame, SyncRequest) == request
    assert len(encode_frame(request_of_size(100_000))) < 1000


@pytest.mark.parametrize("codec", COMPRESSED)
def test_a_sender_may_choose_another_codec(codec: int) -> None:
    request = request_of_size(5000)
    frame = encode_frame(request, codec=codec)
    assert codec_of(frame) == codec
    assert len(frame) < 500
    assert decode_frame(frame, SyncRequest) == request


def test_a_sender_may_send_a_large_frame_raw() -> None:
    request = request_of_size(5000)
    frame = encode_frame(request, codec=RAW)
    assert frame == MAGIC + bytes([RAW]) + payload_of(request)
    assert decode_frame(frame, SyncRequest) == request


@pytest.mark.parametrize("codec", COMPRESSED)
def test_a_small_message_in_a_compressed_frame_is_still_read(codec: int) -> None:
    # Senders compress only from 256 bytes, but a receiver takes any codec for any size.
    assert decode_frame(framed(codec, payload_of({"protocol": 1})), SyncRequest) == SyncRequest()


# -- bad input: the frame -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"R",
        b"RCS",
        b"RCS1",
        b"RCSx\x00\x80",
        b"rcs1\x00\x80",
        b"\x00RCS1\x00\x80",
        b'{"protocol": 1}',
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_bytes_without_the_magic_are_not_a_frame(frame: bytes) -> None:
    assert refused(frame) == ("not a sync frame (wrong start): update the app or check the address")


@pytest.mark.parametrize("codec", [3, 4, 0x78, 0xFD, 255])
def test_an_unknown_codec_is_named(codec: int) -> None:
    frame = MAGIC + bytes([codec]) + payload_of({"protocol": 1})
    assert refused(frame) == f"unknown compression {codec} in a sync frame"


CUT_MESSAGES = {
    "request": a_request(),
    "empty request": SyncRequest(),
    "large request": request_of_size(3000),
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", sorted(CUT_MESSAGES))
def test_a_request_cut_at_any_byte_is_refused(name: str, codec: int) -> None:
    frame = encode_frame(CUT_MESSAGES[name], codec=codec)
    for end in range(len(frame)):
        text = refused(frame[:end])
        assert text.startswith(
            ("not a sync frame", "sync frame cut short", "damaged sync frame")
        ), (
            end,
            text,
        )


@pytest.mark.parametrize("codec", CODECS)
def test_a_response_cut_at_any_byte_is_refused(codec: int) -> None:
    frame = encode_frame(a_response(), codec=codec)
    for end in range(len(frame)):
        with pytest.raises(MalformedFrame):
            decode_frame(frame[:end], SyncResponse)


def test_a_compressed_frame_cut_short_says_so() -> None:
    lzma_frame = encode_frame(request_of_size(5000), codec=LZMA)
    assert refused(lzma_frame[:-3]) == "sync frame cut short"
    zlib_frame = encode_frame(request_of_size(5000), codec=ZLIB)
    assert refused(zlib_frame[:-3]) == "sync frame cut short or followed by junk"


@pytest.mark.parametrize("codec", COMPRESSED)
def test_a_frame_that_inflates_past_the_limit_is_refused(codec: int) -> None:
    bomb = framed(codec, b"\x00" * 20_000_000)  # 20 MB of zeros in a few kB
    assert len(bomb) < 50_000
    assert refused(bomb, limit=1_000_000) == "sync frame too large"


@pytest.mark.parametrize("codec", COMPRESSED)
def test_the_default_limit_refuses_a_frame_that_inflates_past_64_mib(codec: int) -> None:
    bomb = framed(codec, b"\x00" * (MAX_FRAME_BYTES + 1))
    assert refused(bomb) == "sync frame too large"


@pytest.mark.parametrize("codec", CODECS)
def test_a_frame_exactly_at_the_limit_is_taken(codec: int) -> None:
    request = request_of_size(5000)
    frame = encode_frame(request, codec=codec)
    assert refused(frame, limit=4999) == "sync frame too large"
    assert decode_frame(frame, SyncRequest, limit=5000) == request


@pytest.mark.parametrize("junk", [b"\x00", b"junk", b"RCS1\x00\x80"])
def test_bytes_after_the_compressed_stream_are_refused(junk: bytes) -> None:
    lzma_frame = encode_frame(request_of_size(5000), codec=LZMA)
    assert refused(lzma_frame + junk) == "sync frame followed by junk"
    zlib_frame = encode_frame(request_of_size(5000), codec=ZLIB)
    assert refused(zlib_frame + junk) == "sync frame cut short or followed by junk"


def test_bytes_after_a_raw_message_are_refused() -> None:
    frame = encode_frame(SyncRequest(), codec=RAW)
    assert refused(frame + b"\x00").startswith("damaged sync frame: ")


@pytest.mark.parametrize("codec", COMPRESSED)
def test_damaged_compressed_bytes_are_refused(codec: int) -> None:
    frame = bytearray(encode_frame(request_of_size(5000), codec=codec))
    frame[len(MAGIC) + 1] ^= 0xFF
    assert refused(bytes(frame)).startswith(("damaged sync frame", "sync frame cut short"))


@pytest.mark.parametrize("codec", COMPRESSED)
def test_a_compressed_stream_of_another_format_is_refused(codec: int) -> None:
    # zlib bytes under the LZMA codec, and LZMA bytes under the zlib codec.
    other = LZMA if codec == ZLIB else ZLIB
    body = framed(other, payload_of({"protocol": 1, "dropped": ["x" * 500]}))[len(MAGIC) + 1 :]
    assert refused(MAGIC + bytes([codec]) + body) == "damaged sync frame (compression)"


# -- bad input: the message ---------------------------------------------------------------------

GOOD_UPDATE = {"doc": DOC, "kind": "patient", "changes": [b"c"], "heads": [HEAD]}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"protocol": "1"}, "$.protocol"),
        ({"protocol": None}, "$.protocol"),
        ({"protocol": 1, "updates": "none"}, "$.updates"),
        ({"protocol": 1, "updates": [{**GOOD_UPDATE, "doc": 7}]}, "$.updates[0].doc"),
        ({"protocol": 1, "updates": [{**GOOD_UPDATE, "changes": ["text"]}]}, "changes[0]"),
        ({"protocol": 1, "updates": [{**GOOD_UPDATE, "heads": b"x" * 32}]}, "heads"),
        ({"protocol": 1, "updates": [[DOC, "patient", [b"c"]]]}, "$.updates[0]"),
        ({"protocol": 1, "acks": [{"doc": DOC, "heads": [1, 2]}]}, "$.acks[0].heads[0]"),
        ({"protocol": 1, "syncs": [{"doc": DOC, "kind": "patient", "messages": b""}]}, "messages"),
        ({"protocol": 1, "dropped": [None]}, "$.dropped[0]"),
        ({"protocol": 1, "max_snapshot_bytes": "1MB"}, "$.max_snapshot_bytes"),
        ([1, [], [], [], [], 1000], "Expected `object`"),
        ("a string", "Expected `object`"),
        (None, "Expected `object`"),
    ],
)
def test_a_request_field_of_the_wrong_type_is_named(body: Any, where: str) -> None:
    text = refused(raw_frame(body))
    assert text.startswith("damaged sync frame: ")
    assert where in text


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"protocol": 1, "applied": ["0"]}, "$.applied[0]"),
        ({"protocol": 1, "remaining": "many"}, "$.remaining"),
        ({"protocol": 1, "command": 1}, "$.command"),
        ({"protocol": 1, "snapshots": [{"doc": DOC, "kind": "patient", "data": "x"}]}, "data"),
        ({"protocol": 1, "resync": DOC}, "$.resync"),
    ],
)
def test_a_response_field_of_the_wrong_type_is_named(body: Any, where: str) -> None:
    text = refused(raw_frame(body), SyncResponse)
    assert text.startswith("damaged sync frame: ")
    assert where in text


@pytest.mark.parametrize("missing", ["doc", "kind", "changes"])
def test_a_missing_required_field_is_named(missing: str) -> None:
    update = {k: v for k, v in GOOD_UPDATE.items() if k != missing}
    text = refused(raw_frame({"protocol": 1, "updates": [update]}))
    assert text.startswith("damaged sync frame: ")
    assert f"missing required field `{missing}`" in text


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"quarantined": [{"doc": DOC, "code": "quarantined"}]}, "detail"),
        ({"snapshots": [{"doc": DOC, "kind": "patient", "heads": []}]}, "data"),
        ({"syncs": [{"doc": DOC, "messages": []}]}, "kind"),
    ],
)
def test_a_missing_field_of_a_response_is_named(body: dict[str, Any], missing: str) -> None:
    text = refused(raw_frame({"protocol": 1, **body}), SyncResponse)
    assert f"missing required field `{missing}`" in text


def test_an_update_without_heads_means_the_hash_of_its_last_change() -> None:
    update = {k: v for k, v in GOOD_UPDATE.items() if k != "heads"}
    request = decode_frame(raw_frame({"protocol": 1, "updates": [update]}), SyncRequest)
    assert request.updates == [DocUpdate(DOC, "patient", [b"c"], [])]


@pytest.mark.parametrize("protocol", [0, 2, 99, -1])
@pytest.mark.parametrize("codec", CODECS)
def test_another_protocol_number_is_refused(protocol: int, codec: int) -> None:
    payload = payload_of({"protocol": protocol, "padding": "x" * 300})
    for kind in (SyncRequest, SyncResponse):
        text = refused(framed(codec, payload), kind)
        assert text == f"sync protocol {protocol} is not supported (this side speaks {PROTOCOL})"


def test_unknown_fields_are_ignored_so_a_newer_peer_can_add_some() -> None:
    body = {
        "protocol": 1,
        "priority": "high",
        "updates": [{**GOOD_UPDATE, "signature": b"sig", "compressed": True}],
        "acks": [{"doc": DOC, "heads": [HEAD], "at": "2025-03-01"}],
        "hints": {"battery": 12, "nested": [1, [2, {"3": None}]]},
    }
    request = decode_frame(raw_frame(body), SyncRequest)
    assert request.updates == [DocUpdate(DOC, "patient", [b"c"], [HEAD])]
    assert request.acks == [DocHeads(DOC, [HEAD])]
    response_body = {"protocol": 1, "remaining": 3, "next_page": "abc", "applied": [0]}
    response = decode_frame(raw_frame(response_body), SyncResponse)
    assert (response.remaining, response.applied) == (3, [0])


def test_a_frame_of_another_protocol_version_says_so() -> None:
    with pytest.raises(MalformedFrame, match="version 2 is not supported"):
        decode_frame(b"RCS2\x00anything", SyncRequest)
